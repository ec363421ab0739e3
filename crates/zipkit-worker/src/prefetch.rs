//! Sources downloaded ahead of the writer. Each entry gets its own task that starts the download
//! (with retries), watches for stalls and size limits, resumes with `Range` + `If-Range` after a
//! broken connection when the source allows it — and otherwise starts the source over, checking
//! that the bytes already handed on come again unchanged — and hands its bytes over through a
//! channel (a job taken over may start its first source further in, `Continue`). At most
//! `ahead` entries download at once; the bytes they hold until the writer takes
//! them come from one budget for the whole job (`job_bytes`) and from the worker's (`memory`), so
//! many small sources overlap their latency while a few large ones cannot fill memory. Each
//! download also has a small share of its own (`own_bytes`): the entry being written always gets
//! on, however much the downloads ahead of it hold. The job takes the entries strictly in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use zipkit_egress::EgressPolicy;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;
use zipkit_domain::models::EntrySource;
use zipkit_domain::values::{EntryName, SourceLocation, SourceUrl};
use zipkit_runtime::metrics as metrics_names;

use crate::download::{self, ATTEMPTS, Resume, SourceError};
use crate::failure::JobFailure;
use crate::memory::{BufferBudget, Reservation};
use crate::source_buckets::SourceBuckets;
use crate::upload::MIN_PART;
use zipkit_zip::parts::MAX_PART;

/// The bytes each download may always hold (`DownloadLimits::own_bytes`): a few chunks.
pub const OWN_BYTES: usize = 64 * 1024;

/// What a download's connection costs beyond the bytes it holds: the HTTP client's buffers. It
/// starts with its TLS records and a small read buffer (`CONNECTION_BASE`); while a source sends
/// fast, the client (hyper) grows the read buffer up to `CONNECTION_READ_MAX`, its default, keeps
/// it for as long as the connection lives, and reads one chunk ahead of the body's reader. A
/// download ahead counts its connection in the job's and the worker's budgets
/// (`charge_connection`): the base, and twice the read buffer (the buffer and the chunk read
/// ahead), a source of known length as that length at most.
pub const CONNECTION_BASE: usize = 48 * 1024;
pub const CONNECTION_READ_MAX: usize = 8192 + 4096 * 100;

/// Limits and timing for source downloads.
#[derive(Debug, Clone)]
pub struct DownloadLimits {
    /// Entries downloading at once (the one being written included).
    pub ahead: usize,
    /// Unconsumed bytes all of a job's downloads may hold together, beyond their own shares.
    pub job_bytes: usize,
    /// Unconsumed bytes each download may always hold (a chunk or two), whatever the job's
    /// budget: what keeps the entry being written moving.
    pub own_bytes: usize,
    /// A source slower than `stall_min_bytes` per `stall_window` is stalled.
    pub stall_window: Duration,
    pub stall_min_bytes: u64,
    /// The longest the job waits on one source, summed over its retries (`Patience`).
    pub source_wait: Duration,
    /// Largest source accepted.
    pub max_source_bytes: u64,
    /// What sources may be fetched from.
    pub egress: EgressPolicy,
    /// The worker's buffer budget: bytes held beyond a download's own share come from it as well
    /// as from the job's.
    pub budget: BufferBudget,
}

/// What downloaded bytes hold until the writer takes them: a download's own share, or the job's
/// budget and the worker's.
#[derive(Debug)]
pub struct Held {
    _share: OwnedSemaphorePermit,
    _worker: Option<Reservation>,
}

/// What a download needs of an entry: a build holds these only a page or two ahead of its
/// downloads (`job::sources`).
#[derive(Debug, Clone)]
pub struct Source {
    pub index: i32,
    pub url: SourceUrl,
    pub filename: EntryName,
    /// The entry's time when it is decided already: as the request gave it, or as an earlier
    /// build of the job placed it (otherwise the source's `Last-Modified` decides).
    pub modified_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The source's size as the request declared it: it must send exactly that.
    pub declared_size: Option<u64>,
    /// An object in the archive's store that may be copied into it there (`job::copies`).
    pub copy: bool,
}

impl From<EntrySource> for Source {
    fn from(entry: EntrySource) -> Self {
        Self {
            index: entry.entry_index,
            url: entry.url,
            filename: entry.filename,
            modified_at: entry.modified_at,
            declared_size: entry.declared_size.and_then(|n| u64::try_from(n).ok()),
            copy: false,
        }
    }
}

