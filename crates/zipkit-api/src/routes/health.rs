//! Liveness (`/healthz`: the process serves HTTP) and readiness (`/readyz`: it can do its job,
//! i.e. PostgreSQL answers and the broker is connected). Kubernetes probes use both.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::AppState;

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    checks: Checks,
}

#[derive(Debug, Serialize)]
struct Checks {
    database: &'static str,
    broker: &'static str,
}

const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database =
        match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, zipkit_domain::db::ping(&state.pool))
            .await
        {
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
    let broker = if state.broker.is_connected() {
        "ok"
    } else {
        "down"
    };
    let ready = database == "ok" && broker == "ok";
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: Checks { database, broker },
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
