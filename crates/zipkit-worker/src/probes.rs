//! The worker's own small HTTP listener (`worker.http_host`, `worker.http_port`), so Kubernetes
//! can probe it like the API: `/healthz` (the process runs) and `/readyz` (PostgreSQL answers and
//! the broker is connected, the same checks as the API's), and `/metrics` for Prometheus. One
//! thread: it answers probes and scrapes only.

use std::net::TcpListener;

use actix_web::{App, HttpResponse, HttpServer, web};
use zipkit_domain::db::PgPool;
use zipkit_runtime::broker::Broker;

/// What the handlers read.
#[derive(Debug, Clone)]
struct ProbeState {
    pool: PgPool,
    broker: Broker,
}

/// A bound, not yet serving, probe listener.
#[derive(Debug)]
pub struct ProbeServer {
    port: u16,
    /// Taken when it starts serving.
    listener: Option<TcpListener>,
    state: ProbeState,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<ProbeState>) -> HttpResponse {
    let readiness = zipkit_runtime::readiness::check(
        zipkit_domain::db::ping(&state.pool),
        &state.broker,
        zipkit_runtime::readiness::BrokerNeed::Required,
    )
    .await;
    if readiness.is_ready() {
        HttpResponse::Ok().json(readiness)
    } else {
        HttpResponse::ServiceUnavailable().json(readiness)
    }
}

async fn metrics(state: web::Data<ProbeState>) -> HttpResponse {
    zipkit_runtime::metrics::record_pool(&state.pool.state());
    HttpResponse::Ok()
        .content_type(zipkit_runtime::metrics::CONTENT_TYPE)
        .body(zipkit_runtime::metrics::render())
}

impl ProbeServer {
    /// Binds `host:port` (0 picks a free port), so a taken port fails the start at once.
    pub fn bind(host: &str, port: u16, pool: PgPool, broker: Broker) -> std::io::Result<Self> {
        let listener = TcpListener::bind((host, port))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            port,
            listener: Some(listener),
            state: ProbeState { pool, broker },
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the returned handle is told to stop (`None` once started or on error).
    pub fn start(&mut self) -> Option<actix_web::dev::ServerHandle> {
        let listener = self.listener.take()?;
        let state = web::Data::new(self.state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics))
        })
        .workers(1)
        .listen(listener)
        .map_err(|e| tracing::error!(error = %e, "the probe listener could not start"))
        .ok()?
        // The worker owns the signals and stops this server itself.
        .disable_signals()
        .shutdown_timeout(1)
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Some(handle)
    }
}
