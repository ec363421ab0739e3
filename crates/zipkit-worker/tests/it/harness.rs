//! The worker's pipeline harness: a test's own database, vhost and bucket, and an in-process
//! worker on them built from the shipped config, with helpers to seed jobs, publish them, wait
//! for them and read what they left behind.

use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::oneshot;
use zipkit_domain::crypto::{CryptoSettings, KeyRing, generate_key};
use zipkit_domain::db::DatabaseSettings;
use zipkit_domain::messages::JobMessage;
use zipkit_domain::models::{
    Bucket, BucketCredentials, NewBucket, NewListing, NewManifest, NewZip, NewZipEntry, Project,
    ResultSettings, Zip, ZipEntry,
};
use zipkit_domain::values::{BucketName, EntryName, ObjectKey, SourceUrl};
use zipkit_domain::{Compression, OnError, Service, ZipId};
use zipkit_egress::EgressSettings;
use zipkit_runtime::broker::BrokerSettings;
use zipkit_runtime::jobs::{OutgoingJob, publish_one};
use zipkit_test_support::services::{s3_access_key, s3_endpoint, s3_secret_key};
use zipkit_test_support::settings::TestSettings;
use zipkit_test_support::{TestBroker, TestBucket, TestDatabase};
use zipkit_worker::{Settings, Worker, WorkerSettings};

/// Where a worker binary's output goes: nowhere, or the file ZIPKIT_TEST_WORKER_LOG names.
pub fn log() -> std::process::Stdio {
    match std::env::var_os("ZIPKIT_TEST_WORKER_LOG") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|_| std::process::Stdio::null(), Into::into),
        None => std::process::Stdio::null(),
    }
}

pub fn loopback() -> EgressSettings {
    zipkit_test_support::services::loopback_egress()
}

