//! The worker under measurement: a release `zipkit-worker` process on the local services, a
//! case run through it as a real job, its CPU time and peak RSS, and the ceiling the hardware
//! sets for the same bytes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use zipkit_domain::crypto::{CryptoSettings, KeyRing, generate_key};
use zipkit_domain::messages::JobMessage;
use zipkit_domain::models::{
    Bucket, BucketCredentials, NewBucket, NewZip, NewZipEntry, Project, Zip,
};
use zipkit_domain::values::{BucketName, EntryName, ObjectKey, SourceUrl};
use zipkit_domain::{Compression, OnError, Service, ZipStatus};
use zipkit_runtime::broker::BrokerSettings;
use zipkit_runtime::jobs::{OutgoingJob, publish_one};
use zipkit_test_support::process::{KillOnDrop, zipkit_command};
use zipkit_test_support::services::{s3_access_key, s3_endpoint, s3_secret_key};
use zipkit_test_support::{TestBroker, TestBucket, TestDatabase};

use crate::corpus::{Corpus, MIB, source_bytes};

/// Downloads at once in the ceiling run: what the link allows (as `curl --parallel-max 64`),
/// not the worker's own `downloads_ahead`, so a setting that holds the worker back shows.
pub const DOWNLOADS_AHEAD: usize = 64;

/// Parts of the ceiling upload: the worker's default part size and parts in flight.
pub const PART: u64 = 8 * MIB;

pub const PARTS_IN_FLIGHT: usize = 4;

pub struct Case {
    pub name: &'static str,
    pub compression: Compression,
    pub corpus: Corpus,
    /// (size, first-byte latency in ms) per source.
    pub sources: Vec<(u64, u64)>,
}

impl Case {
    pub fn bytes(&self) -> u64 {
        self.sources.iter().map(|(size, _)| size).sum()
    }

    pub fn urls(&self, base: &str) -> Vec<String> {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, (size, latency))| {
                format!("{base}/{}/{i}/{size}/{latency}", self.corpus.path())
            })
            .collect()
    }
}

pub struct Run {
    pub took: Duration,
    pub archive: u64,
    pub completing: Duration,
}

/// From the last part recorded to the job's end: CompleteMultipartUpload (s3s-fs copies every
/// part into the object then) and the final update. Both stamps are PostgreSQL's clock.
pub async fn completing(
    conn: &mut diesel_async::AsyncPgConnection,
    zip: &Zip,
) -> anyhow::Result<Duration> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use zipkit_domain::schema::zip_parts;
    let last_part: Option<chrono::DateTime<chrono::Utc>> = zip_parts::table
        .filter(zip_parts::zip_id.eq(zip.id))
        .select(diesel::dsl::max(zip_parts::created_at))
        .first(conn)
        .await?;
    let (Some(last_part), Some(finished)) = (last_part, zip.finished_at) else {
        bail!("job {} has no parts or no end", zip.id);
    };
    Ok((finished - last_part).to_std().unwrap_or_default())
}

pub struct Bench {
    pub db: TestDatabase,
    pub broker: TestBroker,
    pub store: TestBucket,
    pub bucket: Bucket,
    /// Held so the worker process is killed when the bench ends.
    pub _worker: KillOnDrop,
    pub worker_pid: u32,
    /// Where the worker's `/metrics` answer.
    pub worker_port: u16,
    pub http: reqwest::Client,
    pub keyring: KeyRing,
}

