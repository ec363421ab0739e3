//! The worker benchmark (run by `scripts/bench-worker.sh`; not a test). A release `zipkit-worker`
//! process builds archives from a local HTTP source server into the local S3-compatible store;
//! for each case it prints wall time, throughput and the worker's peak RSS, and, measured in the
//! same run on the same bytes, the ceiling: the sources downloaded concurrently to nowhere while
//! the same number of bytes is uploaded as one plain multipart object. It also measures
//! single-threaded deflate level 6 (classic zlib through Python, and zlib-rs) on the same bytes,
//! for the deflate cases on two kinds of text: real (Rust sources) and synthetic (word salad).

use std::process::Stdio;
use std::sync::Arc;
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

const MIB: u64 = 1024 * 1024;
/// Downloads at once in the ceiling run: what the link allows (as `curl --parallel-max 64`),
/// not the worker's own `downloads_ahead`, so a setting that holds the worker back shows.
const DOWNLOADS_AHEAD: usize = 64;
/// Parts of the ceiling upload: the worker's default part size and parts in flight.
const PART: u64 = 8 * MIB;
const PARTS_IN_FLIGHT: usize = 4;
/// Deflate cases run this many times, each run followed by the single-threaded baselines, and
/// the medians are compared: this machine's speed drifts by ±10 % from one run to the next.
const DEFLATE_ROUNDS: usize = 3;

/// Bytes each corpus holds; the source server cycles through it.
const CORPUS: usize = 16 * MIB as usize;

/// Where a source's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corpus {
    /// Synthetic "words" of random letters, Zipf-distributed: deflate gets it to about 38 %, and
    /// zlib-rs leads classic zlib by less on it than on most real text.
    WordSalad,
    /// Real text: Rust source code (deflate gets it to about 18 %).
    RustSources,
}

impl Corpus {
    fn path(self) -> &'static str {
        match self {
            Corpus::WordSalad => "words",
            Corpus::RustSources => "rust",
        }
    }
}

/// Both corpora, shared by the source server and the ceiling runs.
#[derive(Clone)]
struct Corpora {
    words: Bytes,
    rust: Bytes,
}

impl Corpora {
    fn get(&self, corpus: Corpus) -> &Bytes {
        match corpus {
            Corpus::WordSalad => &self.words,
            Corpus::RustSources => &self.rust,
        }
    }
}

/// Pseudo-English word salad, the same on every machine.
fn word_salad() -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<String> = (0..3000)
        .map(|_| {
            let len = 2 + (next() % 9) as usize;
            (0..len)
                .map(|_| (b'a' + (next() % 26) as u8) as char)
                .collect()
        })
        .collect();
    let mut text = Vec::with_capacity(CORPUS);
    while text.len() < CORPUS {
        // Zipf-like: low indexes far more often.
        let pick = (next() % 3000) as usize * (next() % 3000) as usize / 3000;
        text.extend_from_slice(words[pick].as_bytes());
        text.push(if next() % 12 == 0 { b'\n' } else { b' ' });
    }
    text.truncate(CORPUS);
    Bytes::from(text)
}

/// Hand-written crates the benchmark itself builds on every platform, so cargo has unpacked them
/// before it runs; their sources, in this order, make the real text.
const REAL_TEXT_CRATES: &[&str] = &[
    "tokio",
    "diesel",
    "regex-automata",
    "syn",
    "rustls",
    "chrono",
    "actix-web",
    "h2",
    "hyper",
    "serde_json",
    "lapin",
];

