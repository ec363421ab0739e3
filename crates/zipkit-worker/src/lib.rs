//! zipkit's worker. `Worker::build` wires settings into a running worker that tests can start
//! in-process. Consuming, downloading, zipping and uploading arrive with the worker issue; for
//! now it holds its connections and declares the broker topology.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use zipkit_domain::crypto::{CryptoSettings, KeyRing};
use zipkit_domain::db::{DatabaseSettings, PgPool};
use zipkit_runtime::broker::{Broker, BrokerSettings};
use zipkit_runtime::telemetry::TelemetrySettings;

/// `[worker]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs processed at once (and the broker prefetch).
    pub concurrency: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub worker: WorkerSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub crypto: CryptoSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug)]
pub struct Worker {
    pool: PgPool,
    broker: Broker,
    #[allow(
        dead_code,
        reason = "opened bucket credentials are needed by the upload stage"
    )]
    keyring: KeyRing,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    KeyRing(#[from] zipkit_domain::crypto::KeyRingError),
}

impl Worker {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let keyring = KeyRing::from_settings(&settings.crypto)?;
        let pool = zipkit_domain::db::pool(&settings.database);
        let broker = Broker::start(settings.broker);
        Ok(Self {
            pool,
            broker,
            keyring,
        })
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Whether PostgreSQL answers and the broker is connected.
    pub async fn is_ready(&self) -> bool {
        let database =
            tokio::time::timeout(Duration::from_secs(2), zipkit_domain::db::ping(&self.pool))
                .await
                .is_ok_and(|r| r.is_ok());
        database && self.broker.is_connected()
    }

    /// Runs until `stop` resolves, then closes its connections.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        let ready = async {
            while !self.is_ready().await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tracing::info!(queue = %self.broker.topology().jobs, "zipkit-worker ready");
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = stop => {}
            () = ready => {}
        }
        self.broker.close().await;
        tracing::info!("zipkit-worker stopped");
    }
}
