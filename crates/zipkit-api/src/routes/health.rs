//! Liveness (`/healthz`: the process serves HTTP) and readiness (`/readyz`: it can do its job,
//! i.e. PostgreSQL answers; the broker is reported but not required, as accepted jobs wait in
//! the outbox). Kubernetes probes use both. And
//! `/metrics`, the Prometheus exposition (the chart's Ingress does not route any of the three).

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::state::AppState;

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().json(Health { status: "draining" });
    }
    let readiness = zipkit_runtime::readiness::check(
        zipkit_domain::db::ping(&state.pool),
        &state.broker,
        zipkit_runtime::readiness::BrokerNeed::Reported,
    )
    .await;
    if readiness.is_ready() {
        HttpResponse::Ok().json(readiness)
    } else {
        HttpResponse::ServiceUnavailable().json(readiness)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    zipkit_runtime::metrics::record_pool(&state.pool.state());
    HttpResponse::Ok()
        .content_type(zipkit_runtime::metrics::CONTENT_TYPE)
        .body(zipkit_runtime::metrics::render())
}