/// Real text that every machine building this benchmark has: the `.rs` files of
/// `REAL_TEXT_CRATES` at the (highest) version Cargo.lock pins, in a fixed order, the first
/// 16 MiB — the same bytes wherever the same Cargo.lock is built.
fn rust_sources() -> anyhow::Result<Bytes> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
        .context("read Cargo.lock")?;
    let locked = |name: &str| -> Option<String> {
        lock.split("[[package]]")
            .filter(|block| block.contains(&format!("name = \"{name}\"\n")))
            .filter_map(|block| {
                block.lines().find_map(|l| {
                    l.strip_prefix("version = \"")
                        .map(|v| v.trim_end_matches('"').to_owned())
                })
            })
            .max_by_key(|version| {
                version
                    .split(['.', '-', '+'])
                    .map(|part| part.parse::<u64>().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
    };
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let registries: Vec<_> = std::fs::read_dir(cargo_home.join("registry/src"))
        .context("no unpacked registry sources under CARGO_HOME")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let mut text = Vec::with_capacity(CORPUS);
    for name in REAL_TEXT_CRATES {
        let package = format!(
            "{name}-{}",
            locked(name).with_context(|| format!("{name} is not in Cargo.lock"))?
        );
        let dir = registries
            .iter()
            .map(|r| r.join(&package))
            .find(|d| d.is_dir())
            .with_context(|| format!("{package} is not unpacked under {}", cargo_home.display()))?;
        let mut files = Vec::new();
        rust_files(&dir, &mut files)?;
        files.sort();
        for file in files {
            text.extend_from_slice(&std::fs::read(&file)?);
            if text.len() >= CORPUS {
                text.truncate(CORPUS);
                return Ok(Bytes::from(text));
            }
        }
    }
    bail!(
        "the real-text crates hold only {} KiB of sources",
        text.len() / 1024
    )
}

fn rust_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    Ok(())
}

/// `size` bytes of the corpus starting at an offset given by `seed`, in 64 KiB pieces.
fn source_bytes(corpus: &Bytes, seed: u64, size: u64) -> impl Iterator<Item = Bytes> + use<> {
    let corpus = corpus.clone();
    let len = corpus.len() as u64;
    let mut at = seed.wrapping_mul(7919) % len;
    let mut left = size;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let take = left.min(64 * 1024).min(len - at);
        let piece = corpus.slice(at as usize..(at + take) as usize);
        at = (at + take) % len;
        left -= take;
        Some(piece)
    })
}

/// GET /gen/{corpus}/{seed}/{size}/{latency_ms}: waits, then streams `size` bytes of the corpus
/// with a length.
async fn generate(
    corpora: actix_web::web::Data<Corpora>,
    path: actix_web::web::Path<(String, u64, u64, u64)>,
) -> actix_web::HttpResponse {
    let (corpus, seed, size, latency) = path.into_inner();
    let Some(corpus) = [Corpus::WordSalad, Corpus::RustSources]
        .into_iter()
        .find(|c| c.path() == corpus)
        .map(|c| corpora.get(c))
    else {
        return actix_web::HttpResponse::NotFound().finish();
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let body =
        futures_util::stream::iter(source_bytes(corpus, seed, size).map(Ok::<_, std::io::Error>));
    actix_web::HttpResponse::Ok()
        .no_chunking(size)
        .streaming(body)
}

async fn start_sources(corpora: Corpora) -> anyhow::Result<(String, actix_web::dev::ServerHandle)> {
    let data = actix_web::web::Data::new(corpora);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().app_data(data.clone()).route(
            "/gen/{corpus}/{seed}/{size}/{latency}",
            actix_web::web::get().to(generate),
        )
    })
    .workers(1)
    .backlog(4096)
    .max_connections(100_000)
    .disable_signals()
    .bind(("127.0.0.1", 0))?;
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((format!("http://127.0.0.1:{port}/gen"), handle))
}

struct Case {
    name: &'static str,
    compression: Compression,
    corpus: Corpus,
    /// (size, first-byte latency in ms) per source.
    sources: Vec<(u64, u64)>,
}

impl Case {
    fn bytes(&self) -> u64 {
        self.sources.iter().map(|(size, _)| size).sum()
    }

    fn urls(&self, base: &str) -> Vec<String> {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, (size, latency))| {
                format!("{base}/{}/{i}/{size}/{latency}", self.corpus.path())
            })
            .collect()
    }
}

struct Run {
    took: Duration,
    archive: u64,
    completing: Duration,
}

