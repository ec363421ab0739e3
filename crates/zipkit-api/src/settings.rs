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
