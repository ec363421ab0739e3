//! zipkit's worker. `Worker::build` wires settings into a running worker that tests can start
//! in-process. Stages: `consumer` (queue → claimed job), `download` + `prefetch` (sources,
//! several ahead), `archive` (streaming ZIP writer, multi-core deflate), `upload` (the object:
//! PutObject or a multipart upload, resumed after a takeover), orchestrated per job by `job`;
//! `lease` is a claimed job's lease and heartbeat, `failure` why an attempt failed.

pub mod archive;
pub mod consumer;
pub mod download;
pub mod expected;
pub mod failure;
pub mod gauges;
pub mod job;
pub mod lease;
pub mod memory;
pub mod prefetch;
pub mod probes;
pub mod resume;
pub mod source_buckets;
pub mod upload;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use zipkit_domain::crypto::{CryptoSettings, KeyRing};
use zipkit_domain::db::{DatabaseSettings, PgPool};
use zipkit_domain::webhooks::WebhookSettings;
use zipkit_egress::{EgressPolicy, EgressSettings};
use zipkit_runtime::broker::{Broker, BrokerSettings};
use zipkit_runtime::telemetry::TelemetrySettings;

use crate::consumer::ConsumerSettings;
use crate::job::JobContext;

/// `[worker]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs processed at once (and the broker prefetch).
    pub concurrency: u16,
    /// Size of each multipart-upload part (S3's minimum is 5 MiB).
    pub part_size_mib: u32,
    /// Parts uploading at once per job, at most: more parts in flight draw on `buffer_mib`.
    pub parts_in_flight: u16,
    /// The worker's buffer memory, shared by all its jobs: each job's part being filled (reserved
    /// when the job starts; a job waits for it), more parts in flight, and downloaded bytes read
    /// ahead of the writer (`memory`).
    pub buffer_mib: u32,
    /// How long a claim holds without a heartbeat before another worker may take the job over.
    pub lease_secs: u64,
    /// On SIGTERM, how long in-flight jobs may run before they are handed back.
    pub shutdown_grace_secs: u64,
    pub source_connect_timeout_secs: u64,
    /// Longest silence from a source before it counts as stalled.
    pub source_read_timeout_secs: u64,
    /// Sources downloading at once per job (the one being written included): a count ceiling;
    /// the bytes they hold are bounded by `download_buffer_mib`.
    pub downloads_ahead: u16,
    /// What a job's downloads ahead of the writer may take together: the bytes they hold before
    /// the writer takes them, beyond a small share each (`prefetch::OWN_BYTES`), and their
    /// connections' buffers (`prefetch::CONNECTION_READ_MAX`).
    pub download_buffer_mib: u32,
    /// A source sending fewer than `stall_min_bytes` in `stall_window_secs` is stalled (retried,
    /// resumed where possible).
    pub stall_window_secs: u64,
    pub stall_min_bytes: u64,
    /// The longest a job waits on one source, summed over the source's retries (connecting,
    /// waiting for an answer, silences of a second or more, backoffs); past it the source fails
    /// for good and is not retried with the job.
    pub source_wait_secs: u64,
    /// The slowest upload rate that still counts as working: a call on the store may take 30 s
    /// plus its body at this rate.
    pub store_min_rate_kib: u64,
    /// Largest single source accepted (`source_too_large` beyond).
    pub max_source_bytes: u64,
    /// Largest total of a job's sources (`archive_too_large` beyond); on R2 it also sets the
    /// (equal) part size: `max_archive_bytes / 10,000`, at least `part_size_mib`.
    pub max_archive_bytes: u64,
    /// Deflate level, 1 (fastest) to 9 (smallest).
    pub deflate_level: u32,
    /// Attempts at a job whose failures are transient before it fails for good (and its
    /// message is dead-lettered).
    pub max_attempts: u16,
    /// Delay before a job's second attempt, doubled for each later one (at most an hour).
    pub retry_backoff_secs: u64,
    /// Where the probe listener (`/healthz`, `/readyz`) listens; port 0 picks a free one.
    pub http_host: String,
    pub http_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub worker: WorkerSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub crypto: CryptoSettings,
    pub telemetry: TelemetrySettings,
    pub webhooks: WebhookSettings,
    pub egress: EgressSettings,
}