pub struct Harness {
    pub db: TestDatabase,
    pub broker: TestBroker,
    pub store: TestBucket,
    pub crypto: CryptoSettings,
    pub stop: Option<oneshot::Sender<()>>,
    pub worker: Option<tokio::task::JoinHandle<()>>,
    /// Where the worker's `/healthz` and `/readyz` answer (0 without a worker).
    pub probe_port: u16,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_configured(|_| {}).await
    }

    /// Database, vhost, bucket and key ring, with no worker running.
    pub async fn services_only() -> Self {
        let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
        let broker = TestBroker::new().await;
        let store = TestBucket::new().await;
        let crypto = CryptoSettings {
            active_key: "k1".into(),
            keys: [(
                "k1".to_owned(),
                SecretString::from(generate_key().expect("key")),
            )]
            .into(),
            keys_dir: None,
        };
        Self {
            db,
            broker,
            store,
            crypto,
            stop: None,
            worker: None,
            probe_port: 0,
        }
    }

    /// The worker binary on this harness's services and key ring; with ZIPKIT_TEST_WORKER_LOG
    /// set, its logs are appended to that file.
    pub fn spawn_binary(&self) -> zipkit_test_support::process::KillOnDrop {
        self.spawn_binary_with(&[])
    }

    /// As `spawn_binary`, with more settings.
    pub fn spawn_binary_with(
        &self,
        env: &[(&str, &str)],
    ) -> zipkit_test_support::process::KillOnDrop {
        use secrecy::ExposeSecret;
        let key = self.crypto.keys["k1"].expose_secret().to_owned();
        let child = zipkit_test_support::process::zipkit_command(
            env!("CARGO_BIN_EXE_zipkit-worker"),
            self.db.url(),
            &self.broker.url(),
        )
        .env("ZIPKIT__CRYPTO__ACTIVE_KEY", "k1")
        .env("ZIPKIT__CRYPTO__KEYS__K1", key)
        .env("ZIPKIT__WORKER__LEASE_SECS", "3")
        .env("ZIPKIT__WORKER__PART_SIZE_MIB", "5")
        .envs(env.iter().copied())
        .stdout(log())
        .stderr(log())
        .spawn()
        .unwrap();
        zipkit_test_support::process::KillOnDrop(child)
    }

    /// A worker with the test defaults, adjusted by `configure`; the egress policy allows
    /// loopback, where the test's sources and store are.
    pub async fn start_configured(configure: impl FnOnce(&mut WorkerSettings)) -> Self {
        Self::start_full(configure, |url| url, loopback()).await
    }

    /// As `start_configured`; `broker_url` may route the worker's broker connection elsewhere.
    pub async fn start_full(
        configure: impl FnOnce(&mut WorkerSettings),
        broker_url: impl FnOnce(String) -> String,
        egress: EgressSettings,
    ) -> Self {
        let Self {
            db,
            broker,
            store,
            crypto,
            ..
        } = Self::services_only().await;
        // The shipped config files, on the test's services, with a small fast worker.
        let mut settings: Settings =
            TestSettings::on(db.url(), &broker_url(broker.url()), "zipkit-worker-test")
                .set("worker.concurrency", 2)
                .set("worker.part_size_mib", 5)
                .set("worker.parts_in_flight", 3)
                .set("worker.buffer_mib", 64)
                .set("worker.lease_secs", 30)
                .set("worker.shutdown_grace_secs", 10)
                .set("worker.source_connect_timeout_secs", 2)
                .set("worker.source_read_timeout_secs", 5)
                .set("worker.downloads_ahead", 8)
                .set("worker.download_buffer_mib", 32)
                .set("worker.stall_min_bytes", 1024)
                .set("worker.max_source_bytes", 1u64 << 40)
                .set("worker.max_archive_bytes", 1u64 << 42)
                .set("worker.max_attempts", 1)
                .set("worker.retry_backoff_secs", 1)
                .set("worker.http_port", 0)
                .load();
        // The test's own key ring (shared with what it seeds) and egress policy.
        settings.crypto = crypto.clone();
        settings.egress = egress;
        configure(&mut settings.worker);
        let worker = Worker::build(settings).await.expect("worker starts");
        let probe_port = worker.http_port();
        let (stop, stopped) = oneshot::channel();
        let worker = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            db,
            broker,
            store,
            crypto,
            stop: Some(stop),
            worker: Some(worker),
            probe_port,
        }
    }

    /// The status and body of one of the worker's probes.
    pub async fn probe(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.probe_port))
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Probes `/readyz` until it answers `status` (at most 10 s).
    pub async fn readyz_becomes(&self, status: u16) -> serde_json::Value {
        let mut last = self.probe("/readyz").await;
        for _ in 0..100 {
            if last.0 == status {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = self.probe("/readyz").await;
        }
        assert_eq!(last.0, status, "{}", last.1);
        last.1
    }

    /// A worker whose egress policy allows only 127.0.0.3/32 (production's default plus one
    /// listed network), and a bucket on the store reached there through a forwarder (kept alive
    /// by the returned proxy). Everything else on loopback is internal to it.
    pub async fn start_guarded() -> (Self, Bucket, zipkit_test_support::proxy::TcpProxy) {
        let store_address = s3_endpoint().trim_start_matches("http://").to_owned();
        let mut store = zipkit_test_support::proxy::TcpProxy::closed_on("127.0.0.3", store_address);
        store.open().await;
        let harness = Self::start_full(
            |_| {},
            |url| url,
            EgressSettings {
                allowed_networks: vec!["127.0.0.3/32".parse().unwrap()],
                allowed_hosts: vec![],
            },
        )
        .await;
        let bucket = harness
            .bucket_at(&format!("http://{}", store.address()))
            .await;
        (harness, bucket, store)
    }

    /// A project with a bucket on the local S3 store.
    pub async fn bucket(&self) -> Bucket {
        self.bucket_at(&s3_endpoint()).await
    }

    /// As `bucket`, letting jobs read their sources from it.
    pub async fn readable_bucket(&self) -> Bucket {
        let bucket = self.bucket().await;
        let mut conn = self.db.connect().await;
        Bucket::set_read_sources(&mut conn, bucket.project_id, bucket.id, true)
            .await
            .unwrap()
            .unwrap()
    }

    /// A project with a bucket on the local S3 store, reached at `endpoint`.
    pub async fn bucket_at(&self, endpoint: &str) -> Bucket {
        let mut conn = self.db.connect().await;
        let keyring = KeyRing::from_settings(&self.crypto).unwrap();
        let project = Project::create(&mut conn, "Acme").await.unwrap();
        Bucket::create(
            &mut conn,
            &keyring,
            NewBucket {
                project_id: project.id,
                service: Service::S3,
                name: BucketName::parse(self.store.name()).unwrap(),
                region: "us-east-1".into(),
                r2_account_id: None,
                endpoint_url: Some(endpoint.to_owned()),
                force_path_style: true,
                acl: None,
                credentials: BucketCredentials {
                    access_key_id: SecretString::from(s3_access_key()),
                    secret_access_key: SecretString::from(s3_secret_key()),
                },
            },
        )
        .await
        .unwrap()
    }

    /// Stores a job for `entries` (url, filename) and publishes its message.
    pub async fn submit(
        &self,
        bucket: &Bucket,
        key: &str,
        entries: &[(String, &str)],
        compression: Compression,
        on_error: OnError,
    ) -> ZipId {
        let entries = entries
            .iter()
            .map(|(url, name)| NewZipEntry {
                url: SourceUrl::parse(url).unwrap(),
                filename: EntryName::parse(name).unwrap(),
                given_filename: None,
                modified_at: None,
                declared_size: None,
            })
            .collect();
        self.submit_entries(bucket, key, entries, compression, on_error)
            .await
    }

    /// Stores a job of these entries and publishes its message.
    pub async fn submit_entries(
        &self,
        bucket: &Bucket,
        key: &str,
        entries: Vec<NewZipEntry>,
        compression: Compression,
        on_error: OnError,
    ) -> ZipId {
        let job = (compression, on_error, ResultSettings::default());
        self.submit_asking(bucket, key, entries, job).await
    }

    /// As `submit_entries`, the job asking `result_settings` of its archive.
    pub async fn submit_asking(
        &self,
        bucket: &Bucket,
        key: &str,
        entries: Vec<NewZipEntry>,
        job: (Compression, OnError, ResultSettings),
    ) -> ZipId {
        self.submit_listing(bucket, key, (entries, Vec::new(), None), job)
            .await
    }

    /// A job of these entries, prefixes to list and manifest to read, stored and published.
    pub async fn submit_listing(
        &self,
        bucket: &Bucket,
        key: &str,
        (entries, listings, manifest): (Vec<NewZipEntry>, Vec<NewListing>, Option<NewManifest>),
        (compression, on_error, result_settings): (Compression, OnError, ResultSettings),
    ) -> ZipId {
        let mut conn = self.db.connect().await;
        let zip = Zip::create(
            &mut conn,
            NewZip {
                listings,
                manifest,
                traceparent: None,
                expected_size: None,
                result_settings,
                project_id: bucket.project_id,
                bucket_id: bucket.id,
                key: ObjectKey::parse(key).unwrap(),
                metadata: Default::default(),
                compression,
                on_error,
                idempotency: None,
                entries,
            },
        )
        .await
        .unwrap();
        self.publish(zip.id).await;
        zip.id
    }

    /// Publishes the job message for `id`, as the API does.
    pub async fn publish(&self, id: ZipId) {
        let broker = BrokerSettings {
            url: SecretString::from(self.broker.url()),
            queue_prefix: "zipkit".into(),
            connection_name: "test-publisher".into(),
            reconnect_max_secs: 1,
        };
        let job = OutgoingJob {
            id: &id.to_string(),
            body: &JobMessage::first(id, None).to_bytes(),
            traceparent: None,
        };
        publish_one(&broker, job).await.unwrap();
    }

    /// Builds a finished job again from the start: its row as if new, its message published.
    pub async fn rerun(&self, id: ZipId) {
        use diesel_async::RunQueryDsl;
        let mut conn = self.db.connect().await;
        diesel::sql_query(
            "UPDATE zips SET status = 'none', attempts = 0, lease_owner = NULL, \
             lease_expires_at = NULL, upload_id = NULL, result_size = NULL, result_etag = NULL, \
             result_entries = NULL, files_done = 0, bytes_downloaded = 0, bytes_uploaded = 0, \
             finished_at = NULL WHERE id = $1",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .execute(&mut conn)
        .await
        .unwrap();
        self.publish(id).await;
    }

    /// Submits a job of stored entries and waits until it has finished.
    pub async fn build_stored(
        &self,
        bucket: &Bucket,
        key: &str,
        entries: &[(String, &str)],
        on_error: OnError,
    ) -> Zip {
        let id = self
            .submit(bucket, key, entries, Compression::Store, on_error)
            .await;
        self.wait_finished(id).await
    }

    /// A sweeper of the test's own, as a worker runs one (an hour makes a lease stale); its
    /// passes are called by the test.
    pub fn sweeper(&self) -> zipkit_worker::upload::sweeper::OrphanSweeper {
        zipkit_worker::upload::sweeper::OrphanSweeper {
            pool: zipkit_domain::db::pool(&DatabaseSettings {
                url: SecretString::from(self.db.url().to_owned()),
                max_connections: 2,
                connect_timeout_secs: 2,
            }),
            keyring: std::sync::Arc::new(KeyRing::from_settings(&self.crypto).unwrap()),
            buckets: zipkit_storage::BucketClients::new(zipkit_egress::EgressPolicy::new(
                &loopback(),
            )),
            timeouts: zipkit_worker::upload::StoreTimeouts { min_rate: 1 << 20 },
            stale: Duration::from_secs(3600),
            every: Duration::from_secs(300),
        }
    }

    /// The first of the job's skipped entries (`Zip::skipped_entries`), in order.
    pub async fn skipped(&self, id: ZipId) -> Vec<ZipEntry> {
        let mut conn = self.db.connect().await;
        Zip::skipped_entries(&mut conn, &[id])
            .await
            .unwrap()
            .remove(&id)
            .unwrap_or_default()
            .first
    }

    pub async fn wait_finished(&self, id: ZipId) -> Zip {
        self.wait_finished_within(id, Duration::from_secs(30)).await
    }

    /// As `wait_finished`, for a job that may take up to `limit`.
    pub async fn wait_finished_within(&self, id: ZipId, limit: Duration) -> Zip {
        let mut conn = self.db.connect().await;
        let until = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < until {
            let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
            if zip.status.is_terminal() {
                return zip;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {id} did not finish within {} s", limit.as_secs());
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(worker) = self.worker.take() {
            worker.await.unwrap();
        }
    }
}
