//! The settings the API process reads (see docs/CONFIGURATION.md).

use serde::Deserialize;
use zipkit_domain::crypto::CryptoSettings;
use zipkit_domain::db::DatabaseSettings;
use zipkit_runtime::broker::BrokerSettings;
use zipkit_runtime::telemetry::TelemetrySettings;

/// `[api]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Time from a request's headers to the last byte of its body.
    pub body_timeout_secs: u64,
    /// Bytes all request bodies being read at once may hold between them.
    pub max_body_bytes_in_flight: usize,
    /// Open client connections at most (beyond, new ones wait in the listen backlog).
    pub max_connections: usize,
    /// Most sources one zip job may list.
    pub max_urls: usize,
    /// Most lines a job's manifest may give.
    pub max_manifest_entries: u32,
    /// How long a finished archive's presigned download link lives, unless the job asks.
    pub download_url_ttl_secs: u32,
    /// The longest lifetime a job may ask for its download link.
    pub max_download_url_ttl_secs: u32,
    /// A job whose message the broker has not confirmed after this long is republished.
    pub republish_after_secs: u64,
    /// Dashboard cookies carry `Secure` (HTTPS only); off only for local development over http.
    pub secure_cookies: bool,
    /// On SIGTERM, how long the API keeps serving (answering `/readyz` with 503) before it
    /// closes its listener: the time a load balancer or Kubernetes needs to stop sending to it.
    pub drain_delay_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub api: ApiSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub crypto: CryptoSettings,
    pub telemetry: TelemetrySettings,
    pub webhooks: zipkit_domain::webhooks::WebhookSettings,
    /// What customer-supplied addresses (bucket endpoints, webhook URLs) may be.
    pub egress: zipkit_egress::EgressSettings,
    pub rate_limits: crate::rate_limit::RateLimitSettings,
    pub passwords: crate::admin::passwords::PasswordSettings,
    /// What the API reads of `[worker]` to answer dry runs as a worker would build the job.
    pub worker: crate::zips::dry_run::WorkerPlanSettings,
}

/// The longest a SigV4 presigned URL may live: 7 days.
pub const MAX_PRESIGNED_SECS: u32 = 7 * 24 * 3600;

/// `Err` naming `section.key` when `value` is 0.
fn at_least_one(key: &str, value: u64) -> Result<(), String> {
    if value == 0 {
        Err(format!("{key} must be at least 1 (it is 0)"))
    } else {
        Ok(())
    }
}

impl ApiSettings {
    /// Checks the keys whose zero would mean nothing sensible, once at start; nothing
    /// downstream clamps them again.
    pub fn validate(&self) -> Result<(), String> {
        at_least_one("api.max_body_bytes", self.max_body_bytes as u64)?;
        at_least_one("api.body_timeout_secs", self.body_timeout_secs)?;
        at_least_one(
            "api.max_body_bytes_in_flight",
            self.max_body_bytes_in_flight as u64,
        )?;
        at_least_one("api.max_connections", self.max_connections as u64)?;
        at_least_one("api.max_urls", self.max_urls as u64)?;
        at_least_one("api.max_manifest_entries", self.max_manifest_entries.into())?;
        at_least_one("api.republish_after_secs", self.republish_after_secs)?;
        at_least_one(
            "api.download_url_ttl_secs",
            self.download_url_ttl_secs.into(),
        )?;
        if self.max_download_url_ttl_secs > MAX_PRESIGNED_SECS {
            return Err(format!(
                "api.max_download_url_ttl_secs must be at most {MAX_PRESIGNED_SECS} (7 days, the \
                 longest a SigV4 presigned URL lives; it is {})",
                self.max_download_url_ttl_secs
            ));
        }
        if self.download_url_ttl_secs > self.max_download_url_ttl_secs {
            return Err(format!(
                "api.download_url_ttl_secs ({}) must not exceed api.max_download_url_ttl_secs ({})",
                self.download_url_ttl_secs, self.max_download_url_ttl_secs
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// Every section the API reads, checked once at start.
    pub fn validate(&self) -> Result<(), String> {
        self.api.validate()?;
        self.rate_limits.validate()?;
        self.passwords.validate()?;
        self.worker.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_that_means_nothing_is_refused_by_name() {
        let mut api = ApiSettings {
            host: "127.0.0.1".into(),
            port: 0,
            max_body_bytes: 1,
            body_timeout_secs: 1,
            max_body_bytes_in_flight: 1,
            max_connections: 1,
            max_urls: 1,
            max_manifest_entries: 1,
            download_url_ttl_secs: 60,
            max_download_url_ttl_secs: 60,
            republish_after_secs: 1,
            secure_cookies: true,
            drain_delay_secs: 0,
        };
        assert_eq!(api.validate(), Ok(()));
        api.body_timeout_secs = 0;
        assert_eq!(
            api.validate(),
            Err("api.body_timeout_secs must be at least 1 (it is 0)".to_owned())
        );
        api.body_timeout_secs = 1;
        api.download_url_ttl_secs = 61;
        assert!(
            api.validate()
                .is_err_and(|e| e.starts_with("api.download_url_ttl_secs (61)"))
        );
        api.max_download_url_ttl_secs = MAX_PRESIGNED_SECS + 1;
        assert!(
            api.validate()
                .is_err_and(|e| e.starts_with("api.max_download_url_ttl_secs"))
        );
    }
}
