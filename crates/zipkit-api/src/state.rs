//! What every request handler can reach.

use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::{DbError, PgPool, PooledConn};
use zipkit_runtime::broker::Broker;

use crate::error::ApiError;
use crate::publisher::JobPublisher;
use crate::zips::request::Limits;

#[derive(Debug)]
pub struct AppState {
    pub pool: PgPool,
    pub broker: Broker,
    pub keyring: KeyRing,
    pub publisher: JobPublisher,
    pub limits: Limits,
    /// Dashboard cookies are `Secure`.
    pub secure_cookies: bool,
    /// Webhook endpoints may use `http://` (development only).
    pub allow_http_webhooks: bool,
    /// Where customer-supplied addresses may point (webhook URLs; bucket endpoints through
    /// `buckets`).
    pub egress: zipkit_egress::EgressPolicy,
    /// Clients for customers' buckets (the write test), under the same policy.
    pub buckets: zipkit_storage::BucketClients,
    pub rate_limits: crate::rate_limit::RateLimits,
    /// The threads sign-ins are verified on (bounded: memory, not strangers, sets the limit).
    pub passwords: crate::admin::passwords::PasswordPool,
    /// Set on SIGTERM: `/readyz` answers 503 while the API drains (`api.drain_delay_secs`).
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Answers `dry_run` requests.
    pub dry_runs: crate::zips::dry_run::DryRunner,
    /// `/v1/openapi.json`, made once at start (`routes::openapi::served`).
    pub openapi: serde_json::Value,
}

impl AppState {
    /// A pooled connection; PostgreSQL being away is a 503, not a 500.
    pub async fn conn(&self) -> Result<PooledConn<'_>, ApiError> {
        self.pool.get().await.map_err(|e| DbError::from(e).into())
    }
}