impl Bench {
    pub async fn start(worker_bin: &str) -> anyhow::Result<Self> {
        let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
        let broker = TestBroker::new().await;
        let store = TestBucket::new().await;
        let key = generate_key().context("key")?;
        let crypto = CryptoSettings {
            active_key: "bench".into(),
            keys: [("bench".to_owned(), SecretString::from(key.clone()))].into(),
            keys_dir: None,
        };
        let keyring = KeyRing::from_settings(&crypto)?;
        let mut conn = db.connect().await;
        let project = Project::create(&mut conn, "bench").await?;
        let bucket = Bucket::create(
            &mut conn,
            &keyring,
            NewBucket {
                project_id: project.id,
                service: Service::S3,
                name: BucketName::parse(store.name()).context("bucket name")?,
                region: "us-east-1".into(),
                r2_account_id: None,
                endpoint_url: Some(s3_endpoint()),
                force_path_style: true,
                acl: None,
                credentials: BucketCredentials {
                    access_key_id: SecretString::from(s3_access_key()),
                    secret_access_key: SecretString::from(s3_secret_key()),
                },
            },
        )
        .await?;
        let mut command = zipkit_command(worker_bin, db.url(), &broker.url());
        let worker_port = zipkit_test_support::process::free_port();
        command
            .env("ZIPKIT__WORKER__HTTP_PORT", worker_port.to_string())
            .env("ZIPKIT__CRYPTO__ACTIVE_KEY", "bench")
            .env("ZIPKIT__CRYPTO__KEYS__BENCH", &key)
            .env("ZIPKIT__TELEMETRY__FILTER", "warn")
            // Worker settings to try (ZIPKIT__WORKER__DEFLATE_LEVEL=3, ...) pass through.
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("ZIPKIT__WORKER__")))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().context("start zipkit-worker")?;
        let worker_pid = child.id();
        // Its queues exist once it is up; a message published before then would be lost.
        for _ in 0..100 {
            if broker
                .queues()
                .await
                .iter()
                .any(|(q, _)| q == "zipkit.jobs")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            db,
            broker,
            store,
            bucket,
            _worker: KillOnDrop(child),
            worker_pid,
            worker_port,
            http: reqwest::Client::builder().build()?,
            keyring,
        })
    }

    /// The value of a counter the worker exports (summed over its label sets).
    pub async fn counter(&self, name: &str) -> anyhow::Result<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.worker_port);
        let text = self.http.get(url).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The worker's peak resident memory since the last reset, in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.worker_pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .context("VmHWM")?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("VmHWM value")?
            .parse()?;
        Ok(kib / 1024)
    }

    /// CPU time the worker has used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.worker_pid))?;
        // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
        let after = stat.rsplit_once(')').context("stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // The kernel reports in USER_HZ, 100 on Linux.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Resets the peak so the next reading covers one case only.
    pub fn reset_peak_rss(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.worker_pid), "5")?;
        Ok(())
    }

    /// Runs one job: its wall time, the archive's size, and how long the store took to
    /// complete the upload once the last part was up.
    pub async fn run(&self, case: &Case, urls: &[String], key: &str) -> anyhow::Result<Run> {
        let entries = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Ok(NewZipEntry {
                    url: SourceUrl::parse(url).context("url")?,
                    filename: EntryName::parse(&format!("files/{:05}.txt", i)).context("name")?,
                    given_filename: None,
                    modified_at: None,
                    declared_size: None,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        self.run_entries(case.name, case.compression, entries, key)
            .await
    }

    /// As `run`, for any entries.
    pub async fn run_entries(
        &self,
        name: &str,
        compression: Compression,
        entries: Vec<NewZipEntry>,
        key: &str,
    ) -> anyhow::Result<Run> {
        let mut conn = self.db.connect().await;
        let zip = Zip::create(
            &mut conn,
            NewZip {
                listings: Vec::new(),
                manifest: None,
                traceparent: None,
                expected_size: None,
                result_settings: Default::default(),
                project_id: self.bucket.project_id,
                bucket_id: self.bucket.id,
                key: ObjectKey::parse(key).context("key")?,
                metadata: Default::default(),
                compression,
                on_error: OnError::Fail,
                idempotency: None,
                entries,
            },
        )
        .await?;
        let broker = BrokerSettings {
            url: SecretString::from(self.broker.url()),
            queue_prefix: "zipkit".into(),
            connection_name: "bench".into(),
            reconnect_max_secs: 1,
        };
        let started = Instant::now();
        publish_one(
            &broker,
            OutgoingJob {
                id: &zip.id.to_string(),
                body: &JobMessage::first(zip.id, None).to_bytes(),
                traceparent: None,
            },
        )
        .await?;
        loop {
            let now = Zip::find_any(&mut conn, zip.id).await?.context("job row")?;
            if now.status.is_terminal() {
                let took = started.elapsed();
                if now.status != ZipStatus::Succeeded {
                    bail!("{name}: job ended {}: {:?}", now.status, now.error_message);
                }
                return Ok(Run {
                    took,
                    archive: now.result_size.unwrap_or_default() as u64,
                    completing: completing(&mut conn, &now).await?,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The ceiling: every source downloaded (`DOWNLOADS_AHEAD` at once) to nowhere while
    /// `upload_bytes` go up as one plain multipart object. Returns (both, download alone).
    pub async fn ceiling(
        &self,
        urls: &[String],
        upload_bytes: u64,
        corpus: &Bytes,
    ) -> anyhow::Result<(Duration, Duration)> {
        let started = Instant::now();
        let download = async {
            futures_util::stream::iter(urls.iter().cloned())
                .map(|url| {
                    let http = self.http.clone();
                    async move {
                        let mut response = http.get(url).send().await?.error_for_status()?;
                        while response.chunk().await?.is_some() {}
                        Ok::<_, anyhow::Error>(())
                    }
                })
                .buffer_unordered(DOWNLOADS_AHEAD)
                .try_collect::<Vec<()>>()
                .await?;
            Ok::<_, anyhow::Error>(started.elapsed())
        };
        let upload = self.plain_upload(upload_bytes, corpus);
        let (downloaded, uploaded) = tokio::join!(download, upload);
        let download_time = downloaded?;
        uploaded?;
        Ok((started.elapsed(), download_time))
    }

    pub async fn plain_upload(&self, bytes: u64, corpus: &Bytes) -> anyhow::Result<()> {
        let client = self.store.client();
        let key = "ceiling.bin";
        let upload = client
            .create_multipart_upload()
            .bucket(self.store.name())
            .key(key)
            .send()
            .await?;
        let upload_id = upload.upload_id().context("upload id")?.to_owned();
        let parts = bytes.div_ceil(PART);
        let completed: Vec<_> = futures_util::stream::iter(0..parts)
            .map(|n| {
                let (client, upload_id) = (client.clone(), upload_id.clone());
                let size = PART.min(bytes - n * PART);
                let mut body = Vec::with_capacity(size as usize);
                for piece in source_bytes(corpus, n, size) {
                    body.extend_from_slice(&piece);
                }
                let bucket = self.store.name().to_owned();
                async move {
                    let part = client
                        .upload_part()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(n as i32 + 1)
                        .body(aws_sdk_s3::primitives::ByteStream::from(body))
                        .send()
                        .await?;
                    Ok::<_, anyhow::Error>(
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(n as i32 + 1)
                            .e_tag(part.e_tag().unwrap_or_default())
                            .build(),
                    )
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        self.complete_upload(key, &upload_id, completed).await?;
        self.delete(key).await;
        Ok(())
    }

    /// Completes a multipart upload of the bench's bucket from its parts.
    pub async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<aws_sdk_s3::types::CompletedPart>,
    ) -> anyhow::Result<()> {
        self.store
            .client()
            .complete_multipart_upload()
            .bucket(self.store.name())
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) {
        let _ = self
            .store
            .client()
            .delete_object()
            .bucket(self.store.name())
            .key(key)
            .send()
            .await;
    }
}

pub fn mib_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64()
}