/// What an entry's download reports, in this order: `Started`, then `Data`..., then the channel
/// closes (complete) or `Failed` comes last.
#[derive(Debug)]
pub enum Event {
    Started {
        content_length: Option<u64>,
        /// The source's strong ETag or Last-Modified, when it takes byte ranges.
        validator: Option<String>,
        /// The source's Last-Modified.
        last_modified: Option<chrono::DateTime<chrono::Utc>>,
        /// An object to copy into the archive in the store: what the store said of it. Its
        /// bytes follow only as far as the writer needs them: when the store keeps its CRC-32,
        /// the first `MIN_PART` (and, past 5 GiB, those before its last copied range), all of
        /// them (to compute it) otherwise.
        stored: Option<Stored>,
    },
    /// Bytes, with the budget they hold until consumed.
    Data(Bytes, Held),
    /// The download failed for good (after any bytes already handed over).
    Failed(SourceError),
    /// A download continuing an entry (`Continue`) did not get the rest of the source from
    /// where it asked: the entry has to be built from its start.
    RangeRefused,
}

/// An object the store copies into the archive, as its HeadObject described it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub bucket: String,
    pub key: String,
    pub object: zipkit_storage::StoredObject,
}

/// Objects copied in the store are from `2 × MIN_PART` (the bytes sent before the copy and the
/// copied part each at least `MIN_PART`).
pub const SMALLEST_COPIED: u64 = 2 * MIN_PART;

/// Whether an object of `size` bytes is copied: up to one part's largest always; larger, in
/// several ranges, only when the request declared that size, since the part numbers a job's
/// copies take are counted from the declared sizes before any object is looked at
/// (`job::sources`).
pub fn copied_size(size: u64, declared: Option<u64>) -> bool {
    size >= SMALLEST_COPIED && (size <= MAX_PART || declared == Some(size))
}

/// An entry whose download runs in the background; dropping it stops the download.
#[derive(Debug)]
pub struct Download {
    pub entry: Source,
    pub events: mpsc::Receiver<Event>,
    /// Set once the writer takes the entry: its download is then never held back for budget.
    writing: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Download {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the first source's download starts when a build taken over continues its entry: its
/// first `from` bytes, whose CRC-32 is `crc32`, are in the archive already, read when the
/// source answered with `validator` (sent as `If-Range`: a source that changed since answers
/// with all of itself, which will not do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continue {
    pub from: u64,
    pub crc32: u32,
    pub validator: String,
}

/// A build's sources in order, as the job reads them from its rows (`job::sources`); a failure
/// to read them ends the build.
pub type SourceFeed = mpsc::Receiver<Result<Source, JobFailure>>;

/// A build's sources and the buckets some of them are read from.
#[derive(Debug)]
pub struct Sources {
    pub entries: SourceFeed,
    pub buckets: Arc<SourceBuckets>,
}

/// Starts downloads ahead and yields them in request order.
#[derive(Debug)]
pub struct Prefetcher {
    /// The build's sources not started yet, and how many have been.
    entries: SourceFeed,
    buckets: Arc<SourceBuckets>,
    started: usize,
    /// For the first source: where its download starts.
    first_from: Option<Continue>,
    running: VecDeque<Download>,
    http: reqwest::Client,
    limits: Arc<DownloadLimits>,
    /// The job's byte budget, shared by its downloads.
    budget: Arc<Semaphore>,
}

impl Prefetcher {
    pub fn new(http: reqwest::Client, limits: DownloadLimits, sources: Sources) -> Self {
        Self {
            entries: sources.entries,
            buckets: sources.buckets,
            started: 0,
            first_from: None,
            running: VecDeque::new(),
            http,
            budget: Arc::new(Semaphore::new(limits.job_bytes)),
            limits: Arc::new(limits),
        }
    }

    /// The first source's download starts at `from` instead of its first byte.
    pub fn continuing(mut self, from: Option<Continue>) -> Self {
        self.first_from = from;
        self
    }

    /// The next entry in order, its download already under way; later ones start meanwhile.
    /// `None` once every source was taken.
    pub async fn next_download(&mut self) -> Result<Option<Download>, JobFailure> {
        if self.running.is_empty() {
            // Only here does the build wait for its sources to be read.
            match self.entries.recv().await {
                Some(source) => self.start(source?),
                None => return Ok(None),
            }
        }
        self.fill()?;
        let next = self.running.pop_front();
        if let Some(next) = &next {
            next.writing.send_replace(true);
        }
        self.fill()?;
        Ok(next)
    }

