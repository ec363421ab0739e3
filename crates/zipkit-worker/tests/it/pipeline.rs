//! Jobs built end to end by an in-process worker: real RabbitMQ, PostgreSQL, HTTP sources and the
//! S3 store; archives read back and checked by independent readers (Python's zipfile, Info-ZIP).
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is how a test fails"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::oneshot;
use zipkit_domain::crypto::{CryptoSettings, KeyRing, generate_key};
use zipkit_domain::db::DatabaseSettings;
use zipkit_domain::messages::JobMessage;
use zipkit_domain::models::{
    Bucket, BucketCredentials, NewBucket, NewZip, NewZipEntry, Project, Zip,
};
use zipkit_domain::values::{BucketName, EntryName, ObjectKey, SourceUrl};
use zipkit_domain::{Compression, OnError, Service, ZipId, ZipStatus};
use zipkit_egress::EgressSettings;
use zipkit_runtime::broker::BrokerSettings;
use zipkit_runtime::jobs::{OutgoingJob, publish_one};
use zipkit_test_support::readers::{Seen, assert_every_reader_sees};
use zipkit_test_support::services::{s3_access_key, s3_endpoint, s3_secret_key};
use zipkit_test_support::settings::TestSettings;
use zipkit_test_support::sources::{Behaviour, SourceServer, word_salad};
use zipkit_test_support::{TestBroker, TestBucket, TestDatabase};
use zipkit_worker::{Settings, Worker, WorkerSettings};

/// Where a worker binary's output goes: nowhere, or the file ZIPKIT_TEST_WORKER_LOG names.
fn log() -> std::process::Stdio {
    match std::env::var_os("ZIPKIT_TEST_WORKER_LOG") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|_| std::process::Stdio::null(), Into::into),
        None => std::process::Stdio::null(),
    }
}

fn loopback() -> EgressSettings {
    zipkit_test_support::services::loopback_egress()
}

struct Harness {
    db: TestDatabase,
    broker: TestBroker,
    store: TestBucket,
    crypto: CryptoSettings,
    stop: Option<oneshot::Sender<()>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    /// Where the worker's `/healthz` and `/readyz` answer (0 without a worker).
    probe_port: u16,
}

impl Harness {
    async fn start() -> Self {
        Self::start_configured(|_| {}).await
    }

