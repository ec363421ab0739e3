//! zipkit's HTTP API. `Application::build` wires settings into a running server that tests can
//! start on port 0.

pub mod admin;
pub mod auth;
pub mod body_limits;
pub mod cli;
pub mod dashboard;
pub mod error;
mod extractors;
pub mod middleware;
pub mod publisher;
pub mod rate_limit;
pub mod routes;
mod settings;
mod state;
pub mod zips;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::sync::watch;
use zipkit_domain::crypto::KeyRing;
use zipkit_runtime::broker::Broker;

pub use settings::{ApiSettings, Settings};
pub use state::AppState;

use crate::publisher::JobPublisher;
use crate::zips::request::Limits;

/// A bound, not yet running, API server.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    broker: Broker,
    stop_sweeper: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
    drain_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    KeyRing(#[from] zipkit_domain::crypto::KeyRingError),
    #[error("{0}")]
    Settings(String),
    #[error("cannot start the password hashing threads: {0}")]
    Threads(std::io::Error),
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener and connects (lazily) to PostgreSQL and RabbitMQ. Neither being down
    /// stops the API from starting; `/readyz` reports them until they are back, and jobs
    /// accepted meanwhile are published by the sweeper once the broker returns.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let keyring = KeyRing::from_settings(&settings.crypto)?;
        settings.validate().map_err(StartError::Settings)?;
        zipkit_runtime::metrics::install("zipkit-api");
        let address = format!("{}:{}", settings.api.host, settings.api.port);
        let listener = TcpListener::bind(&address).map_err(|source| StartError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind { address, source })?
            .port();

        let broker = Broker::start(settings.broker.clone());
        let pool = zipkit_domain::db::pool(&settings.database);
        zipkit_runtime::metrics::record_pool_size(settings.database.max_connections);
        let publisher = JobPublisher {
            broker: broker.clone(),
            pool: pool.clone(),
        };
        let (stop_sweeper, sweeper_stopped) = watch::channel(false);
        let after = Duration::from_secs(settings.api.republish_after_secs);
        let every = after.clamp(Duration::from_secs(1), Duration::from_secs(5));
        tokio::spawn(publisher.clone().sweep(after, every, sweeper_stopped));

        let egress = zipkit_egress::EgressPolicy::new(&settings.egress);
        let draining = Arc::new(AtomicBool::new(false));
        let limits = Limits {
            max_urls: settings.api.max_urls,
            max_manifest_entries: settings.api.max_manifest_entries,
            download_url_ttl_secs: settings.api.download_url_ttl_secs,
            max_download_url_ttl_secs: settings.api.max_download_url_ttl_secs,
        };
        let state = web::Data::new(AppState {
            pool,
            broker: broker.clone(),
            keyring,
            publisher,
            limits,
            secure_cookies: settings.api.secure_cookies,
            allow_http_webhooks: settings.webhooks.allow_http,
            dry_runs: zips::dry_run::DryRunner::new(egress.clone(), settings.worker.clone()),
            egress: egress.clone(),
            buckets: zipkit_storage::BucketClients::new(egress),
            rate_limits: rate_limit::RateLimits::new(&settings.rate_limits),
            passwords: admin::passwords::PasswordPool::start(&settings.passwords)
                .map_err(StartError::Threads)?,
            draining: draining.clone(),
            openapi: routes::openapi::served(limits),
        });
        // Every minute: keys back at a full allowance are forgotten, so the limiters' memory stays
        // small, and failed sign-ins too old to count are deleted.
        let (limits, pool) = (state.rate_limits.clone(), state.pool.clone());
        let window =
            chrono::Duration::minutes(i64::from(settings.rate_limits.sign_in_window_minutes));
        let mut sweep_stopped = stop_sweeper.subscribe();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        limits.forget_idle();
                        // What request bodies and sign-ins freed goes back to the kernel.
                        zipkit_runtime::allocator::release_free_memory();
                        if let Ok(mut conn) = pool.get().await {
                            let before = chrono::Utc::now() - window;
                            let _ = zipkit_domain::models::LoginThrottle::forget_before(&mut conn, before).await;
                            let _ = zipkit_domain::models::RateLimit::forget_full(&mut conn).await;
                        }
                    }
                    _ = sweep_stopped.changed() => break,
                }
            }
        });
        // actix counts connections per worker thread (one per core by default).
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let connections_per_worker = settings.api.max_connections.div_ceil(workers).max(1);
        let max_body = settings.api.max_body_bytes;
        // Deadline and shared memory budget for request bodies (`body_limits::enforce`).
        let body_limits = web::Data::new(body_limits::BodyLimits::new(
            Duration::from_secs(settings.api.body_timeout_secs),
            settings.api.max_body_bytes_in_flight,
        ));
        let server = HttpServer::new(move || {
            // Innermost first: the access log sees the Request-Id header the layer inside it
            // adds; HEAD becomes GET before anything else holds the request.
            App::new()
                .wrap(from_fn(body_limits::enforce))
                .wrap(middleware::common_headers())
                .wrap(from_fn(middleware::request_id))
                .wrap(middleware::access_log())
                .wrap(from_fn(middleware::record_metrics))
                .wrap(from_fn(middleware::head_as_get))
                .app_data(state.clone())
                .app_data(body_limits.clone())
                .app_data(extractors::json_config(max_body))
                .app_data(extractors::query_config())
                .app_data(extractors::path_config())
                .configure(dashboard::configure)
                .configure(routes::configure)
        })
        .listen(listener)
        .map_err(|source| StartError::Bind {
            address: format!("port {port}"),
            source,
        })?
        // Signals are ours (see `run_until`), so the broker closes after the last request.
        .disable_signals()
        .workers(workers)
        .max_connections(connections_per_worker)
        .shutdown_timeout(30)
        .run();
        tracing::info!(port, "zipkit-api listening");
        Ok(Self {
            port,
            server,
            broker,
            stop_sweeper,
            draining,
            drain_delay: Duration::from_secs(settings.api.drain_delay_secs),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `stop` resolves; then keeps serving for the drain delay with `/readyz`
    /// failing (endpoints and load balancers still list the pod for a moment after SIGTERM, and
    /// a closed listener would refuse what they send), then stops accepting, lets in-flight
    /// requests finish and closes the broker.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let handle = self.server.handle();
        let (draining, delay) = (self.draining.clone(), self.drain_delay);
        tokio::spawn(async move {
            stop.await;
            draining.store(true, Ordering::SeqCst);
            if !delay.is_zero() {
                tracing::info!(
                    duration_ms = delay.as_millis() as u64,
                    "draining: serving on while endpoints forget this process"
                );
                tokio::time::sleep(delay).await;
            }
            handle.stop(true).await;
        });
        let result = self.server.await;
        let _ = self.stop_sweeper.send(true);
        self.broker.close().await;
        tracing::info!("zipkit-api stopped");
        result
    }
}