#[derive(Debug)]
pub struct Worker {
    broker: Broker,
    context: JobContext,
    consumer: ConsumerSettings,
    dispatcher: webhooks::Dispatcher,
    sweeper: upload::sweeper::OrphanSweeper,
    probes: probes::ProbeServer,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    KeyRing(#[from] zipkit_domain::crypto::KeyRingError),
    #[error("worker.{key} {rule} (it is {value})")]
    Setting {
        key: &'static str,
        rule: &'static str,
        value: u64,
    },
    #[error("could not start the compressing threads: {0}")]
    Compressors(std::io::Error),
    #[error("cannot listen on {address} (worker.http_host, worker.http_port): {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

impl WorkerSettings {
    /// Checks every setting once, at start-up, naming the first one out of range; nothing
    /// downstream clamps them again.
    pub fn validate(&self) -> Result<(), StartError> {
        let check = |key, value: u64, ok: bool, rule| {
            if ok {
                Ok(())
            } else {
                Err(StartError::Setting { key, rule, value })
            }
        };
        let at_least_one = "must be at least 1";
        check(
            "concurrency",
            self.concurrency.into(),
            self.concurrency >= 1,
            at_least_one,
        )?;
        check(
            "part_size_mib",
            self.part_size_mib.into(),
            zipkit_zip::parts::PART_MIB_RANGE.contains(&self.part_size_mib),
            "must be between 5 (S3's smallest part) and 5120 (its largest)",
        )?;
        check(
            "parts_in_flight",
            self.parts_in_flight.into(),
            self.parts_in_flight >= 1,
            at_least_one,
        )?;
        check(
            "buffer_mib",
            self.buffer_mib.into(),
            self.buffer_mib >= self.part_size_mib,
            "must hold at least one part (part_size_mib)",
        )?;
        check(
            "lease_secs",
            self.lease_secs,
            self.lease_secs >= 3,
            "must be at least 3 (the heartbeat renews it every third of it)",
        )?;
        check(
            "downloads_ahead",
            self.downloads_ahead.into(),
            self.downloads_ahead >= 1,
            at_least_one,
        )?;
        check(
            "download_buffer_mib",
            self.download_buffer_mib.into(),
            self.download_buffer_mib >= 1,
            at_least_one,
        )?;
        check(
            "stall_window_secs",
            self.stall_window_secs,
            self.stall_window_secs >= 1,
            at_least_one,
        )?;
        check(
            "source_wait_secs",
            self.source_wait_secs,
            self.source_wait_secs >= 1,
            at_least_one,
        )?;
        check(
            "store_min_rate_kib",
            self.store_min_rate_kib,
            self.store_min_rate_kib >= 1,
            at_least_one,
        )?;
        check(
            "deflate_level",
            self.deflate_level.into(),
            (1..=9).contains(&self.deflate_level),
            "must be between 1 (fastest) and 9 (smallest)",
        )?;
        check(
            "max_attempts",
            self.max_attempts.into(),
            self.max_attempts >= 1,
            at_least_one,
        )?;
        Ok(())
    }
}

impl Worker {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let keyring = KeyRing::from_settings(&settings.crypto)?;
        settings.worker.validate()?;
        zipkit_runtime::metrics::install("zipkit-worker");
        let pool: PgPool = zipkit_domain::db::pool(&settings.database);
        zipkit_runtime::metrics::record_pool_size(settings.database.max_connections);
        let broker = Broker::start(settings.broker);
        let w = &settings.worker;
        let egress = EgressPolicy::new(&settings.egress);
        // One part of it is the lane for headers held back (memory.rs).
        let buffers = memory::BufferBudget::new(
            w.buffer_mib as usize * 1024 * 1024,
            w.part_size_mib as usize * 1024 * 1024,
        );
        let context = JobContext {
            pool,
            database: settings.database.clone(),
            keyring: Arc::new(keyring),
            http: download::client(
                Duration::from_secs(w.source_connect_timeout_secs),
                Duration::from_secs(w.source_read_timeout_secs),
                // A job's downloads at once: the connections worth keeping for its next sources.
                usize::from(w.downloads_ahead),
                &egress,
            ),
            buckets: zipkit_storage::BucketClients::new(egress.clone()),
            downloads: prefetch::DownloadLimits {
                ahead: usize::from(w.downloads_ahead),
                job_bytes: w.download_buffer_mib as usize * 1024 * 1024,
                own_bytes: prefetch::OWN_BYTES,
                stall_window: Duration::from_secs(w.stall_window_secs),
                source_wait: Duration::from_secs(w.source_wait_secs),
                stall_min_bytes: w.stall_min_bytes,
                max_source_bytes: w.max_source_bytes,
                egress: egress.clone(),
                budget: buffers.clone(),
            },
            max_archive_bytes: w.max_archive_bytes,
            deflate_level: w.deflate_level,
            compressors: archive::deflate::Compressors::per_core()
                .map_err(StartError::Compressors)?,
            buffers,
            part_size: w.part_size_mib as usize * 1024 * 1024,
            parts_in_flight: usize::from(w.parts_in_flight),
            store_timeouts: upload::StoreTimeouts {
                min_rate: w.store_min_rate_kib * 1024,
            },
            owner: format!(
                "worker-{}-{}",
                std::process::id(),
                &zipkit_domain::ZipId::new().to_string()[..8]
            ),
        };
        let consumer = ConsumerSettings {
            concurrency: w.concurrency,
            lease: Duration::from_secs(w.lease_secs),
            grace: Duration::from_secs(w.shutdown_grace_secs),
            max_attempts: i32::from(w.max_attempts),
            // Doubling from `retry_backoff_secs`, at most an hour.
            retry_backoff: zipkit_runtime::backoff::Backoff::new(
                Duration::from_secs(w.retry_backoff_secs),
                Duration::from_secs(3600),
            ),
        };
        let dispatcher = webhooks::Dispatcher::new(
            context.pool.clone(),
            context.keyring.clone(),
            settings.webhooks,
            egress,
        );
        let sweeper = upload::sweeper::OrphanSweeper {
            pool: context.pool.clone(),
            keyring: context.keyring.clone(),
            buckets: context.buckets.clone(),
            timeouts: context.store_timeouts,
            // Far beyond any lease: such a job's owner is gone and no message brought it back.
            stale: Duration::from_secs(3600).max(Duration::from_secs(w.lease_secs) * 10),
            every: Duration::from_secs(300),
        };
        let probes = probes::ProbeServer::bind(
            &settings.worker.http_host,
            settings.worker.http_port,
            context.pool.clone(),
            broker.clone(),
        )
        .map_err(|source| StartError::Bind {
            address: format!(
                "{}:{}",
                settings.worker.http_host, settings.worker.http_port
            ),
            source,
        })?;
        Ok(Self {
            broker,
            context,
            consumer,
            dispatcher,
            sweeper,
            probes,
        })
    }

    /// The port `/healthz` and `/readyz` answer on.
    pub fn http_port(&self) -> u16 {
        self.probes.port()
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Whether PostgreSQL answers and the broker is connected.
    pub async fn is_ready(&self) -> bool {
        zipkit_runtime::readiness::check(
            zipkit_domain::db::ping(&self.context.pool),
            &self.broker,
            zipkit_runtime::readiness::BrokerNeed::Required,
        )
        .await
        .is_ready()
    }

    /// Consumes jobs until `stop` resolves; then stops consuming, lets in-flight jobs finish
    /// within the grace period, and closes its connections.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        // The consumer waits for the broker itself; readiness is only announced here.
        let consuming = tokio::spawn(consumer::consume(
            self.broker.clone(),
            self.context.clone(),
            self.consumer.clone(),
            stop_rx.clone(),
        ));
        let dispatching = tokio::spawn(self.dispatcher.clone().run(stop_rx.clone()));
        let gauges = gauges::Gauges {
            broker: self.broker.clone(),
            pool: self.context.pool.clone(),
        };
        let reading = tokio::spawn(gauges.run(stop_rx.clone()));
        let sweeping = tokio::spawn(self.sweeper.clone().run(stop_rx));
        let probes = self.probes.start();
        let announce_ready = async {
            while !self.is_ready().await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tracing::info!(queue = %self.broker.topology().jobs, "zipkit-worker ready");
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = stop => {}
            () = announce_ready => {}
        }
        let _ = stop_tx.send(true);
        let _ = consuming.await;
        let _ = dispatching.await;
        let _ = sweeping.await;
        let _ = reading.await;
        if let Some(probes) = probes {
            probes.stop(true).await;
        }
        self.broker.close().await;
        tracing::info!("zipkit-worker stopped");
    }
}