/// From the last part recorded to the job's end: CompleteMultipartUpload (s3s-fs copies every
/// part into the object then) and the final update. Both stamps are PostgreSQL's clock.
async fn completing(
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

struct Bench {
    db: TestDatabase,
    broker: TestBroker,
    store: TestBucket,
    bucket: Bucket,
    /// Held so the worker process is killed when the bench ends.
    _worker: KillOnDrop,
    worker_pid: u32,
    http: reqwest::Client,
}

impl Bench {
    async fn start(worker_bin: &str) -> anyhow::Result<Self> {
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
        command
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
            http: reqwest::Client::builder().build()?,
        })
    }

    /// The worker's peak resident memory since the last reset, in MiB (VmHWM).
    fn peak_rss_mib(&self) -> anyhow::Result<u64> {
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
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.worker_pid))?;
        // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
        let after = stat.rsplit_once(')').context("stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // The kernel reports in USER_HZ, 100 on Linux.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Resets the peak so the next reading covers one case only.
    fn reset_peak_rss(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.worker_pid), "5")?;
        Ok(())
    }

    /// Runs one job: its wall time, the archive's size, and how long the store took to
    /// complete the upload once the last part was up.
    async fn run(&self, case: &Case, urls: &[String], key: &str) -> anyhow::Result<Run> {
        let mut conn = self.db.connect().await;
        let zip = Zip::create(
            &mut conn,
            NewZip {
                traceparent: None,
                expected_size: None,
                project_id: self.bucket.project_id,
                bucket_id: self.bucket.id,
                key: ObjectKey::parse(key).context("key")?,
                metadata: Default::default(),
                compression: case.compression,
                on_error: OnError::Fail,
                idempotency: None,
                entries: urls
                    .iter()
                    .enumerate()
                    .map(|(i, url)| {
                        Ok(NewZipEntry {
                            url: SourceUrl::parse(url).context("url")?,
                            filename: EntryName::parse(&format!("files/{:05}.txt", i))
                                .context("name")?,
                            given_filename: None,
                            modified_at: None,
                            declared_size: None,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
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
                    bail!(
                        "{}: job ended {}: {:?}",
                        case.name,
                        now.status,
                        now.error_message
                    );
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
    async fn ceiling(
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

    async fn plain_upload(&self, bytes: u64, corpus: &Bytes) -> anyhow::Result<()> {
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
        client
            .complete_multipart_upload()
            .bucket(self.store.name())
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await?;
        self.delete(key).await;
        Ok(())
    }

    async fn delete(&self, key: &str) {
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

/// Single-threaded deflate level 6 on some bytes: MiB/s and the share of the input the output
/// takes.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    mib_s: f64,
    ratio: f64,
}

impl Baseline {
    /// The measurement with the median speed.
    fn median(mut all: Vec<Baseline>) -> Baseline {
        all.sort_by(|a, b| a.mib_s.total_cmp(&b.mib_s));
        all[all.len() / 2]
    }
}

/// The first 64 MiB of a case's bytes, in memory and in a file for Python, written once per case
/// and removed when dropped.
struct Sample {
    bytes: Bytes,
    path: std::path::PathBuf,
}

impl Sample {
    fn new(corpus: &Bytes) -> anyhow::Result<Self> {
        let bytes: Vec<u8> = source_bytes(corpus, 0, 64 * MIB)
            .flat_map(|b| b.to_vec())
            .collect();
        let path = std::env::temp_dir().join(format!("zipkit-bench-{}.txt", std::process::id()));
        std::fs::write(&path, &bytes)?;
        Ok(Self {
            bytes: Bytes::from(bytes),
            path,
        })
    }
}

impl Drop for Sample {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Classic zlib (Python's `zlib`, Debian's libz) and zlib-rs on the sample.
async fn deflate_baselines(sample: &Sample) -> anyhow::Result<(Baseline, Baseline)> {
    let script = "import sys,time,zlib\n\
        d=open(sys.argv[1],'rb').read()\n\
        c=zlib.compressobj(6,zlib.DEFLATED,-15)\n\
        t=time.perf_counter()\n\
        n=len(c.compress(d))+len(c.flush())\n\
        print(len(d)/(time.perf_counter()-t)/1048576, n/len(d))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&sample.path)
        .output()?;
    if !out.status.success() {
        bail!("python: {}", String::from_utf8_lossy(&out.stderr));
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let mut figures = printed.split_whitespace().map(str::parse::<f64>);
    let classic = Baseline {
        mib_s: figures.next().context("python's speed")??,
        ratio: figures.next().context("python's ratio")??,
    };
    let sample = sample.bytes.clone();
    let zlib_rs = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let started = Instant::now();
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(&sample)?;
        let size = encoder.finish()?.len();
        Ok::<_, std::io::Error>(Baseline {
            mib_s: sample.len() as f64 / started.elapsed().as_secs_f64() / MIB as f64,
            ratio: size as f64 / sample.len() as f64,
        })
    })
    .await??;
    Ok((classic, zlib_rs))
}

/// `count` sources whose sizes are spread evenly on a log scale between `min` and `max` (a fixed
/// sequence, so every run and every build gets the same), each `latency` ms to its first byte.
fn log_uniform(count: usize, min: u64, max: u64, latency: u64) -> Vec<(u64, u64)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let (low, high) = ((min as f64).ln(), (max as f64).ln());
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            ((low + unit * (high - low)).exp() as u64, latency)
        })
        .collect()
}

fn mib_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let worker_bin = std::env::args()
        .nth(1)
        .context("usage: zipkit-bench <zipkit-worker binary>")?;
    let corpora = Corpora {
        words: word_salad(),
        rust: rust_sources()?,
    };
    let (base, sources) = start_sources(corpora.clone()).await?;
    let bench = Arc::new(Bench::start(&worker_bin).await?);

    let big = vec![(128 * MIB, 0); 8];
    let cases = [
        Case {
            name: "store 8 x 128 MiB",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: big.clone(),
        },
        Case {
            name: "deflate 8 x 128 MiB, Rust sources",
            compression: Compression::Deflate,
            corpus: Corpus::RustSources,
            sources: big.clone(),
        },
        Case {
            name: "deflate 8 x 128 MiB, word salad",
            compression: Compression::Deflate,
            corpus: Corpus::WordSalad,
            sources: big,
        },
        // 200 sources of 1 KiB to 32 MiB (log-uniform), 10 ms to the first byte, on a worker that
        // has just built the 8 x 128 MiB archives in both modes:
        // held-back header parts and the allocator's leftovers from large parts meet many small
        // entries.
        Case {
            name: "store 200 mixed 1K-32M (after 128 MiB)",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: log_uniform(200, 1024, 32 * MIB, 10),
        },
        Case {
            name: "deflate 200 mixed 1K-32M (after 128 MiB)",
            compression: Compression::Deflate,
            corpus: Corpus::WordSalad,
            sources: log_uniform(200, 1024, 32 * MIB, 10),
        },
        Case {
            name: "store 2,000 x 32 KiB, 50 ms first byte",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: vec![(32 * 1024, 50); 2000],
        },
        Case {
            name: "store 4.5 GiB + 70,000 x 1 KiB",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: std::iter::once((4608 * MIB, 0))
                .chain(std::iter::repeat_n((1024, 0), 70_000))
                .collect(),
        },
        Case {
            name: "store ZIP64 (4.25 GiB + 256 MiB)",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: vec![(4352 * MIB, 0), (256 * MIB, 0)],
        },
    ];
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "case",
        "wall s",
        "MiB/s",
        "CPU s",
        "peak RSS",
        "complete",
        "ceiling s",
        "download",
        "of ceil.",
        "archive"
    );
    let mut deflate_lines = Vec::new();
    // BENCH_ONLY=deflate runs the cases whose name contains it (for trying settings quickly).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for (n, case) in cases.iter().enumerate() {
        if !case.name.contains(&only) {
            continue;
        }
        let urls = case.urls(&base);
        let corpus = corpora.get(case.corpus);
        let key = format!("bench-{n}.zip");
        let deflate = case.compression == Compression::Deflate;
        // The bytes the single-threaded baselines compress.
        let sample = deflate.then(|| Sample::new(corpus)).transpose()?;
        let (mut runs, mut classic, mut zlib_rs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..if deflate { DEFLATE_ROUNDS } else { 1 } {
            bench.reset_peak_rss()?;
            let cpu_before = bench.cpu_time()?;
            let run = bench.run(case, &urls, &key).await?;
            let cpu = bench.cpu_time()? - cpu_before;
            let rss = bench.peak_rss_mib()?;
            bench.delete(&key).await;
            runs.push((run, cpu, rss));
            if let Some(sample) = &sample {
                let (c, r) = deflate_baselines(sample).await?;
                classic.push(c);
                zlib_rs.push(r);
            }
        }
        let peak_rss = runs
            .iter()
            .map(|(_, _, rss)| *rss)
            .max()
            .unwrap_or_default();
        runs.sort_by_key(|(run, _, _)| run.took);
        let (run, cpu, _) = &runs[runs.len() / 2];
        let (ceiling, download) = bench.ceiling(&urls, run.archive, corpus).await?;
        println!(
            "{:<40} {:>7.2} {:>7.1} {:>7.1} {:>5} MiB {:>7.2} s {:>9.2} {:>7.2} s {:>7.0}% {:>5} MiB",
            case.name,
            run.took.as_secs_f64(),
            mib_s(case.bytes(), run.took),
            cpu.as_secs_f64(),
            peak_rss,
            run.completing.as_secs_f64(),
            ceiling.as_secs_f64(),
            download.as_secs_f64(),
            ceiling.as_secs_f64() / run.took.as_secs_f64() * 100.0,
            run.archive / MIB,
        );
        if deflate {
            let worker = mib_s(case.bytes(), run.took);
            let streaming = mib_s(case.bytes(), run.took.saturating_sub(run.completing));
            let all: Vec<String> = runs
                .iter()
                .map(|(r, _, _)| format!("{:.1}", mib_s(case.bytes(), r.took)))
                .collect();
            let (classic, zlib_rs) = (Baseline::median(classic), Baseline::median(zlib_rs));
            deflate_lines.push(format!(
                "{}: worker {worker:.1} MiB/s end to end (runs: {}), {streaming:.1} MiB/s until \
                 the last part was up, archive {:.1} % of the input; single-threaded level 6: \
                 zlib {:.1} MiB/s, {:.1} % ({:.2}x, {:.2}x), zlib-rs {:.1} MiB/s, {:.1} % \
                 ({:.2}x, {:.2}x)",
                case.name,
                all.join(", "),
                run.archive as f64 / case.bytes() as f64 * 100.0,
                classic.mib_s,
                classic.ratio * 100.0,
                worker / classic.mib_s,
                streaming / classic.mib_s,
                zlib_rs.mib_s,
                zlib_rs.ratio * 100.0,
                worker / zlib_rs.mib_s,
                streaming / zlib_rs.mib_s,
            ));
        }
    }
    for line in deflate_lines {
        println!("{line}");
    }
    println!(
        "(deflate cases: the median of {DEFLATE_ROUNDS} runs, each followed by the baselines, \
         compared with their medians; peak RSS: the highest of the runs; complete: from the last \
         part up to the job's end, mostly the store's CompleteMultipartUpload; ceiling: the same \
         sources downloaded {DOWNLOADS_AHEAD} at a time to nowhere while the archive's size is \
         uploaded as one plain multipart object, {} MiB parts, {PARTS_IN_FLIGHT} in flight; \
         \"of ceil.\" = ceiling time / worker time)",
        PART / MIB
    );
    sources.stop(true).await;
    drop(bench);
    Ok(())
}