    /// Starts the sources read so far, up to `ahead` downloading at once.
    fn fill(&mut self) -> Result<(), JobFailure> {
        while self.running.len() < self.limits.ahead {
            match self.entries.try_recv() {
                Ok(source) => self.start(source?),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Starts `entry`'s download on a task of its own.
    fn start(&mut self, entry: Source) {
        self.started += 1;
        // Capacity is not the bound (the byte budget is); it only has to exceed the chunks
        // the budget can hold.
        let (tx, events) = mpsc::channel(1024);
        // The host only: a source URL's path and query may carry a signature. A bucket
        // object's span names its bucket.
        let span = tracing::info_span!(
            "download",
            otel.kind = "client",
            entry.index = entry.index,
            source.host = tracing::field::Empty,
            source.bucket = tracing::field::Empty,
        );
        match entry.url.location() {
            SourceLocation::Web(url) => {
                span.record("source.host", url.host_str().unwrap_or_default());
            }
            SourceLocation::Bucket { bucket, .. } => {
                span.record("source.bucket", bucket);
            }
        }
        let from = if self.started == 1 {
            self.first_from.take()
        } else {
            None
        };
        let (writing, written) = watch::channel(false);
        let address = Address {
            url: entry.url.clone(),
            buckets: self.buckets.clone(),
            copy: entry.copy,
        };
        let task = tokio::spawn(
            download(
                self.http.clone(),
                address,
                self.limits.clone(),
                (self.budget.clone(), written),
                tx,
                from,
                entry.declared_size,
            )
            .instrument(span),
        );
        self.running.push_back(Download {
            entry,
            events,
            writing,
            task,
        });
    }
}

/// Fewer than `min_bytes` arriving within a window means the source stalled.
struct StallWatch {
    window: Duration,
    min_bytes: u64,
    started: Instant,
    bytes: u64,
}

impl StallWatch {
    fn new(window: Duration, min_bytes: u64) -> Self {
        Self {
            window,
            min_bytes,
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn deadline(&self) -> Instant {
        self.started + self.window
    }

    /// Counts bytes; at the end of a window says whether it was too slow and opens the next.
    fn check(&mut self, bytes: u64) -> Result<(), ()> {
        self.bytes += bytes;
        if Instant::now() < self.deadline() {
            return Ok(());
        }
        let slow = self.bytes < self.min_bytes;
        self.started = Instant::now();
        self.bytes = 0;
        if slow { Err(()) } else { Ok(()) }
    }
}

/// Waits shorter than this are a source at work; longer ones count against `source_wait`.
const QUIET: Duration = Duration::from_secs(1);

/// How much longer the job will wait on one source: connecting, waiting for an answer, silences
/// of at least `QUIET`, and backoffs between attempts all count, across the source's retries.
/// Once it is spent the source fails for good, and is not retried with the job either, so no
/// source holds a job longer than `worker.source_wait_secs`.
struct Patience {
    left: Duration,
    limit: Duration,
}

impl Patience {
    fn new(limit: Duration) -> Self {
        Self { left: limit, limit }
    }

    /// When the patience runs out if nothing arrives.
    fn deadline(&self) -> Instant {
        Instant::now() + self.left
    }

    /// Counts a wait that took `took`; short waits only when `always`.
    fn spend(&mut self, took: Duration, always: bool) {
        if always || took >= QUIET {
            self.left = self.left.saturating_sub(took);
        }
    }

    fn is_spent(&self) -> bool {
        self.left.is_zero()
    }

    /// The final failure once it is spent; `code` names the trouble it was spent on.
    fn gave_up(&self, code: &'static str) -> SourceError {
        SourceError::permanent(
            code,
            format!(
                "the source kept the job waiting for more than {} s in all (worker.source_wait_secs)",
                self.limit.as_secs()
            ),
        )
    }
}

/// A download's source: its URL, the buckets it may be in, and whether it is an object the
/// store may copy into the archive.
struct Address {
    url: SourceUrl,
    buckets: Arc<SourceBuckets>,
    copy: bool,
}

/// Where a download's requests go: the source's URL, or for a bucket object a GET presigned
/// with the bucket's keys, made when the download starts (entries keep only their text) and
/// living as long as the job may wait on the source, and an hour more.
async fn request_url(
    Address {
        url: source,
        buckets,
        ..
    }: &Address,
    limits: &DownloadLimits,
) -> Result<url::Url, SourceError> {
    match source.location() {
        SourceLocation::Web(url) => Ok(url),
        SourceLocation::Bucket { bucket, key } => {
            let ttl = limits.source_wait + Duration::from_secs(3600);
            buckets.link(bucket, key, ttl).await
        }
    }
}

/// For an object the store may copy into the archive: what the store says of it (HeadObject
/// with its checksum), when its size is one to copy (`copied_size`); `None` for one to stream.
async fn copied_object(
    address: &Address,
    declared: Option<u64>,
) -> Result<Option<Stored>, SourceError> {
    let SourceLocation::Bucket { bucket, key } = address.url.location() else {
        return Ok(None);
    };
    let Some(source) = address
        .buckets
        .get(bucket)
        .filter(|b| address.copy && b.copies)
    else {
        return Ok(None);
    };
    let object = zipkit_storage::stored_object(&source.client, &source.location, key)
        .await
        .map_err(|refused| match refused.status {
            Some(404) => SourceError::permanent(
                "source_not_found",
                format!("s3://{bucket}/{key} is not in the bucket"),
            ),
            _ => SourceError::transient(
                "source_unreachable",
                format!(
                    "s3://{bucket}/{key} could not be looked up: {}",
                    refused.why
                ),
            ),
        })?;
    Ok(copied_size(object.size, declared).then(|| Stored {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        object,
    }))
}

async fn download(
    http: reqwest::Client,
    address: Address,
    limits: Arc<DownloadLimits>,
    (job_budget, mut writing): (Arc<Semaphore>, watch::Receiver<bool>),
    tx: mpsc::Sender<Event>,
    from: Option<Continue>,
    declared: Option<u64>,
) {
    let stored = match copied_object(&address, declared).await {
        Ok(stored) => stored,
        Err(error) => {
            let _ = tx.send(Event::Failed(error)).await;
            return;
        }
    };
    // With the object's CRC-32 from the store, only the bytes sent before the copy, and
    // those of any range copied before the last, are read.
    let head_only = stored
        .as_ref()
        .filter(|s| s.object.crc32.is_some())
        .map(|s| zipkit_zip::parts::read_before_last_copy(s.object.size));
    let url = match request_url(&address, &limits).await {
        Ok(url) => url,
        Err(error) => {
            let _ = tx.send(Event::Failed(error)).await;
            return;
        }
    };
    drop(address);
    let mut patience = Patience::new(limits.source_wait);
    let began = Instant::now();
    let range = from.as_ref().map(|c| Resume {
        from: c.from,
        validator: c.validator.clone(),
    });
    let fetched = tokio::time::timeout_at(
        patience.deadline(),
        download::fetch_with_retries(&http, &url, &limits.egress, range.as_ref()),
    )
    .await;
    patience.spend(began.elapsed(), true);
    let response = match fetched {
        Ok(Ok(response)) => response,
        // A 404 or 416 to the range: the build that starts the entry over will say.
        Ok(Err(error)) if from.is_some() && !error.is_transient() => {
            let _ = tx.send(Event::RangeRefused).await;
            return;
        }
        Ok(Err(error)) => {
            let _ = tx.send(Event::Failed(error)).await;
            return;
        }
        Err(_) => {
            let _ = tx
                .send(Event::Failed(patience.gave_up("source_unreachable")))
                .await;
            return;
        }
    };
    // Continuing: only a 206 with the rest from `from` will do (a whole body would have to be
    // checked against bytes that are in the bucket, not here).
    let content_length = match &from {
        Some(c) => match download::content_range(&response) {
            Some((first, length))
                if response.status() == reqwest::StatusCode::PARTIAL_CONTENT && first == c.from =>
            {
                length
            }
            _ => {
                let _ = tx.send(Event::RangeRefused).await;
                return;
            }
        },
        None => response.content_length(),
    };
    if let (Some(announced), Some(declared)) = (content_length, declared)
        && announced != declared
    {
        let error = SourceError::size_mismatch(declared, &format!("announces {announced}"));
        let _ = tx.send(Event::Failed(error)).await;
        return;
    }
    // A length the request declared stands in for one the source does not send.
    let content_length = content_length.or(declared);
    if content_length.is_some_and(|l| l > limits.max_source_bytes) {
        let error = SourceError::too_large(limits.max_source_bytes);
        let _ = tx.send(Event::Failed(error)).await;
        return;
    }
    let validator = Resume::validator(&response);
    let started = Event::Started {
        content_length,
        validator: validator.clone(),
        last_modified: download::last_modified(&response),
        stored,
    };
    if tx.send(started).await.is_err() {
        return;
    }
    // Held until the download ends; then the connection goes back to the client's pool, which
    // keeps no more idle connections than a job downloads at once (`zipkit_sources::client`).
    let _connection = charge_connection(&job_budget, content_length, &limits, &mut writing).await;
    let own = Arc::new(Semaphore::new(limits.own_bytes));
    let mut body = response.bytes_stream();
    let mut attempt = 1u32;
    let mut stall = StallWatch::new(limits.stall_window, limits.stall_min_bytes);
    // The CRC-32 of what was handed on (or, continuing, was in the archive already), and while
    // a restarted download replays that prefix, how much of it is still to come and its CRC so
    // far.
    let (mut received, mut handed_on) = match &from {
        Some(c) => (
            c.from,
            crc32fast::Hasher::new_with_initial_len(c.crc32, c.from),
        ),
        None => (0, crc32fast::Hasher::new()),
    };
    let mut replay: Option<(u64, crc32fast::Hasher)> = None;
    loop {
        if patience.is_spent() {
            let _ = tx
                .send(Event::Failed(patience.gave_up("source_stalled")))
                .await;
            return;
        }
        let began = Instant::now();
        let next = tokio::time::timeout_at(stall.deadline().min(patience.deadline()), body.next());
        let next = next.await;
        patience.spend(began.elapsed(), false);
        let error = match next {
            Ok(None) if replay.is_some() => {
                let _ = tx.send(Event::Failed(changed())).await;
                return;
            }
            Ok(None) => {
                if let Some(declared) = declared.filter(|d| *d != received) {
                    let error = SourceError::size_mismatch(declared, &format!("sent {received}"));
                    let _ = tx.send(Event::Failed(error)).await;
                }
                return; // complete: the channel closes
            }
            Ok(Some(Ok(mut chunk))) => {
                metrics::counter!(metrics_names::BYTES_DOWNLOADED).increment(chunk.len() as u64);
                metrics::counter!(metrics_names::BYTES_DOWNLOADED_DEPRECATED)
                    .increment(chunk.len() as u64);
                // Replayed and new bytes alike count for the stall rule.
                let stalled = stall.check(chunk.len() as u64).is_err();
                if let Some((left, crc)) = &mut replay {
                    let n = chunk
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    crc.update(&chunk[..n]);
                    *left -= n as u64;
                    if *left == 0 {
                        let same = replay
                            .take()
                            .is_some_and(|(_, crc)| crc.finalize() == handed_on.clone().finalize());
                        if !same {
                            let _ = tx.send(Event::Failed(changed())).await;
                            return;
                        }
                    }
                    chunk = chunk.slice(n..);
                }
                if let Some(limit) = head_only {
                    chunk.truncate(usize::try_from(limit - received).unwrap_or(usize::MAX));
                }
                if !chunk.is_empty() {
                    received += chunk.len() as u64;
                    handed_on.update(&chunk);
                    if let Some(declared) = declared.filter(|d| received > *d) {
                        let error = SourceError::size_mismatch(declared, "sent more");
                        let _ = tx.send(Event::Failed(error)).await;
                        return;
                    }
                    if received > limits.max_source_bytes {
                        let error = SourceError::too_large(limits.max_source_bytes);
                        let _ = tx.send(Event::Failed(error)).await;
                        return;
                    }
                    let Some(permit) = hold(&own, &job_budget, chunk.len(), &limits).await else {
                        return;
                    };
                    if tx.send(Event::Data(chunk, permit)).await.is_err() {
                        return;
                    }
                }
                if head_only.is_some_and(|limit| received >= limit) {
                    return; // all the writer needs: the channel closes
                }
                if !stalled {
                    continue;
                }
                stalled_error(&limits)
            }
            Ok(Some(Err(_))) => SourceError::transient(
                "source_unreachable",
                "the source stopped sending before the end",
            ),
            Err(_) if patience.is_spent() => continue, // said at the top of the loop
            Err(_) if stall.check(0).is_ok() => continue,
            Err(_) => stalled_error(&limits),
        };
        // Pick the source up again (a failed pick-up counts as an attempt too).
        let (response, replayed) = loop {
            if attempt >= ATTEMPTS {
                let _ = tx.send(Event::Failed(error)).await;
                return;
            }
            if patience.is_spent() {
                let _ = tx.send(Event::Failed(patience.gave_up(error.code))).await;
                return;
            }
            let began = Instant::now();
            tokio::time::sleep(download::BACKOFF.delay(attempt).min(patience.left)).await;
            attempt += 1;
            metrics::counter!(metrics_names::RETRIES, "stage" => "download", "cause" => error.code)
                .increment(1);
            tracing::info!(
                url.len = url.as_str().len(),
                from = received,
                attempt,
                code = error.code,
                ranged = validator.is_some(),
                "picking a source up again"
            );
            let picked = tokio::time::timeout_at(
                patience.deadline(),
                pick_up(&http, &url, &limits, validator.as_deref(), received),
            )
            .await;
            patience.spend(began.elapsed(), true);
            if let Ok(Some(picked)) = picked {
                break picked;
            }
        };
        body = response.bytes_stream();
        stall = StallWatch::new(limits.stall_window, limits.stall_min_bytes);
        replay = (replayed && received > 0).then(|| (received, crc32fast::Hasher::new()));
    }
}

/// Permission to hold `bytes` until the writer takes them: from the download's own share if it
/// has room, else from whichever frees up first: its share, or the job's budget and then the
/// worker's.
async fn hold(
    own: &Arc<Semaphore>,
    job: &Arc<Semaphore>,
    bytes: usize,
    limits: &DownloadLimits,
) -> Option<Held> {
    let from_own = bytes.clamp(1, limits.own_bytes) as u32;
    let own_only = |permit| Held {
        _share: permit,
        _worker: None,
    };
    if let Ok(permit) = own.clone().try_acquire_many_owned(from_own) {
        return Some(own_only(permit));
    }
    let from_job = bytes.clamp(1, limits.job_bytes) as u32;
    let shared = async {
        let permit = job.clone().acquire_many_owned(from_job).await.ok()?;
        let worker = limits.budget.reserve(bytes).await;
        Some(Held {
            _share: permit,
            _worker: Some(worker),
        })
    };
    tokio::select! {
        permit = own.clone().acquire_many_owned(from_own) => permit.ok().map(own_only),
        held = shared => held,
    }
}

/// Counts a download's connection in the job's budget and the worker's before its body is read
/// (`CONNECTION_READ_MAX`), waiting for them while it is ahead of the writer; the entry being
/// written is never held back (`None`: its connection, like its own share, is not counted).
async fn charge_connection(
    job: &Arc<Semaphore>,
    length: Option<u64>,
    limits: &DownloadLimits,
    writing: &mut watch::Receiver<bool>,
) -> Option<Held> {
    let read = length.map_or(CONNECTION_READ_MAX, |l| {
        usize::try_from(l).map_or(CONNECTION_READ_MAX, |l| l.min(CONNECTION_READ_MAX))
    });
    let bytes = (CONNECTION_BASE + 2 * read).min(limits.job_bytes);
    let charged = async {
        let permit = job.clone().acquire_many_owned(bytes as u32).await.ok()?;
        let worker = limits.budget.reserve(bytes).await;
        Some(Held {
            _share: permit,
            _worker: Some(worker),
        })
    };
    tokio::select! {
        biased;
        _ = writing.wait_for(|w| *w) => None,
        held = charged => held,
    }
}

/// After a broken or stalled body: the rest with `Range` + `If-Range` when the source offered
/// a validator and answers 206; otherwise the whole source again (`true`: its first `received`
/// bytes must be replayed and checked against what was handed on). `None`: no usable answer.
async fn pick_up(
    http: &reqwest::Client,
    url: &url::Url,
    limits: &DownloadLimits,
    validator: Option<&str>,
    received: u64,
) -> Option<(reqwest::Response, bool)> {
    if let Some(validator) = validator {
        let resume = Resume {
            from: received,
            validator: validator.to_owned(),
        };
        match download::fetch(http, url, &limits.egress, Some(&resume)).await {
            Ok(r) if r.status() == reqwest::StatusCode::PARTIAL_CONTENT => return Some((r, false)),
            // 200: the source changed or ignores ranges; the whole body is here, replay it.
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Some((r, true)),
            _ => {}
        }
    }
    match download::fetch(http, url, &limits.egress, None).await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => Some((r, true)),
        _ => None,
    }
}

fn changed() -> SourceError {
    SourceError::transient(
        "source_changed",
        "the source broke off and, fetched again, no longer starts with the bytes already written",
    )
}

fn stalled_error(limits: &DownloadLimits) -> SourceError {
    SourceError::transient(
        "source_stalled",
        format!(
            "the source sent fewer than {} bytes in {} s",
            limits.stall_min_bytes,
            limits.stall_window.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zipkit_test_support::sources::{Behaviour, SourceServer};

    #[test]
    fn objects_over_a_part_are_copied_only_at_a_declared_size() {
        assert!(!copied_size(SMALLEST_COPIED - 1, None));
        assert!(copied_size(SMALLEST_COPIED, None));
        assert!(copied_size(MAX_PART, None));
        assert!(!copied_size(MAX_PART + 1, None));
        assert!(!copied_size(MAX_PART + 1, Some(MAX_PART)));
        assert!(copied_size(MAX_PART + 1, Some(MAX_PART + 1)));
    }

    fn limits(job_bytes: usize) -> DownloadLimits {
        let egress = EgressPolicy::new(&zipkit_test_support::services::loopback_egress());
        DownloadLimits {
            ahead: 3,
            job_bytes,
            own_bytes: OWN_BYTES,
            stall_window: Duration::from_secs(30),
            stall_min_bytes: 1,
            source_wait: Duration::from_secs(30),
            max_source_bytes: 1 << 30,
            egress,
            budget: BufferBudget::new(64 << 20, 8 << 20),
        }
    }

    /// Reads the download to its end; its bytes.
    async fn drain(download: &mut Download) -> usize {
        let mut bytes = 0;
        let wait = Duration::from_secs(10);
        while let Some(event) = tokio::time::timeout(wait, download.events.recv())
            .await
            .expect("the download goes on")
        {
            match event {
                Event::Data(chunk, _) => bytes += chunk.len(),
                Event::Started { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        bytes
    }

    #[tokio::test]
    async fn a_download_ahead_waits_to_count_its_connection_and_the_entry_being_written_never_does()
    {
        // Large sources: each connection ahead counts as the whole job budget (the most one may
        // count), so one of the two downloads ahead reads its body and the other waits, having
        // only answered. `b` answers last (a 500 first, retried): `c`, after it, gets the budget.
        let body = vec![b'z'; 1 << 20];
        let sources = SourceServer::start(vec![
            ("a", Behaviour::Chunked(body.clone())),
            ("b", Behaviour::FailThenServe(1, body.clone())),
            ("c", Behaviour::Chunked(body.clone())),
        ])
        .await;
        let limits = limits(200 * 1024);
        let http = zipkit_sources::client(
            Duration::from_secs(5),
            Duration::from_secs(5),
            limits.ahead,
            &limits.egress,
        );
        let (feed, entries) = mpsc::channel(3);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let source = Source {
                index: i as i32,
                url: SourceUrl::parse(&sources.url(name)).unwrap(),
                filename: EntryName::parse(name).unwrap(),
                modified_at: None,
                declared_size: None,
                copy: false,
            };
            feed.try_send(Ok(source)).unwrap();
        }
        drop(feed);
        let sources = Sources {
            entries,
            buckets: Default::default(),
        };
        let mut prefetcher = Prefetcher::new(http, limits, sources);
        // The entry being written holds bytes beyond its own share from the job budget until
        // it is read; once it is, the budget is the connections'.
        let mut first = prefetcher.next_download().await.unwrap().expect("a");
        assert_eq!(drain(&mut first).await, 1 << 20);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut reading = Vec::new();
        for ahead in prefetcher.running.iter_mut() {
            let mut data = 0;
            while let Ok(event) = ahead.events.try_recv() {
                if matches!(event, Event::Data(..)) {
                    data += 1;
                }
            }
            reading.push(data > 0);
        }
        assert_eq!(
            reading,
            [false, true],
            "one connection ahead fits the budget: c's"
        );

        // `b` is written next while `c`, after it, holds the budget: it goes on all the same,
        // and `c` after it.
        for _ in 0..2 {
            let mut next = prefetcher.next_download().await.unwrap().expect("b, c");
            // What was taken off the channel above is not counted here.
            let rest = drain(&mut next).await;
            assert!(rest > 0 && rest <= 1 << 20, "{rest}");
        }
    }
}