    /// Database, vhost, bucket and key ring, with no worker running.
    async fn services_only() -> Self {
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
    fn spawn_binary(&self) -> zipkit_test_support::process::KillOnDrop {
        self.spawn_binary_with(&[])
    }

    /// As `spawn_binary`, with more settings.
    fn spawn_binary_with(&self, env: &[(&str, &str)]) -> zipkit_test_support::process::KillOnDrop {
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
    async fn start_configured(configure: impl FnOnce(&mut WorkerSettings)) -> Self {
        Self::start_full(configure, |url| url, loopback()).await
    }

    /// As `start_configured`; `broker_url` may route the worker's broker connection elsewhere.
    async fn start_full(
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
    async fn probe(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.probe_port))
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Probes `/readyz` until it answers `status` (at most 10 s).
    async fn readyz_becomes(&self, status: u16) -> serde_json::Value {
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
    async fn start_guarded() -> (Self, Bucket, zipkit_test_support::proxy::TcpProxy) {
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
    async fn bucket(&self) -> Bucket {
        self.bucket_at(&s3_endpoint()).await
    }

    /// A project with a bucket on the local S3 store, reached at `endpoint`.
    async fn bucket_at(&self, endpoint: &str) -> Bucket {
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
    async fn submit(
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
    async fn submit_entries(
        &self,
        bucket: &Bucket,
        key: &str,
        entries: Vec<NewZipEntry>,
        compression: Compression,
        on_error: OnError,
    ) -> ZipId {
        let mut conn = self.db.connect().await;
        let zip = Zip::create(
            &mut conn,
            NewZip {
                traceparent: None,
                expected_size: None,
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
    async fn publish(&self, id: ZipId) {
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
    async fn rerun(&self, id: ZipId) {
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

    async fn wait_finished(&self, id: ZipId) -> Zip {
        let mut conn = self.db.connect().await;
        for _ in 0..300 {
            let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
            if zip.status.is_terminal() {
                return zip;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {id} did not finish within 30 s");
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(worker) = self.worker.take() {
            worker.await.unwrap();
        }
    }
}

/// Every entry's name and bytes as Python's zipfile reads them, after its CRC check (`testzip`);
/// and every other reader people use sees the same entries, sizes and CRC-32s
/// (`zipkit_test_support::readers`).
fn read_with_python(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let script = "import zipfile,sys,json\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint(json.dumps([[i.filename, z.read(i).hex()] for i in z.infolist()]))";
    let entries: Vec<(String, String)> = python_json(archive, script);
    let entries: Vec<(String, Vec<u8>)> = entries
        .into_iter()
        .map(|(name, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (name, bytes)
        })
        .collect();
    let expected: Vec<Seen> = entries.iter().map(|(n, b)| Seen::of(n, b)).collect();
    assert_every_reader_sees(archive, &expected);
    entries.into_iter().collect()
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

#[tokio::test]
async fn a_job_is_streamed_into_a_valid_archive_in_the_bucket() {
    let harness = Harness::start().await;
    let text = "zipkit ".repeat(50_000).into_bytes();
    let noise = pseudo_random(12 * 1024 * 1024, 42); // three 5 MiB parts, uploaded concurrently
    let image = pseudo_random(300_000, 7);
    let sources = SourceServer::start(vec![
        ("report.txt", Behaviour::Serve(text.clone())),
        ("noise.bin", Behaviour::Serve(noise.clone())),
        ("photo.jpg", Behaviour::Serve(image.clone())),
    ])
    .await;
    let bucket = harness.bucket().await;
    let entries = [
        (sources.url("report.txt"), "docs/report.txt"),
        (sources.url("noise.bin"), "data/深い/noise.bin"),
        (sources.url("photo.jpg"), "photos/été.jpg"),
    ];
    let id = harness
        .submit(
            &bucket,
            "exports/archive.zip",
            &entries,
            Compression::Auto,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.result_entries, Some(3));
    assert_eq!(zip.files_done, 3);

    let archive = harness.store.get("exports/archive.zip").await;
    assert_eq!(zip.result_size, Some(archive.len() as i64));
    let read = read_with_python(&archive);
    assert_eq!(read.len(), 3);
    assert_eq!(read["docs/report.txt"], text);
    assert_eq!(read["data/深い/noise.bin"], noise);
    assert_eq!(read["photos/été.jpg"], image);
    assert!(
        archive.len() < text.len() + noise.len() + image.len(),
        "the text was deflated"
    );

    let mut conn = harness.db.connect().await;
    let parts: i64 = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        zipkit_domain::schema::zip_parts::table
            .filter(zipkit_domain::schema::zip_parts::zip_id.eq(id))
            .count()
            .get_result(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(parts, 3, "a 12 MiB archive in 5 MiB parts");
    harness.stop().await;
}

#[tokio::test]
async fn the_same_job_built_twice_gives_the_same_bytes() {
    // Multi-block deflate entries compressed on every core (which thread takes which block
    // varies from run to run), a stored one, and `auto` deciding by content on sources served
    // in chunks of whatever size the network makes.
    let harness = Harness::start().await;
    let mib = 1024 * 1024;
    let mut routes = vec![
        (
            "photo",
            Behaviour::Serve([b"\xff\xd8\xff\xe0".to_vec(), pseudo_random(mib, 3)].concat()),
        ),
        ("notes", Behaviour::Serve(word_salad(100_000, 4))),
    ];
    let names: Vec<String> = (0..4).map(|i| format!("text-{i}.txt")).collect();
    for (i, name) in names.iter().enumerate() {
        routes.push((
            name.as_str(),
            Behaviour::Serve(word_salad(3 * mib + 12_345 * i, 10 + i as u64)),
        ));
    }
    let sources = SourceServer::start(routes).await;
    let bucket = harness.bucket().await;
    let mut entries = vec![
        (sources.url("photo"), "photo"),
        (sources.url("notes"), "notes"),
    ];
    entries.extend(names.iter().map(|n| (sources.url(n), n.as_str())));
    let id = harness
        .submit(
            &bucket,
            "twice.zip",
            &entries,
            Compression::Auto,
            OnError::Fail,
        )
        .await;
    let first_run = harness.wait_finished(id).await;
    assert_eq!(
        first_run.status,
        ZipStatus::Succeeded,
        "{:?}",
        first_run.error_message
    );
    let first = harness.store.get("twice.zip").await;
    let read = read_with_python(&first);
    assert_eq!(read["notes"], word_salad(100_000, 4));
    assert_eq!(read["text-3.txt"], word_salad(3 * mib + 3 * 12_345, 13));

    // Another job in between, so the compressing threads have other work behind them.
    let other = SourceServer::start(vec![(
        "other.txt",
        Behaviour::Serve(word_salad(3 * mib, 99)),
    )])
    .await;
    let between = harness
        .submit(
            &bucket,
            "between.zip",
            &[(other.url("other.txt"), "other.txt")],
            Compression::Deflate,
            OnError::Fail,
        )
        .await;
    assert_eq!(
        harness.wait_finished(between).await.status,
        ZipStatus::Succeeded
    );

    harness.rerun(id).await;
    let second_run = harness.wait_finished(id).await;
    assert_eq!(
        second_run.status,
        ZipStatus::Succeeded,
        "{:?}",
        second_run.error_message
    );
    let second = harness.store.get("twice.zip").await;
    assert_eq!(first.len(), second.len());
    assert!(first == second, "the two archives differ");
    harness.stop().await;
}

/// What a Python script given the archive's path (as `sys.argv[1]`) prints, as JSON.
fn python_json<T: serde::de::DeserializeOwned>(archive: &[u8], script: &str) -> T {
    let path = std::env::temp_dir().join(format!("zipkit-{}.zip", ZipId::new()));
    std::fs::write(&path, archive).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// For each entry (central directory order): its name, DOS date and time as Python reads them,
/// and the extended-timestamp (0x5455) and Unicode Path (0x7075) extra fields of its local and
/// central headers, in hex ("" when absent).
fn times_and_names(archive: &[u8]) -> Vec<serde_json::Value> {
    let script = r#"
import zipfile, sys, json, struct
path = sys.argv[1]
raw = open(path, 'rb').read()
def extras(b):
    out, i = {}, 0
    while i + 4 <= len(b):
        k, n = struct.unpack('<HH', b[i:i+4]); out[k] = b[i+4:i+4+n].hex(); i += 4 + n
    return out
rows = []
for info in zipfile.ZipFile(path).infolist():
    o = info.header_offset
    n, m = struct.unpack('<HH', raw[o+26:o+30])
    local, central = extras(raw[o+30+n:o+30+n+m]), extras(info.extra)
    rows.append({'name': info.filename, 'dos': list(info.date_time),
                 'local_ut': local.get(0x5455, ''), 'central_ut': central.get(0x5455, ''),
                 'local_up': local.get(0x7075, ''), 'central_up': central.get(0x7075, '')})
print(json.dumps(rows))
"#;
    python_json(archive, script)
}

#[tokio::test]
async fn entries_keep_their_sources_time_and_non_ascii_names_their_unicode_path() {
    use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
    let harness = Harness::start().await;
    let sources = SourceServer::start(vec![
        (
            "dated",
            Behaviour::ServeModified(b"dated".to_vec(), "Wed, 21 Oct 2015 07:28:01 GMT".into()),
        ),
        ("undated", Behaviour::Serve(b"undated".to_vec())),
        (
            "overridden",
            Behaviour::ServeModified(b"given".to_vec(), "Wed, 21 Oct 2015 07:28:01 GMT".into()),
        ),
        (
            "ancient",
            // HTTP's obsolete asctime form, and a time before DOS dates begin.
            Behaviour::ServeModified(b"ancient".to_vec(), "Thu Jan  1 00:00:10 1970".into()),
        ),
    ])
    .await;
    let bucket = harness.bucket().await;
    let given = Utc.with_ymd_and_hms(2020, 2, 29, 12, 34, 57).unwrap();
    let entry = |route: &str, name: &str, modified_at: Option<DateTime<Utc>>| NewZipEntry {
        url: SourceUrl::parse(&sources.url(route)).unwrap(),
        filename: EntryName::parse(name).unwrap(),
        given_filename: None,
        modified_at,
        declared_size: None,
    };
    let entries = vec![
        entry("dated", "dated.txt", None),
        entry("undated", "été/naïve.txt", None),
        entry("overridden", "given.txt", Some(given)),
        entry("ancient", "ancient.txt", None),
    ];
    let id = harness
        .submit_entries(
            &bucket,
            "times.zip",
            entries,
            Compression::Auto,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let first = harness.store.get("times.zip").await;
    read_with_python(&first);

    let ut = |seconds: i64| format!("01{}", hex(&(seconds as u32).to_le_bytes()));
    let dos = |at: DateTime<Utc>| {
        serde_json::json!([
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute(),
            at.second() / 2 * 2
        ])
    };
    let dated = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 1).unwrap();
    let name = "été/naïve.txt".as_bytes();
    let unicode_path = format!(
        "01{}{}",
        hex(&crc32fast::hash(name).to_le_bytes()),
        hex(name)
    );
    let expected = [
        (
            "dated.txt",
            dos(dated),
            ut(dated.timestamp()),
            String::new(),
        ),
        (
            "été/naïve.txt",
            dos(zip.created_at),
            ut(zip.created_at.timestamp()),
            unicode_path,
        ),
        (
            "given.txt",
            dos(given),
            ut(given.timestamp()),
            String::new(),
        ),
        (
            "ancient.txt",
            serde_json::json!([1980, 1, 1, 0, 0, 0]),
            ut(10),
            String::new(),
        ),
    ];
    let seen = times_and_names(&first);
    assert_eq!(seen.len(), expected.len());
    for (row, (name, dos, ut, up)) in seen.iter().zip(expected) {
        assert_eq!(row["name"], name);
        assert_eq!(row["dos"], dos, "{name}");
        assert_eq!(
            (&row["local_ut"], &row["central_ut"]),
            (&ut.clone().into(), &ut.into()),
            "{name}"
        );
        assert_eq!(
            (&row["local_up"], &row["central_up"]),
            (&up.clone().into(), &up.into()),
            "{name}"
        );
    }

    // Built again from the start: the same times, so the same bytes.
    harness.rerun(id).await;
    let again = harness.wait_finished(id).await;
    assert_eq!(
        again.status,
        ZipStatus::Succeeded,
        "{:?}",
        again.error_message
    );
    assert!(
        first == harness.store.get("times.zip").await,
        "the rebuilt archive differs"
    );
    harness.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn downloads_ahead_share_one_byte_budget_without_starving_the_entry_being_written() {
    // A budget smaller than one source: the sources ahead take all of it, and the one being
    // written still gets on with its own share.
    let harness = Harness::start_configured(|w| {
        w.download_buffer_mib = 1;
        w.downloads_ahead = 64;
    })
    .await;
    let mut routes: Vec<(String, Behaviour)> = (0..5)
        .map(|i| {
            (
                format!("big-{i}.bin"),
                Behaviour::Serve(pseudo_random(3 << 20, i)),
            )
        })
        .collect();
    // And many small ones that wait before their first byte.
    routes.extend((0..200).map(|i| {
        (
            format!("small-{i}.txt"),
            Behaviour::Slow {
                chunk: 1000,
                chunks: 1,
                pause: Duration::from_millis(50),
            },
        )
    }));
    let sources = SourceServer::start(
        routes
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect(),
    )
    .await;
    let bucket = harness.bucket().await;
    let entries: Vec<(String, &str)> = routes
        .iter()
        .map(|(name, _)| (sources.url(name), name.as_str()))
        .collect();
    let id = harness
        .submit(
            &bucket,
            "budget.zip",
            &entries,
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let read = read_with_python(&harness.store.get("budget.zip").await);
    assert_eq!(read.len(), 205);
    assert_eq!(read["big-4.bin"], pseudo_random(3 << 20, 4));
    assert_eq!(read["small-199.txt"], vec![b'x'; 1000]);
    harness.stop().await;
}

#[tokio::test]
async fn a_missing_source_fails_the_job_with_its_param_or_is_skipped_when_asked() {
    let harness = Harness::start().await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket().await;
    let entries = [
        (sources.url("a.txt"), "a.txt"),
        (sources.url("missing.txt"), "missing.txt"),
    ];

    let failing = harness
        .submit(
            &bucket,
            "fail.zip",
            &entries,
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let failed = harness.wait_finished(failing).await;
    assert_eq!(failed.status, ZipStatus::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("source_not_found"));
    assert_eq!(failed.error_type.as_deref(), Some("invalid_request_error"));
    assert_eq!(failed.error_param.as_deref(), Some("urls[1]"));
    assert!(
        !harness.store.has("fail.zip").await,
        "a failed job leaves no archive behind"
    );

    let skipping = harness
        .submit(
            &bucket,
            "skip.zip",
            &entries,
            Compression::Store,
            OnError::Skip,
        )
        .await;
    let skipped = harness.wait_finished(skipping).await;
    assert_eq!(
        skipped.status,
        ZipStatus::Succeeded,
        "{:?}",
        skipped.error_message
    );
    assert_eq!(skipped.result_entries, Some(1));
    let read = read_with_python(&harness.store.get("skip.zip").await);
    assert_eq!(read.keys().collect::<Vec<_>>(), ["a.txt"]);
    let mut conn = harness.db.connect().await;
    let left_out = Zip::skipped_entries(&mut conn, &[skipping]).await.unwrap();
    assert_eq!(left_out.len(), 1);
    assert_eq!(left_out[0].error_code.as_deref(), Some("source_not_found"));

    // Skipping every source leaves nothing to archive: a failure, not an empty archive.
    let nothing = harness
        .submit(
            &bucket,
            "nothing.zip",
            &[
                (sources.url("missing.txt"), "missing.txt"),
                (sources.url("gone.txt"), "gone.txt"),
            ],
            Compression::Store,
            OnError::Skip,
        )
        .await;
    let nothing_left = harness.wait_finished(nothing).await;
    assert_eq!(nothing_left.status, ZipStatus::Failed);
    assert_eq!(
        nothing_left.error_code.as_deref(),
        Some("all_sources_skipped")
    );
    assert_eq!(
        nothing_left.error_type.as_deref(),
        Some("invalid_request_error")
    );
    let left_out = Zip::skipped_entries(&mut conn, &[nothing]).await.unwrap();
    assert_eq!(left_out.len(), 2, "each source's reason is kept");
    // And reported: the job object (the API's and the webhook's) lists them under `error`.
    let bucket_ref = zipkit_domain::views::BucketRef {
        service: Service::S3,
        name: BucketName::parse("any").unwrap(),
    };
    let object =
        zipkit_domain::views::ZipObject::new(nothing_left.clone(), bucket_ref, None, left_out);
    let object = serde_json::to_value(&object).unwrap();
    let reported: Vec<(&str, &str)> = object["error"]["skipped"]
        .as_array()
        .expect("error.skipped")
        .iter()
        .map(|s| (s["filename"].as_str().unwrap(), s["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reported,
        [
            ("missing.txt", "source_not_found"),
            ("gone.txt", "source_not_found")
        ],
        "{object}"
    );
    assert!(
        !harness.store.has("nothing.zip").await,
        "no empty archive is written"
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_egress_policy_refuses_internal_sources_in_every_form_and_allows_exactly_the_listed_network()
 {
    // The policy lists only 127.0.0.3/32: the store is reached there through a forwarder, and
    // one source server listens there; the other listens on 127.0.0.1, outside the list.
    let (harness, bucket, _store) = Harness::start_guarded().await;
    let internal = SourceServer::start(vec![(
        "a.txt",
        Behaviour::Serve(b"secret internal data".to_vec()),
    )])
    .await;
    let by_address = internal.url("a.txt");
    let port = by_address
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let by_name = by_address.replace("127.0.0.1", "localhost");
    let allowed = SourceServer::start_on(
        "127.0.0.3",
        vec![
            ("ok.txt", Behaviour::Serve(b"public enough".to_vec())),
            ("to-address", Behaviour::Redirect(by_address.clone())),
            ("to-name", Behaviour::Redirect(by_name.clone())),
        ],
    )
    .await;

    for url in [
        by_address.clone(),
        by_name,
        format!("http://2130706433:{port}/files/a.txt"),
        format!("http://0x7f.1:{port}/files/a.txt"),
        format!("http://0177.0.0.1:{port}/files/a.txt"),
        format!("http://[::ffff:127.0.0.1]:{port}/files/a.txt"),
        allowed.url("to-address"),
        allowed.url("to-name"),
    ] {
        let id = harness
            .submit(
                &bucket,
                "guarded.zip",
                &[(url.clone(), "a.txt")],
                Compression::Store,
                OnError::Fail,
            )
            .await;
        let zip = harness.wait_finished(id).await;
        assert_eq!(zip.status, ZipStatus::Failed, "{url}");
        assert_eq!(
            zip.error_code.as_deref(),
            Some("source_address_forbidden"),
            "{url}: {:?}",
            zip.error_message
        );
        assert_eq!(zip.error_param.as_deref(), Some("urls[0]"));
    }
    assert_eq!(
        internal.hits("a.txt"),
        0,
        "the internal source was never contacted"
    );
    assert_eq!(allowed.hits("to-address"), 1);

    // The listed network works, for the store and for a source.
    let id = harness
        .submit(
            &bucket,
            "allowed.zip",
            &[(allowed.url("ok.txt"), "ok.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let read = read_with_python(&harness.store.get("allowed.zip").await);
    assert_eq!(read["ok.txt"], b"public enough");
    harness.stop().await;
}

#[tokio::test]
async fn a_bucket_endpoint_outside_the_egress_policy_fails_the_job_without_a_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let harness = Harness::start_full(|_| {}, |url| url, EgressSettings::default()).await;
    let bucket = harness.bucket_at(&endpoint).await;
    let id = harness
        .submit(
            &bucket,
            "never.zip",
            &[("https://example.com/a.txt".to_owned(), "a.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(
        zip.error_code.as_deref(),
        Some("bucket_endpoint_forbidden"),
        "{:?}",
        zip.error_message
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "nothing connected to the internal endpoint"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_job_cancelled_while_processing_stops_within_seconds_and_writes_no_object() {
    let harness = Harness::start().await;
    let pause = Duration::from_millis(300);
    let sources = SourceServer::start(vec![(
        "slow.bin",
        Behaviour::Slow {
            chunk: 64 * 1024,
            chunks: 200,
            pause,
        },
    )])
    .await;
    let bucket = harness.bucket().await;
    let id = harness
        .submit(
            &bucket,
            "cancelled.zip",
            &[(sources.url("slow.bin"), "slow.bin")],
            Compression::Store,
            OnError::Fail,
        )
        .await;

    let mut conn = harness.db.connect().await;
    for _ in 0..100 {
        if Zip::find_any(&mut conn, id).await.unwrap().unwrap().status == ZipStatus::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..100 {
        if sources.chunks_sent("slow.bin") >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sources.chunks_sent("slow.bin") >= 3,
        "bytes are flowing before the cancel"
    );
    let cancelled_at = std::time::Instant::now();
    let zip = Zip::cancel(&mut conn, bucket.project_id, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(zip.status, ZipStatus::Cancelled);

    // The worker notices and lets go of the source: no more chunks are sent.
    let mut stopped_after = None;
    let mut last = sources.chunks_sent("slow.bin");
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(700)).await; // over two of the source's pauses
        let now = sources.chunks_sent("slow.bin");
        if now == last {
            stopped_after = Some(cancelled_at.elapsed());
            break;
        }
        last = now;
    }
    let stopped_after = stopped_after.expect("the download stopped");
    assert!(
        last < 200,
        "the source was not read to its end ({last} of 200 chunks)"
    );
    assert!(
        stopped_after < Duration::from_secs(8),
        "stopped within seconds: {stopped_after:?}"
    );
    let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(zip.status, ZipStatus::Cancelled, "cancel is final");
    assert!(
        !harness.store.has("cancelled.zip").await,
        "no archive was completed"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_source_that_fails_then_recovers_is_retried_and_one_that_keeps_failing_is_not_forever() {
    let harness = Harness::start().await;
    let sources = SourceServer::start(vec![
        (
            "flaky.txt",
            Behaviour::FailThenServe(2, b"eventually".to_vec()),
        ),
        ("down.txt", Behaviour::Status(503)),
    ])
    .await;
    let bucket = harness.bucket().await;
    let id = harness
        .submit(
            &bucket,
            "flaky.zip",
            &[(sources.url("flaky.txt"), "flaky.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(sources.hits("flaky.txt"), 3, "two 500s, then the file");
    assert_eq!(
        read_with_python(&harness.store.get("flaky.zip").await)["flaky.txt"],
        b"eventually"
    );

    let id = harness
        .submit(
            &bucket,
            "down.zip",
            &[(sources.url("down.txt"), "down.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_unavailable"));
    assert_eq!(
        sources.hits("down.txt"),
        zipkit_worker::download::ATTEMPTS as usize
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_job_whose_worker_is_killed_mid_job_is_finished_by_another_worker() {
    let harness = Harness::services_only().await;
    let chunks = 40;
    let sources = SourceServer::start(vec![(
        "slow.bin",
        Behaviour::Slow {
            chunk: 64 * 1024,
            chunks,
            pause: Duration::from_millis(100),
        },
    )])
    .await;
    let bucket = harness.bucket().await;
    let mut first = harness.spawn_binary();
    let id = harness
        .submit(
            &bucket,
            "takeover.zip",
            &[(sources.url("slow.bin"), "slow.bin")],
            Compression::Store,
            OnError::Fail,
        )
        .await;

    // Wait until the first worker is mid-download, then kill it without warning.
    for _ in 0..200 {
        if sources.chunks_sent("slow.bin") >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sources.chunks_sent("slow.bin") >= 5,
        "the first worker started downloading"
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let _second = harness.spawn_binary();
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2, "claimed once by each worker");
    let read = read_with_python(&harness.store.get("takeover.zip").await);
    assert_eq!(read["slow.bin"].len(), chunks * 64 * 1024);
    assert_eq!(
        sources.hits("slow.bin"),
        2,
        "downloaded again from the start by the second worker"
    );
}

/// A 5 MiB-part job on a worker binary behind the counting store proxy: `a.bin` (7 MiB, in parts
/// 1 and 2), `c.bin` (9 MiB, fast, from part 2 into part 4) and `b.bin` (16 MiB, trickling), so
/// the parts holding `a.bin`'s and `c.bin`'s headers go up once those entries are done (parts 1
/// to 3), and part 4, which holds `b.bin`'s, waits. The first worker is killed (SIGKILL) once two
/// parts from the first are recorded (a part is recorded once the next is on its way) and
/// `c.bin` is recorded done; `between` runs before a second worker takes the job over.
/// Returns the finished job, the first upload's id, the archive and the sources (still served).
async fn killed_after_two_parts(
    harness: &Harness,
    proxy: &zipkit_test_support::store_proxy::StoreProxy,
    sources: Sources,
    compression: Compression,
    between: impl FnOnce(&str),
) -> (Zip, String, Vec<u8>, SourceServer) {
    let first = Interruption::Kill;
    takeover_after_parts(harness, proxy, sources, compression, 2, between, first).await
}

/// The sources of a takeover test: `a.bin`, and how `c.bin` (9 MiB of `pseudo_random(_, 3)`,
/// the entry cut by the end of the uploaded parts) answers: what it serves after the first
/// request, and whether it honours `Range`. `b.bin` (16 MiB of `pseudo_random(_, 2)`, trickled)
/// keeps the job going until the first worker is taken out.
struct Sources {
    a: Behaviour,
    c_then: Option<Vec<u8>>,
    c_ranges: bool,
}

impl Sources {
    fn a(a: Behaviour) -> Self {
        Self {
            a,
            c_then: None,
            c_ranges: true,
        }
    }
}

/// Where `c.bin`'s data starts in a stored takeover archive: after `a.bin`'s header (30 bytes, its
/// name and its 9-byte extended timestamp), its 7 MiB, and `c.bin`'s header.
const C_DATA_START: usize = (30 + 5 + 9) + 7 * 1024 * 1024 + (30 + 5 + 9);

/// How the first worker is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interruption {
    /// SIGKILL: the process is gone.
    Kill,
    /// SIGSTOP, and SIGCONT once the second worker has claimed the job: the first comes back
    /// to find its lease lost (a long GC-like pause, a frozen node).
    Pause,
    /// SIGTERM (scale-in, a rollout) with a lease of a minute: the first worker must hand the
    /// job back itself, and exit, for the second to continue it within seconds.
    Term,
}

/// As `killed_after_two_parts`, the first worker taken out by `interruption` once `parts` parts
/// are recorded.
async fn takeover_after_parts(
    harness: &Harness,
    proxy: &zipkit_test_support::store_proxy::StoreProxy,
    Sources {
        a,
        c_then,
        c_ranges,
    }: Sources,
    compression: Compression,
    parts: usize,
    between: impl FnOnce(&str),
    interruption: Interruption,
) -> (Zip, String, Vec<u8>, SourceServer) {
    let mib = 1024 * 1024;
    let sources = SourceServer::start(vec![
        ("a.bin", a),
        (
            "c.bin",
            Behaviour::Trickle {
                bytes: pseudo_random(9 * mib, 3),
                chunk: 256 * 1024,
                pause: Duration::from_millis(1),
                then: c_then,
                ranges: c_ranges,
            },
        ),
        (
            "b.bin",
            Behaviour::Trickle {
                bytes: pseudo_random(16 * mib, 2),
                chunk: 256 * 1024,
                pause: Duration::from_millis(100),
                then: None,
                ranges: true,
            },
        ),
    ])
    .await;
    let bucket = harness.bucket_at(proxy.url()).await;
    // One job at a time: the broker delivers nothing more to the first worker while it holds
    // this job's message (a paused worker would otherwise take the job's next message too).
    let lease = if interruption == Interruption::Term {
        "60"
    } else {
        "3"
    };
    let mut first = harness.spawn_binary_with(&[
        ("ZIPKIT__WORKER__CONCURRENCY", "1"),
        ("ZIPKIT__WORKER__LEASE_SECS", lease),
    ]);
    let id = harness
        .submit(
            &bucket,
            "takeover.zip",
            &[
                (sources.url("a.bin"), "a.bin"),
                (sources.url("c.bin"), "c.bin"),
                (sources.url("b.bin"), "b.bin"),
            ],
            compression,
            OnError::Fail,
        )
        .await;
    let mut conn = harness.db.connect().await;
    let mut upload_id = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
        let c_done = Zip::recorded_entries(&mut conn, id)
            .await
            .unwrap()
            .iter()
            .any(|e| e.index == 1 && e.state == zipkit_domain::EntryState::Done);
        if let Some(upload) = &zip.upload_id {
            let recorded = Zip::parts(&mut conn, id, upload).await.unwrap();
            let from_first = (1..)
                .zip(&recorded)
                .take_while(|(n, p)| p.part_number == *n)
                .count();
            if from_first >= parts && c_done {
                upload_id = Some(upload.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let upload_id = upload_id.unwrap_or_else(|| {
        panic!(
            "the first worker did not record {parts} parts; the store saw {:?}",
            proxy.operations()
        )
    });
    let first_pid = first.0.id().to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([format!("-{name}"), first_pid.clone()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    };
    match interruption {
        Interruption::Kill => signal("KILL"),
        Interruption::Pause => signal("STOP"),
        Interruption::Term => {
            let asked = std::time::Instant::now();
            signal("TERM");
            let (status, _) =
                zipkit_test_support::process::wait_for_exit(&mut first.0, Duration::from_secs(30));
            assert!(status.success(), "exit {status:?}");
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "the job was handed back at once, not finished first ({:?})",
                asked.elapsed()
            );
        }
    }
    assert!(
        sources.chunks_sent("b.bin") < 64,
        "killed while b.bin was still downloading"
    );
    between(&upload_id);
    let handed_back = std::time::Instant::now();
    let _second = harness.spawn_binary_with(&[("ZIPKIT__WORKER__LEASE_SECS", lease)]);
    if interruption == Interruption::Pause {
        // The paused worker's connection stays open, so its message is not redelivered: send
        // the job again, as it would come back once the broker gave up on that connection.
        harness.publish(id).await;
        // Wake the first worker once the second holds the job and is continuing the upload.
        for _ in 0..300 {
            let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
            if zip.attempts == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal("CONT");
    }
    let zip = harness.wait_finished(id).await;
    if interruption == Interruption::Term {
        // Another worker continued it without waiting out the minute's lease.
        assert!(
            handed_back.elapsed() < Duration::from_secs(30),
            "{:?}",
            handed_back.elapsed()
        );
    }
    if interruption == Interruption::Pause {
        // Its heartbeat (every second) finds the lease gone; give it time to act on it.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    drop(first);
    let archive = harness.store.get("takeover.zip").await;
    (zip, upload_id, archive, sources)
}

/// How often the store received `operation` for part `part` of `upload_id` (and answered 200).
fn part_uploads(
    proxy: &zipkit_test_support::store_proxy::StoreProxy,
    upload_id: &str,
    part: i32,
) -> usize {
    proxy
        .calls()
        .iter()
        .filter(|c| {
            c.operation == "UploadPart"
                && c.part == Some(part)
                && c.upload_id.as_deref() == Some(upload_id)
                && c.status == 200
        })
        .count()
}

/// After an interruption at two parts: those parts were sent once, the one upload was
/// continued and completed (never aborted), and the archive holds `a.bin`, `c.bin` and all of
/// `b.bin`.
fn assert_the_upload_was_continued(
    proxy: &zipkit_test_support::store_proxy::StoreProxy,
    upload_id: &str,
    archive: &[u8],
    a: &[u8],
) {
    for part in [1, 2] {
        assert_eq!(
            part_uploads(proxy, upload_id, part),
            1,
            "part {part} was uploaded before the interruption and not again"
        );
    }
    assert_eq!(
        proxy.count("CreateMultipartUpload"),
        1,
        "the first upload was continued: {:?}",
        proxy.operations()
    );
    assert_eq!(proxy.count("CompleteMultipartUpload"), 1);
    assert_eq!(proxy.count("AbortMultipartUpload"), 0);
    let read = read_with_python(archive);
    assert_eq!(read["a.bin"], a);
    assert_eq!(read["c.bin"], pseudo_random(9 * 1024 * 1024, 3));
    assert_eq!(read["b.bin"], pseudo_random(16 * 1024 * 1024, 2));
}

#[tokio::test]
async fn a_job_taken_over_after_a_kill_continues_its_upload_without_sending_a_part_twice() {
    for compression in [Compression::Store, Compression::Deflate] {
        let harness = Harness::services_only().await;
        let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
        let a = pseudo_random(7 * 1024 * 1024, 1);
        let (zip, upload_id, archive, sources) = killed_after_two_parts(
            &harness,
            &proxy,
            Sources::a(Behaviour::Serve(a.clone())),
            compression,
            |_| {},
        )
        .await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        assert_eq!(zip.attempts, 2, "claimed once by each worker");
        assert_eq!(
            sources.hits("a.bin"),
            1,
            "{compression:?}: a.bin is wholly inside the uploaded parts: not downloaded again"
        );
        assert_eq!(
            sources.ranges_asked("b.bin"),
            [None, None],
            "{compression:?}: b.bin, whose header's part was held back, is built again from its \
             start"
        );
        assert_eq!((zip.files_done, zip.result_entries), (3, Some(3)));
        assert_the_upload_was_continued(&proxy, &upload_id, &archive, &a);

        // Byte for byte what one uninterrupted run of the job builds.
        harness.rerun(zip.id).await;
        let _worker = harness.spawn_binary();
        let again = harness.wait_finished(zip.id).await;
        assert_eq!(again.status, ZipStatus::Succeeded);
        assert_eq!(again.attempts, 1);
        let uninterrupted = harness.store.get("takeover.zip").await;
        assert!(
            uninterrupted == archive,
            "{compression:?}: the resumed archive differs from an uninterrupted run's"
        );
    }
}

#[tokio::test]
async fn a_stored_source_cut_by_the_uploaded_parts_is_picked_up_with_range_at_the_last_part() {
    let mib = 1024 * 1024;
    let a = pseudo_random(7 * mib, 1);
    let (b, c) = (pseudo_random(16 * mib, 2), pseudo_random(9 * mib, 3));
    // Part 3 (the last uploaded) starts at 10 MiB, inside c.bin, done and recorded with its
    // CRC-32: the source is asked for from there on.
    let from = 10 * mib - C_DATA_START;
    for c_ranges in [true, false] {
        let harness = Harness::services_only().await;
        let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
        let sources = Sources {
            c_ranges,
            ..Sources::a(Behaviour::Serve(a.clone()))
        };
        let (zip, upload_id, archive, sources) = takeover_after_parts(
            &harness,
            &proxy,
            sources,
            Compression::Store,
            3,
            |_| {},
            Interruption::Kill,
        )
        .await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        assert_eq!(sources.hits("a.bin"), 1, "kept: not downloaded again");

        let asked = sources.ranges_asked("c.bin");
        if c_ranges {
            assert_eq!(asked, [None, Some(format!("bytes={from}-"))]);
        } else {
            // No ETag to send as If-Range: built again from its start.
            assert_eq!(asked, [None, None], "{:?}", proxy.operations());
        }
        for part in [1, 2, 3] {
            assert_eq!(
                part_uploads(&proxy, &upload_id, part),
                1,
                "ranges {c_ranges}: part {part} was uploaded before the kill and not again"
            );
        }
        assert_eq!(proxy.count("CreateMultipartUpload"), 1);
        assert_eq!(proxy.count("CompleteMultipartUpload"), 1);
        assert_eq!(proxy.count("AbortMultipartUpload"), 0);
        let read = read_with_python(&archive);
        assert!(read["a.bin"] == a && read["c.bin"] == c && read["b.bin"] == b);

        harness.rerun(zip.id).await;
        let _worker = harness.spawn_binary();
        assert_eq!(harness.wait_finished(zip.id).await.attempts, 1);
        assert!(
            harness.store.get("takeover.zip").await == archive,
            "ranges {c_ranges}: the resumed archive differs from an uninterrupted run's"
        );
    }
}

#[tokio::test]
async fn a_worker_that_wakes_up_to_find_its_job_taken_over_leaves_the_upload_alone() {
    let harness = Harness::services_only().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let a = pseudo_random(7 * 1024 * 1024, 1);
    let (zip, _, archive, _sources) = takeover_after_parts(
        &harness,
        &proxy,
        Sources::a(Behaviour::Serve(a.clone())),
        Compression::Store,
        2,
        |_| {},
        Interruption::Pause,
    )
    .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2, "the second worker took the job over");
    assert_eq!(
        proxy.count("AbortMultipartUpload"),
        0,
        "the paused worker did not abort the upload the new owner continued: {:?}",
        proxy.operations()
    );
    assert_eq!(proxy.count("CreateMultipartUpload"), 1);
    assert_eq!(read_with_python(&archive)["a.bin"], a);
}

#[tokio::test]
async fn a_job_taken_over_whose_source_changed_starts_a_new_upload_and_aborts_the_old() {
    let mib = 1024 * 1024;
    let a = pseudo_random(7 * mib, 1);

    // Killed once parts 1 to 3 are up, c.bin (done, cut by the end of part 3) is asked for from
    // 10 MiB on with If-Range, which its new ETag refuses: built again from its start, it
    // differs from part 2 or 3, checked once its header has its values. Either way the change
    // is seen, wherever it is.
    for changed_at in [1000, 3 * mib] {
        let harness = Harness::services_only().await;
        let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
        let mut then = pseudo_random(9 * mib, 3);
        then[changed_at] ^= 0xFF;
        let sources = Sources {
            c_then: Some(then.clone()),
            ..Sources::a(Behaviour::Serve(a.clone()))
        };
        let kill = Interruption::Kill;
        let (zip, upload_id, archive, sources) = takeover_after_parts(
            &harness,
            &proxy,
            sources,
            Compression::Store,
            3,
            |_| {},
            kill,
        )
        .await;

        assert_eq!(
            sources.hits("a.bin"),
            2,
            "kept on takeover, downloaded again for the new upload"
        );
        // The first worker's request, the second's (with the range, refused: then again from
        // the start), and the new upload's.
        let range = Some(format!("bytes={}-", 10 * mib - C_DATA_START));
        assert_eq!(
            sources.ranges_asked("c.bin"),
            [None, range, None, None],
            "changed at {changed_at}"
        );
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        assert_eq!(proxy.count("CreateMultipartUpload"), 2, "a new upload");
        let aborted: Vec<_> = proxy
            .calls()
            .into_iter()
            .filter(|c| c.operation == "AbortMultipartUpload")
            .collect();
        assert_eq!(aborted.len(), 1, "{:?}", proxy.operations());
        assert_eq!(aborted[0].upload_id.as_deref(), Some(upload_id.as_str()));
        let read = read_with_python(&archive);
        assert_eq!(read["a.bin"], a);
        assert!(
            read["c.bin"] == then,
            "the source as it is now, never a mix"
        );
    }
}

#[tokio::test]
async fn a_job_taken_over_whose_upload_the_store_lost_starts_a_new_one() {
    let harness = Harness::services_only().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let a = pseudo_random(7 * 1024 * 1024, 1);
    let (zip, _, archive, _) = killed_after_two_parts(
        &harness,
        &proxy,
        Sources::a(Behaviour::Serve(a.clone())),
        Compression::Deflate,
        |upload_id| {
            for operation in ["UploadPart", "CompleteMultipartUpload"] {
                proxy.refuse_upload(operation, upload_id, 404, "NoSuchUpload");
            }
        },
    )
    .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2);
    assert_eq!(proxy.count("CreateMultipartUpload"), 2, "a new upload");
    assert_eq!(read_with_python(&archive)["a.bin"], a);
}

#[tokio::test]
async fn the_sweeper_aborts_uploads_nobody_will_complete_and_only_those() {
    use zipkit_domain::models::{JobError, ZipOutcome};
    let harness = Harness::services_only().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let bucket = harness.bucket_at(proxy.url()).await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let mut conn = harness.db.connect().await;
    // Three jobs whose worker started an upload: one then failed (its worker died before it could
    // abort), one's worker died long ago, one is alive.
    let mut uploads = Vec::new();
    for (key, lease) in [
        ("failed.zip", chrono::Duration::seconds(60)),
        ("abandoned.zip", chrono::Duration::seconds(-7200)),
        ("alive.zip", chrono::Duration::seconds(60)),
    ] {
        let id = harness
            .submit(
                &bucket,
                key,
                &[(sources.url("a.txt"), "a.txt")],
                Compression::Store,
                OnError::Fail,
            )
            .await;
        Zip::claim(&mut conn, id, "gone-worker", lease)
            .await
            .unwrap()
            .unwrap();
        let started = harness
            .store
            .client()
            .create_multipart_upload()
            .bucket(harness.store.name())
            .key(key)
            .send()
            .await
            .unwrap();
        let upload_id = started.upload_id().unwrap().to_owned();
        assert!(
            Zip::set_upload_id(&mut conn, id, "gone-worker", &upload_id, "plan")
                .await
                .unwrap()
        );
        uploads.push((id, upload_id));
    }
    let failure = ZipOutcome::Failed(JobError {
        error_type: "api_error".into(),
        code: "internal_error".into(),
        message: "the worker failed".into(),
        param: None,
    });
    Zip::finish(&mut conn, uploads[0].0, "gone-worker", &failure)
        .await
        .unwrap()
        .unwrap();

    let sweeper = zipkit_worker::upload::sweeper::OrphanSweeper {
        pool: zipkit_domain::db::pool(&DatabaseSettings {
            url: SecretString::from(harness.db.url().to_owned()),
            max_connections: 2,
            connect_timeout_secs: 2,
        }),
        keyring: std::sync::Arc::new(KeyRing::from_settings(&harness.crypto).unwrap()),
        buckets: zipkit_storage::BucketClients::new(zipkit_egress::EgressPolicy::new(&loopback())),
        timeouts: zipkit_worker::upload::StoreTimeouts { min_rate: 1 << 20 },
        stale: Duration::from_secs(3600),
        every: Duration::from_secs(300),
    };
    assert_eq!(sweeper.sweep_once().await, 2);
    let mut aborted: Vec<String> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "AbortMultipartUpload" && c.status == 204)
        .filter_map(|c| c.upload_id)
        .collect();
    aborted.sort();
    let mut expected = vec![uploads[0].1.clone(), uploads[1].1.clone()];
    expected.sort();
    assert_eq!(
        aborted, expected,
        "the failed job's and the abandoned job's, not the live one's"
    );
    assert_eq!(sweeper.sweep_once().await, 0, "each is tried once");
}

#[tokio::test]
async fn three_workers_build_thirty_jobs_each_exactly_once() {
    let harness = Harness::services_only().await;
    let files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| {
            (
                format!("f{i}.txt"),
                format!("file {i} ").repeat(100 + i).into_bytes(),
            )
        })
        .collect();
    let sources = SourceServer::start(
        files
            .iter()
            .map(|(n, b)| (n.as_str(), Behaviour::Serve(b.clone())))
            .collect(),
    )
    .await;
    let bucket = harness.bucket().await;
    let _workers = [
        harness.spawn_binary(),
        harness.spawn_binary(),
        harness.spawn_binary(),
    ];
    let mut ids = Vec::new();
    for (name, _) in &files {
        let key = format!("many/{name}.zip");
        ids.push((
            harness
                .submit(
                    &bucket,
                    &key,
                    &[(sources.url(name), name.as_str())],
                    Compression::Deflate,
                    OnError::Fail,
                )
                .await,
            key,
        ));
    }
    for ((id, key), (name, bytes)) in ids.iter().zip(&files) {
        let zip = harness.wait_finished(*id).await;
        assert_eq!(
            zip.status,
            ZipStatus::Succeeded,
            "{name}: {:?}",
            zip.error_message
        );
        assert_eq!(zip.attempts, 1, "{name} was claimed once");
        assert_eq!(
            &read_with_python(&harness.store.get(key).await)[name.as_str()],
            bytes
        );
        assert_eq!(sources.hits(name), 1, "{name} was downloaded once");
    }
}

#[tokio::test]
async fn sigterm_hands_the_job_back_at_once_and_another_worker_continues_it_from_its_last_part() {
    let harness = Harness::services_only().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let a = pseudo_random(7 * 1024 * 1024, 1);
    let (zip, upload_id, archive, sources) = takeover_after_parts(
        &harness,
        &proxy,
        Sources::a(Behaviour::Serve(a.clone())),
        Compression::Store,
        2,
        |_| {},
        Interruption::Term,
    )
    .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(
        zip.attempts, 1,
        "a hand-back is not a failed attempt: only the finishing claim counts"
    );
    assert_eq!(zip.last_failure, None);
    assert_eq!(
        sources.hits("b.bin"),
        2,
        "the second worker built the rest of the job"
    );
    assert_the_upload_was_continued(&proxy, &upload_id, &archive, &a);
}

#[tokio::test]
async fn revoked_bucket_keys_fail_the_job_at_once_with_the_providers_code() {
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 3;
        w.retry_backoff_secs = 1;
    })
    .await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let keyring = KeyRing::from_settings(&harness.crypto).unwrap();
    let mut conn = harness.db.connect().await;
    // The secret changes at the provider after the bucket was saved; or the key is deleted.
    let cases = [
        (
            (s3_access_key(), "rotated-elsewhere".to_owned()),
            "SignatureDoesNotMatch",
            "The secret access key does not match the access key ID. Check that it was copied completely.",
        ),
        // AWS answers an unknown key with InvalidAccessKeyId, the local store with a 403 of
        // its own (NotSignedUp): whichever, it is kept.
        (
            ("AKIADELETEDKEY0000".to_owned(), s3_secret_key()),
            "",
            "The credentials are valid but may not write to this bucket.",
        ),
    ];
    for ((key, secret), provider_code, words) in cases {
        let bucket = harness.bucket().await;
        let revoked = BucketCredentials {
            access_key_id: SecretString::from(key),
            secret_access_key: SecretString::from(secret),
        };
        Bucket::update_credentials(
            &mut conn,
            &keyring,
            bucket.project_id,
            bucket.id,
            &revoked,
            None,
        )
        .await
        .unwrap()
        .unwrap();
        let id = harness
            .submit(
                &bucket,
                "denied.zip",
                &[(sources.url("a.txt"), "a.txt")],
                Compression::Store,
                OnError::Fail,
            )
            .await;
        let zip = harness.wait_finished(id).await;
        assert_eq!(zip.status, ZipStatus::Failed);
        assert_eq!(
            zip.error_code.as_deref(),
            Some("bucket_access_denied"),
            "{:?}",
            zip.error_message
        );
        let message = zip.error_message.unwrap_or_default();
        assert!(message.starts_with(words), "{message}");
        assert!(
            message.contains(&format!("PutObject answered {provider_code}")),
            "the provider's code is kept: {message}"
        );
        assert!(!message.contains("test upload"), "{message}");
        assert_eq!(zip.error_type.as_deref(), Some("api_error"));
        assert_eq!(zip.error_param, None);
        assert_eq!(zip.attempts, 1, "not retried: the key will not come back");
    }
    assert_eq!(harness.broker.depth("zipkit.jobs.dead").await, 0);
    harness.stop().await;
}

#[tokio::test]
async fn a_store_that_answers_the_same_500_again_is_not_asked_a_third_time() {
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 5;
        w.retry_backoff_secs = 1;
    })
    .await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket_at(proxy.url()).await;
    proxy.refuse("PutObject", 500, "InternalError", None);
    let id = harness
        .submit(
            &bucket,
            "refused.zip",
            &[(sources.url("a.txt"), "a.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("bucket_unavailable"));
    assert_eq!(
        zip.attempts, 2,
        "retried once; the same answer again is final"
    );
    assert!(
        zip.error_message
            .as_deref()
            .is_some_and(|m| m.contains("InternalError")),
        "{:?}",
        zip.error_message
    );
    // A store that had a moment: the answer differs on the next attempt, which succeeds.
    proxy.clear();
    proxy.refuse("PutObject", 500, "InternalError", Some(3));
    let id = harness
        .submit(
            &bucket,
            "moment.zip",
            &[(sources.url("a.txt"), "a.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2);
    harness.stop().await;
}

#[tokio::test]
async fn with_skip_a_source_that_stops_before_its_length_is_left_out_and_reported() {
    // Cut before any part is full, after one part went up, and after two (parts of 5 MiB): not a
    // byte of it stays for any reader, those walking local headers included.
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 3;
        w.retry_backoff_secs = 1;
        w.part_size_mib = 5;
    })
    .await;
    let whole = pseudo_random(16 * 1024 * 1024, 7);
    let cuts = [120_000, 6 * 1024 * 1024, 11 * 1024 * 1024];
    let mut files = vec![
        ("a.txt".to_owned(), Behaviour::Serve(b"alpha".to_vec())),
        ("c.txt".to_owned(), Behaviour::Serve(b"gamma".repeat(1000))),
    ];
    for cut in cuts {
        files.push((
            format!("cut-{cut}.bin"),
            Behaviour::Truncated {
                bytes: whole.clone(),
                cut,
            },
        ));
    }
    let sources =
        SourceServer::start(files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect()).await;
    let bucket = harness.bucket().await;
    for compression in [Compression::Store, Compression::Deflate] {
        for cut in cuts {
            let key = format!("cut-{cut}-{compression:?}.zip");
            let cut_name = format!("cut-{cut}.bin");
            let id = harness
                .submit(
                    &bucket,
                    &key,
                    &[
                        (sources.url("a.txt"), "a.txt"),
                        (sources.url(&cut_name), "cut.bin"),
                        (sources.url("c.txt"), "c.txt"),
                    ],
                    compression,
                    OnError::Skip,
                )
                .await;
            let zip = harness.wait_finished(id).await;
            assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
            assert_eq!(zip.attempts, 1);
            assert_eq!(zip.result_entries, Some(2));
            let read = read_with_python(&harness.store.get(&key).await);
            assert_eq!(
                read.keys().collect::<Vec<_>>(),
                ["a.txt", "c.txt"],
                "{compression:?}, cut at {cut}"
            );
            assert_eq!(read["c.txt"], b"gamma".repeat(1000));
            let mut conn = harness.db.connect().await;
            let left_out = Zip::skipped_entries(&mut conn, &[id]).await.unwrap();
            assert_eq!(left_out.len(), 1);
            assert_eq!(
                left_out[0].error_code.as_deref(),
                Some("source_unreachable")
            );
        }
    }
    harness.stop().await;
}

/// Each entry's local header as (name, "version needed", the IDs of its extra fields).
fn local_headers(archive: &[u8]) -> Vec<(String, u16, Vec<u16>)> {
    let script = r#"
import json, struct, sys, zipfile
raw = open(sys.argv[1], 'rb').read()
rows = []
for i in zipfile.ZipFile(sys.argv[1]).infolist():
    o = i.header_offset
    n, m = struct.unpack('<HH', raw[o+26:o+30])
    extra, ids = raw[o+30+n:o+30+n+m], []
    while len(extra) >= 4:
        kind, size = struct.unpack('<HH', extra[:4]); ids.append(kind); extra = extra[4+size:]
    rows.append([i.filename, struct.unpack('<H', raw[o+4:o+6])[0], ids])
print(json.dumps(rows))
"#;
    python_json(archive, script)
}

/// An entry of `sources`' `route`, named `name`, whose request declares `size`.
fn sized_entry(sources: &SourceServer, route: &str, name: &str, size: Option<i64>) -> NewZipEntry {
    NewZipEntry {
        url: SourceUrl::parse(&sources.url(route)).unwrap(),
        filename: EntryName::parse(name).unwrap(),
        given_filename: None,
        modified_at: None,
        declared_size: size,
    }
}

#[tokio::test]
async fn a_declared_size_decides_zip64_and_the_source_must_send_exactly_that() {
    let harness = Harness::start().await;
    let data = pseudo_random(300 * 1024, 5);
    let sources = SourceServer::start(vec![
        ("chunked", Behaviour::Chunked(data.clone())),
        ("short", Behaviour::Chunked(vec![b's'; 100])),
        ("long", Behaviour::Chunked(vec![b'l'; 300])),
        ("announced", Behaviour::Serve(vec![b'a'; 50])),
    ])
    .await;
    let bucket = harness.bucket().await;
    let entry =
        |route: &str, name: &str, size: Option<i64>| sized_entry(&sources, route, name, size);
    let entries = vec![
        entry("chunked", "declared.bin", Some(data.len() as i64)),
        entry("chunked", "undeclared.bin", None),
        entry("short", "short.bin", Some(200)),
        entry("long", "long.bin", Some(200)),
        entry("announced", "announced.bin", Some(60)),
    ];
    let id = harness
        .submit_entries(
            &bucket,
            "sizes.zip",
            entries,
            Compression::Store,
            OnError::Skip,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let archive = harness.store.get("sizes.zip").await;
    let read = read_with_python(&archive);
    assert_eq!(read["declared.bin"], data);
    assert_eq!(read["undeclared.bin"], data);
    // Declared: no room for ZIP64 at all. Unknown: room kept, and filled with padding.
    assert_eq!(
        local_headers(&archive),
        [
            ("declared.bin".to_owned(), 20, vec![0x5455]),
            ("undeclared.bin".to_owned(), 20, vec![0xD935, 0x5455]),
        ]
    );
    let mut conn = harness.db.connect().await;
    let left_out = Zip::skipped_entries(&mut conn, &[id]).await.unwrap();
    let mut reasons: Vec<(String, Option<String>, Option<String>)> = left_out
        .into_iter()
        .map(|e| (e.filename.into_string(), e.error_code, e.error_message))
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    for ((name, code, message), (expected_name, what)) in reasons.iter().zip([
        ("announced.bin", "the source announces 50"),
        ("long.bin", "the source sent more"),
        ("short.bin", "the source sent 100"),
    ]) {
        assert_eq!(name, expected_name);
        assert_eq!(code.as_deref(), Some("source_size_mismatch"), "{name}");
        let message = message.as_deref().unwrap_or_default();
        assert!(
            message.contains(what) && message.contains("declared"),
            "{name}: {message}"
        );
    }
    // Worked out again after each source left out: the size of the archive in the bucket.
    let expected = Zip::expected_size(&mut conn, id).await.unwrap();
    assert_eq!(expected, Some(archive.len() as i64));
    assert_eq!(zip.result_size, expected);
    harness.stop().await;
}

#[tokio::test]
async fn the_expected_size_is_known_while_a_source_streams_and_follows_a_skipped_source() {
    let harness = Harness::start().await;
    let first = pseudo_random(100_000, 11);
    // Looks gzipped: `auto` stores it by its first bytes.
    let mut slow = pseudo_random(2 * 1024 * 1024, 12);
    slow[..2].copy_from_slice(b"\x1f\x8b");
    let cut = pseudo_random(3 * 1024 * 1024, 13);
    let sources = SourceServer::start(vec![
        ("first.jpg", Behaviour::Serve(first.clone())),
        (
            "slow.bin",
            Behaviour::Trickle {
                bytes: slow.clone(),
                chunk: 64 * 1024,
                pause: Duration::from_millis(60),
                then: None,
                ranges: false,
            },
        ),
        (
            "cut.jpg",
            Behaviour::Truncated {
                bytes: cut.clone(),
                cut: 1024 * 1024,
            },
        ),
    ])
    .await;
    let bucket = harness.bucket().await;
    let entry = |route: &str, size: Option<usize>| {
        sized_entry(&sources, route, route, size.map(|s| s as i64))
    };
    // `auto`: the photos are stored by their names with their sizes given; the slow source is
    // stored by its first bytes and gives its length when it answers. From then on the size is
    // certain, unless a source fails.
    let entries = vec![
        entry("first.jpg", Some(first.len())),
        entry("slow.bin", None),
        entry("cut.jpg", Some(cut.len())),
    ];
    let id = harness
        .submit_entries(
            &bucket,
            "expected.zip",
            entries,
            Compression::Auto,
            OnError::Skip,
        )
        .await;
    let mut conn = harness.db.connect().await;
    let mut seen_while_building = Vec::new();
    let zip = loop {
        let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
        if zip.status.is_terminal() {
            break zip;
        }
        if let Some(size) = Zip::expected_size(&mut conn, id).await.unwrap()
            && seen_while_building.last() != Some(&size)
        {
            seen_while_building.push(size);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.result_entries, Some(2));
    let archive = harness.store.get("expected.zip").await;
    let size = archive.len() as i64;
    assert_eq!(zip.result_size, Some(size));
    // Worked out again once the cut source was left out: the archive's size.
    assert_eq!(Zip::expected_size(&mut conn, id).await.unwrap(), Some(size));
    // While the slow source streamed, the size counted the cut source whole: its header, its
    // bytes, its central record.
    let with_cut = size
        + cut.len() as i64
        + zipkit_zip::format::local_header_len(b"cut.jpg", false) as i64
        + zipkit_zip::format::central_header_len(b"cut.jpg", 3 << 20, 3 << 20, 0) as i64;
    assert_eq!(
        seen_while_building.first(),
        Some(&with_cut),
        "{seen_while_building:?}"
    );
    assert!(
        seen_while_building
            .iter()
            .all(|s| [with_cut, size].contains(s)),
        "{seen_while_building:?}"
    );
    read_with_python(&archive);
    harness.stop().await;
}

#[tokio::test]
async fn a_source_that_keeps_the_job_waiting_fails_for_good_after_source_wait_secs() {
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 3;
        w.retry_backoff_secs = 1;
        w.source_read_timeout_secs = 1;
        w.source_wait_secs = 3;
    })
    .await;
    let sources = SourceServer::start(vec![(
        "silent.bin",
        Behaviour::Slow {
            chunk: 1024,
            chunks: 10,
            pause: Duration::from_secs(3600),
        },
    )])
    .await;
    let bucket = harness.bucket().await;
    let started = std::time::Instant::now();
    let id = harness
        .submit(
            &bucket,
            "silent.zip",
            &[(sources.url("silent.bin"), "silent.bin")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    let took = started.elapsed();
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_stalled"));
    assert!(
        zip.error_message
            .as_deref()
            .is_some_and(|m| m.contains("worker.source_wait_secs")),
        "{:?}",
        zip.error_message
    );
    assert_eq!(zip.attempts, 1, "the job is not retried to wait again");
    assert!(took < Duration::from_secs(10), "held the job {took:?}");
    harness.stop().await;
}

#[tokio::test]
async fn a_broken_download_resumes_with_range_and_if_range() {
    let harness = Harness::start().await;
    let body = pseudo_random(3 * 1024 * 1024 + 17, 7);
    let sources = SourceServer::start(vec![(
        "big.bin",
        Behaviour::BreakThenResume {
            bytes: body.clone(),
            cut: 1024 * 1024,
        },
    )])
    .await;
    let bucket = harness.bucket().await;
    let id = harness
        .submit(
            &bucket,
            "resumed.zip",
            &[(sources.url("big.bin"), "big.bin")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(sources.hits("big.bin"), 2, "one broken request, one ranged");
    let read = read_with_python(&harness.store.get("resumed.zip").await);
    assert_eq!(read["big.bin"], body, "every byte, none twice");
    assert_eq!(zip.bytes_downloaded, body.len() as i64);
    harness.stop().await;
}

#[tokio::test]
async fn a_broken_download_without_ranges_starts_over_and_checks_the_bytes_already_written() {
    let harness = Harness::start().await;
    let body = pseudo_random(3 * 1024 * 1024 + 5, 11);
    let mut edited = body.clone();
    edited[1000] ^= 0xff; // within the part written before the break
    let sources = SourceServer::start(vec![
        (
            "same.bin",
            Behaviour::BreakThenServe {
                bytes: body.clone(),
                cut: 2 * 1024 * 1024,
                then: body.clone(),
            },
        ),
        (
            "edited.bin",
            Behaviour::BreakThenServe {
                bytes: body.clone(),
                cut: 2 * 1024 * 1024,
                then: edited,
            },
        ),
    ])
    .await;
    let bucket = harness.bucket().await;
    // The same bytes again: the entry is completed from the second download.
    let id = harness
        .submit(
            &bucket,
            "restarted.zip",
            &[(sources.url("same.bin"), "same.bin")],
            Compression::Deflate,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(sources.hits("same.bin"), 2, "one broken request, one whole");
    let read = read_with_python(&harness.store.get("restarted.zip").await);
    assert_eq!(read["same.bin"], body, "every byte, none twice");
    assert_eq!(zip.bytes_downloaded, body.len() as i64);
    // Changed bytes: the archive would mix two versions, so the job fails and writes nothing.
    let id = harness
        .submit(
            &bucket,
            "changed.zip",
            &[(sources.url("edited.bin"), "edited.bin")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_changed"));
    assert_eq!(zip.error_param.as_deref(), Some("urls[0]"));
    assert!(
        !harness.store.has("changed.zip").await,
        "no archive mixing two versions"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_stalled_source_fails_with_source_stalled() {
    let harness = Harness::start_configured(|w| {
        w.stall_window_secs = 1;
        w.stall_min_bytes = 4096;
    })
    .await;
    let sources = SourceServer::start(vec![
        (
            "trickle.bin",
            Behaviour::Slow {
                chunk: 16,
                chunks: 1000,
                pause: Duration::from_millis(100),
            },
        ),
        ("ok.txt", Behaviour::Serve(b"fine".to_vec())),
    ])
    .await;
    let bucket = harness.bucket().await;
    let started = std::time::Instant::now();
    let id = harness
        .submit(
            &bucket,
            "stalled.zip",
            &[
                (sources.url("ok.txt"), "ok.txt"),
                (sources.url("trickle.bin"), "trickle.bin"),
            ],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_stalled"));
    assert_eq!(zip.error_param.as_deref(), Some("urls[1]"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a trickle of 160 B/s is caught by the 1 s window, not the 100 s it would take"
    );
    assert!(sources.chunks_sent("trickle.bin") < 1000);
    harness.stop().await;
}

#[tokio::test]
async fn sources_over_the_size_limit_are_refused_by_length_or_while_streaming() {
    let harness = Harness::start_configured(|w| w.max_source_bytes = 1024 * 1024).await;
    let sources = SourceServer::start(vec![
        ("ok.txt", Behaviour::Serve(b"small".to_vec())),
        ("known.bin", Behaviour::Serve(vec![1; 2 * 1024 * 1024])),
        (
            "unsized.bin",
            Behaviour::Slow {
                chunk: 64 * 1024,
                chunks: 40,
                pause: Duration::from_millis(1),
            },
        ),
    ])
    .await;
    let bucket = harness.bucket().await;
    // Content-Length says too much: skipped before a byte is read.
    let skipping = harness
        .submit(
            &bucket,
            "skip.zip",
            &[
                (sources.url("known.bin"), "known.bin"),
                (sources.url("ok.txt"), "ok.txt"),
            ],
            Compression::Store,
            OnError::Skip,
        )
        .await;
    let skipped = harness.wait_finished(skipping).await;
    assert_eq!(
        skipped.status,
        ZipStatus::Succeeded,
        "{:?}",
        skipped.error_message
    );
    let mut conn = harness.db.connect().await;
    let left_out = Zip::skipped_entries(&mut conn, &[skipping]).await.unwrap();
    assert_eq!(left_out[0].error_code.as_deref(), Some("source_too_large"));
    let read = read_with_python(&harness.store.get("skip.zip").await);
    assert_eq!(read.keys().collect::<Vec<_>>(), ["ok.txt"]);
    // No length given: refused once the bytes pass the limit.
    let failing = harness
        .submit(
            &bucket,
            "fail.zip",
            &[(sources.url("unsized.bin"), "unsized.bin")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let failed = harness.wait_finished(failing).await;
    assert_eq!(failed.status, ZipStatus::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("source_too_large"));
    assert_eq!(failed.error_param.as_deref(), Some("urls[0]"));
    harness.stop().await;
}

#[tokio::test]
async fn a_job_failing_transiently_is_retried_through_the_delay_queue_then_dead_lettered() {
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 2;
        w.retry_backoff_secs = 1;
    })
    .await;
    let per_job = zipkit_worker::download::ATTEMPTS as usize;
    let sources = SourceServer::start(vec![
        // Down for the whole first attempt, up during the second.
        (
            "flaky.txt",
            Behaviour::FailThenServe(per_job + 1, b"second time lucky".to_vec()),
        ),
        ("down.txt", Behaviour::Status(503)),
    ])
    .await;
    let bucket = harness.bucket().await;
    let id = harness
        .submit(
            &bucket,
            "retried.zip",
            &[(sources.url("flaky.txt"), "flaky.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2);
    assert_eq!(sources.hits("flaky.txt"), per_job + 2);
    assert_eq!(
        read_with_python(&harness.store.get("retried.zip").await)["flaky.txt"],
        b"second time lucky"
    );
    assert_eq!(harness.broker.depth("zipkit.jobs.dead").await, 0);

    let id = harness
        .submit(
            &bucket,
            "down.zip",
            &[(sources.url("down.txt"), "down.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.attempts, 2, "max_attempts");
    assert_eq!(
        zip.error_code.as_deref(),
        Some("source_unavailable"),
        "the last error"
    );
    assert_eq!(sources.hits("down.txt"), 2 * per_job);
    let dead = harness
        .broker
        .take("zipkit.jobs.dead", Duration::from_secs(5))
        .await
        .expect("the exhausted job's message is dead-lettered");
    let message = JobMessage::from_bytes(&dead.body).unwrap();
    assert_eq!(message.zip_id, id);
    assert_eq!(message.attempt, 2);
    harness.stop().await;
}

#[tokio::test]
async fn a_finished_zip_sends_a_signed_event_retried_after_the_receiver_fails() {
    use zipkit_domain::models::{NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint};
    use zipkit_domain::webhooks::{SIGNATURE_HEADER, verify};
    use zipkit_test_support::receiver::WebhookReceiver;

    let harness = Harness::start().await;
    let receiver = WebhookReceiver::start(1).await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket().await;
    let secret = SecretString::from("whsec_test_secret".to_owned());
    let endpoint = {
        let mut conn = harness.db.connect().await;
        let keyring = KeyRing::from_settings(&harness.crypto).unwrap();
        WebhookEndpoint::create(
            &mut conn,
            &keyring,
            NewWebhookEndpoint {
                project_id: bucket.project_id,
                url: receiver.url(),
                description: "test receiver",
                signing_secret: &secret,
            },
        )
        .await
        .unwrap()
    };
    let id = harness
        .submit(
            &bucket,
            "hooked.zip",
            &[(sources.url("a.txt"), "a.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);

    let received = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 2, "a 500, then the retry");
    assert_eq!((received[0].status, received[1].status), (500, 200));
    assert_eq!(
        received[0].body, received[1].body,
        "the same event, byte for byte"
    );
    let now = chrono::Utc::now().timestamp();
    for request in &received {
        let header = &request.headers[&SIGNATURE_HEADER.to_ascii_lowercase()];
        assert!(
            verify("whsec_test_secret", header, &request.body, now, 300),
            "{header}"
        );
        assert!(!verify("whsec_wrong", header, &request.body, now, 300));
    }
    let event: serde_json::Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "zip.completed");
    assert_eq!(event["data"]["object"]["id"], id.to_string());
    assert_eq!(event["data"]["object"]["status"], "succeeded");
    assert_eq!(event["data"]["object"]["result"]["entries"], 1);
    let event_id = event["id"].as_str().unwrap();
    assert!(event_id.starts_with("evt_"));

    // Recorded: one delivery, delivered, with both attempts.
    let mut conn = harness.db.connect().await;
    let mut deliveries = Vec::new();
    for _ in 0..50 {
        deliveries = WebhookDelivery::for_event(&mut conn, event_id)
            .await
            .unwrap();
        if deliveries.first().is_some_and(|d| d.attempts == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].endpoint_id, endpoint.id);
    assert_eq!(deliveries[0].state, zipkit_domain::DeliveryState::Succeeded);
    assert_eq!(deliveries[0].last_status_code, Some(200));
    let attempts = WebhookDelivery::attempts(&mut conn, deliveries[0].id)
        .await
        .unwrap();
    let codes: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(200)]);
    harness.stop().await;
}

#[tokio::test]
async fn webhooks_to_internal_addresses_are_refused_in_every_form_without_a_connection() {
    use zipkit_domain::models::{NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint};

    let (harness, bucket, _store) = Harness::start_guarded().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sources = SourceServer::start_on(
        "127.0.0.3",
        vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))],
    )
    .await;
    // Stored as they might have been before the API refused them, or under another policy.
    let urls = [
        format!("https://127.0.0.2:{port}/x"),
        format!("https://2130706434:{port}/x"),
        format!("https://[::ffff:127.0.0.2]:{port}/x"),
        format!("https://localhost:{port}/x"),
    ];
    {
        let mut conn = harness.db.connect().await;
        let keyring = KeyRing::from_settings(&harness.crypto).unwrap();
        for url in &urls {
            WebhookEndpoint::create(
                &mut conn,
                &keyring,
                NewWebhookEndpoint {
                    project_id: bucket.project_id,
                    url: url.as_str(),
                    description: "internal",
                    signing_secret: &SecretString::from("whsec_x".to_owned()),
                },
            )
            .await
            .unwrap();
        }
    }
    let id = harness
        .submit(
            &bucket,
            "hooked.zip",
            &[(sources.url("a.txt"), "a.txt")],
            Compression::Store,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);

    let mut conn = harness.db.connect().await;
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts.clear();
        for endpoint in WebhookEndpoint::list(&mut conn, bucket.project_id)
            .await
            .unwrap()
        {
            for delivery in WebhookDelivery::recent(&mut conn, endpoint.id, 10)
                .await
                .unwrap()
            {
                attempts.extend(
                    WebhookDelivery::attempts(&mut conn, delivery.id)
                        .await
                        .unwrap(),
                );
            }
        }
        if attempts.len() >= urls.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A refused address is final: one attempt each, no retry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(attempts.len(), urls.len(), "one attempt per endpoint");
    for endpoint in WebhookEndpoint::list(&mut conn, bucket.project_id)
        .await
        .unwrap()
    {
        let deliveries = WebhookDelivery::recent(&mut conn, endpoint.id, 10)
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].attempts, 1, "{}", endpoint.url);
        assert_eq!(
            deliveries[0].state,
            zipkit_domain::DeliveryState::Failed,
            "{}",
            endpoint.url
        );
    }
    for attempt in &attempts {
        assert_eq!(attempt.status_code, None);
        let error = attempt.error.as_deref().unwrap_or_default();
        assert!(error.contains("internal"), "{error}");
    }
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "nothing connected to the internal address"
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_consumer_reconnects_after_losing_the_broker_and_takes_new_jobs() {
    use zipkit_test_support::proxy::TcpProxy;
    use zipkit_test_support::services::amqp_host_port;

    let mut proxy = TcpProxy::closed(amqp_host_port());
    proxy.open().await;
    let port = proxy.port();
    let harness = Harness::start_full(
        |_| {},
        |url| url.replace(&amqp_host_port(), &format!("127.0.0.1:{port}")),
        loopback(),
    )
    .await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket().await;
    let entries = [(sources.url("a.txt"), "a.txt")];
    let first = harness
        .submit(
            &bucket,
            "before.zip",
            &entries,
            Compression::Store,
            OnError::Fail,
        )
        .await;
    assert_eq!(
        harness.wait_finished(first).await.status,
        ZipStatus::Succeeded
    );

    // The broker "goes away" (every connection through the proxy is cut), then comes back.
    // The probes say so: live all along, not ready while the broker is away, ready again after.
    assert_eq!(harness.readyz_becomes(200).await["checks"]["broker"], "ok");
    proxy.close();
    let down = harness.readyz_becomes(503).await;
    assert_eq!(down["checks"]["broker"], "down", "{down}");
    assert_eq!(down["checks"]["database"], "ok", "{down}");
    assert_eq!(harness.probe("/healthz").await.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = harness
        .submit(
            &bucket,
            "during.zip",
            &entries,
            Compression::Store,
            OnError::Fail,
        )
        .await;
    proxy.open().await;
    let after = harness
        .submit(
            &bucket,
            "after.zip",
            &entries,
            Compression::Store,
            OnError::Fail,
        )
        .await;
    for id in [during, after] {
        let zip = harness.wait_finished(id).await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    }
    harness.readyz_becomes(200).await;
    assert_eq!(
        read_with_python(&harness.store.get("after.zip").await)["a.txt"],
        b"alpha"
    );
    harness.stop().await;
}
