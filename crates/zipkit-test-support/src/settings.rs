//! Settings for in-process tests, built as the binaries build theirs
//! (`zipkit_runtime::settings::load`): the shipped `config/default.toml` and
//! `config/development.toml`, then the test's own services and adjustments as
//! `ZIPKIT__SECTION__KEY` values. A key the shipped files lack, or a value they would refuse,
//! fails the test as it would fail a deployment.

use std::path::Path;

use serde::de::DeserializeOwned;
use zipkit_runtime::settings::{SettingsSources, load};

/// The shipped files plus what the test sets.
#[derive(Debug, Clone, Default)]
pub struct TestSettings {
    variables: Vec<(String, String)>,
}

impl TestSettings {
    pub fn new() -> Self {
        Self::default()
    }

    /// An in-process binary's settings on a test's own database and vhost: a small pool,
    /// reconnects and webhook retries quick enough for tests, warnings only in the log.
    pub fn on(database_url: &str, broker_url: &str, connection_name: &str) -> Self {
        Self::new()
            .set("database.url", database_url)
            .set("database.max_connections", 4)
            .set("database.connect_timeout_secs", 2)
            .set("broker.url", broker_url)
            .set("broker.connection_name", connection_name)
            .set("broker.reconnect_max_secs", 1)
            .set("telemetry.filter", "warn")
            .set("webhooks.timeout_secs", 5)
            .set("webhooks.first_retry_secs", 1)
            .set("webhooks.retry_for_secs", 60)
    }

    /// Sets `section.key` (`"api.port"`), as `ZIPKIT__API__PORT` would; lists are
    /// comma-separated.
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        let name = format!("ZIPKIT__{}", key.replace('.', "__").to_uppercase());
        self.variables.push((name, value.to_string()));
        self
    }

    /// Reads the settings of one binary (`zipkit_api::Settings`, `zipkit_worker::Settings`).
    pub fn load<T: DeserializeOwned>(&self) -> T {
        let sources = SettingsSources {
            environment: "development".into(),
            config_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config"),
            config_file: None,
            variables: self.variables.clone(),
        };
        load(&sources).unwrap_or_else(|e| panic!("test settings: {e}"))
    }
}
