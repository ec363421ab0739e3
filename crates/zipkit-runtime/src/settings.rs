//! Layered settings with the `config` crate: compiled-in defaults, then `config/<ZIPKIT_ENV>.toml`
//! (optional), then the file named by `ZIPKIT_CONFIG_FILE` (required when set), then
//! `ZIPKIT__SECTION__KEY` environment variables. Each binary deserializes the sections it uses.

use std::path::PathBuf;

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

const DEFAULTS: &str = include_str!("../../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Key { key: String, message: String },
}

/// Where settings come from; `from_env` reads the process environment.
#[derive(Debug, Clone)]
pub struct SettingsSources {
    pub environment: String,
    pub config_dir: PathBuf,
    pub config_file: Option<PathBuf>,
    /// `ZIPKIT__…` variables as (name, value) pairs.
    pub variables: Vec<(String, String)>,
}

impl SettingsSources {
    pub fn from_env() -> Self {
        Self {
            environment: std::env::var("ZIPKIT_ENV").unwrap_or_else(|_| "development".into()),
            config_dir: std::env::var_os("ZIPKIT_CONFIG_DIR")
                .map_or_else(|| "config".into(), PathBuf::from),
            config_file: std::env::var_os("ZIPKIT_CONFIG_FILE").map(PathBuf::from),
            variables: std::env::vars()
                .filter(|(k, _)| k.starts_with("ZIPKIT__"))
                .collect(),
        }
    }
}

/// Loads settings of type `T`; a missing or malformed key fails naming the key.
pub fn load<T: DeserializeOwned>(sources: &SettingsSources) -> Result<T, SettingsError> {
    let mut builder = Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .add_source(
            File::from(
                sources
                    .config_dir
                    .join(format!("{}.toml", sources.environment)),
            )
            .required(false),
        );
    if let Some(file) = &sources.config_file {
        builder = builder.add_source(File::from(file.clone()).required(true));
    }
    let variables = sources.variables.iter().cloned().collect();
    let config = builder
        .add_source(
            Environment::with_prefix("ZIPKIT")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                // Lists from one variable: ZIPKIT__EGRESS__ALLOWED_NETWORKS=10.0.0.0/8,fd00::/8
                .list_separator(",")
                .with_list_parse_key("egress.allowed_networks")
                .with_list_parse_key("egress.allowed_hosts")
                .with_list_parse_key("rate_limits.trusted_proxies")
                .source(Some(variables)),
        )
        .build()?;
    // The path-tracking deserializer names the exact key (`database.url`) on any failure.
    serde_path_to_error::deserialize(config).map_err(|err| {
        let key = err.path().to_string();
        let message = err.inner().to_string();
        if key == "." {
            // A missing top-level section: the message names it already.
            SettingsError::Load(config::ConfigError::Message(message))
        } else {
            SettingsError::Key { key, message }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret, SecretString};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Probe {
        database: Database,
        api: Api,
    }

    #[derive(Debug, Deserialize)]
    struct Database {
        url: SecretString,
        max_connections: u32,
    }

    #[derive(Debug, Deserialize)]
    struct Api {
        port: u16,
    }

    fn sources(vars: &[(&str, &str)]) -> SettingsSources {
        SettingsSources {
            environment: "test-none".into(),
            config_dir: "does-not-exist".into(),
            config_file: None,
            variables: vars
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn environment_variables_override_the_defaults() {
        let probe: Probe = load(&sources(&[
            ("ZIPKIT__DATABASE__URL", "postgres://x@127.0.0.1/db"),
            ("ZIPKIT__API__PORT", "9999"),
        ]))
        .unwrap();
        assert_eq!(probe.api.port, 9999);
        assert_eq!(probe.database.max_connections, 10);
        assert_eq!(
            probe.database.url.expose_secret(),
            "postgres://x@127.0.0.1/db"
        );
    }

    #[derive(Debug, Deserialize)]
    struct EgressProbe {
        egress: Egress,
    }

    #[derive(Debug, Deserialize)]
    struct Egress {
        allowed_networks: Vec<String>,
        allowed_hosts: Vec<String>,
    }

    #[test]
    fn egress_lists_come_from_one_comma_separated_variable() {
        let probe: EgressProbe = load(&sources(&[
            ("ZIPKIT__EGRESS__ALLOWED_NETWORKS", "10.20.0.0/16,fd12::/16"),
            ("ZIPKIT__EGRESS__ALLOWED_HOSTS", "minio.internal"),
        ]))
        .unwrap();
        assert_eq!(probe.egress.allowed_networks, ["10.20.0.0/16", "fd12::/16"]);
        assert_eq!(probe.egress.allowed_hosts, ["minio.internal"]);
        // Other values with commas stay strings.
        let probe: Probe = load(&sources(&[(
            "ZIPKIT__DATABASE__URL",
            "postgres://x@a,b/db",
        )]))
        .unwrap();
        assert_eq!(probe.database.url.expose_secret(), "postgres://x@a,b/db");
    }

    #[test]
    fn a_missing_key_fails_naming_it() {
        let err = load::<Probe>(&sources(&[])).unwrap_err().to_string();
        assert!(err.contains("database"), "{err}");
        assert!(err.contains("url"), "{err}");
    }

    #[test]
    fn a_malformed_key_fails_naming_it() {
        let err = load::<Probe>(&sources(&[
            ("ZIPKIT__DATABASE__URL", "postgres://x@127.0.0.1/db"),
            ("ZIPKIT__API__PORT", "eighty"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("api.port"), "{err}");
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let mut s = sources(&[]);
        s.config_file = Some("/nonexistent/zipkit.toml".into());
        let err = load::<Probe>(&s).unwrap_err().to_string();
        assert!(err.contains("zipkit.toml"), "{err}");
    }

    #[test]
    fn the_development_file_completes_the_defaults() {
        let s = SettingsSources {
            environment: "development".into(),
            config_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../../config").into(),
            config_file: None,
            variables: vec![],
        };
        let probe: Probe = load(&s).unwrap();
        assert!(
            probe
                .database
                .url
                .expose_secret()
                .starts_with("postgres://")
        );
    }
}
