//! Readiness as both binaries report it on `/readyz`: ready when PostgreSQL answers within two
//! seconds and, for a worker, the broker connection is up; each check named, so an operator sees
//! which is down. The API reports the broker without depending on it: its outbox keeps accepted
//! jobs until the broker is back, so a broker outage must not take every API pod out of service.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::broker::Broker;

#[derive(Debug, Serialize)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    pub checks: Checks,
}

#[derive(Debug, Serialize)]
pub struct Checks {
    /// `ok` or `down`.
    pub database: &'static str,
    pub broker: &'static str,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

/// Whether readiness waits for the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerNeed {
    /// Not ready without it (a worker: it has nothing to do).
    Required,
    /// Reported, not required (the API: the outbox holds jobs).
    Reported,
}

const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the checks; `database_ping` is the caller's query against its pool.
pub async fn check<E: std::fmt::Display>(
    database_ping: impl Future<Output = Result<(), E>>,
    broker: &Broker,
    need: BrokerNeed,
) -> Readiness {
    let database = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, database_ping).await {
        Ok(Ok(())) => "ok",
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database check failed");
            "down"
        }
        Err(_) => {
            tracing::warn!("readiness: database check timed out");
            "down"
        }
    };
    let broker = if broker.is_connected() { "ok" } else { "down" };
    let ready = database == "ok" && (broker == "ok" || need == BrokerNeed::Reported);
    Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: Checks { database, broker },
    }
}
