//! Sources downloaded ahead of the writer. Each entry gets its own task that starts the download
//! (with retries), watches for stalls and size limits, resumes with `Range` + `If-Range` after a
//! broken connection when the source allows it, and hands its bytes over through a channel. At
//! most `ahead` entries download at once and each holds at most `bytes_per_entry` unconsumed
//! bytes, so memory is bounded by count and by bytes; the job takes the entries strictly in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use zipkit_domain::models::ZipEntry;

use crate::download::{self, ATTEMPTS, Resume, SourceError};

/// Limits and timing for source downloads.
#[derive(Debug, Clone)]
pub struct DownloadLimits {
    /// Entries downloading at once (the one being written included).
    pub ahead: usize,
    /// Unconsumed bytes one entry may hold.
    pub bytes_per_entry: usize,
    /// A source slower than `stall_min_bytes` per `stall_window` is stalled.
    pub stall_window: Duration,
    pub stall_min_bytes: u64,
    /// Largest source accepted.
    pub max_source_bytes: u64,
    pub allow_private_networks: bool,
}

/// What an entry's download reports, in this order: `Started`, then `Data`..., then the channel
/// closes (complete) or `Failed` comes last.
#[derive(Debug)]
pub enum Event {
    Started {
        content_length: Option<u64>,
    },
    /// Bytes, with the share of the entry's byte budget they hold until consumed.
    Data(Bytes, OwnedSemaphorePermit),
    /// The download failed for good (after any bytes already handed over).
    Failed(SourceError),
}

/// An entry whose download runs in the background; dropping it stops the download.
#[derive(Debug)]
pub struct Download {
    pub entry: ZipEntry,
    pub events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Download {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts downloads ahead and yields them in request order.
#[derive(Debug)]
pub struct Prefetcher {
    waiting: VecDeque<ZipEntry>,
    running: VecDeque<Download>,
    http: reqwest::Client,
    limits: Arc<DownloadLimits>,
}

impl Prefetcher {
    pub fn new(http: reqwest::Client, limits: DownloadLimits, entries: Vec<ZipEntry>) -> Self {
        Self {
            waiting: entries.into(),
            running: VecDeque::new(),
            http,
            limits: Arc::new(limits),
        }
    }

    /// The next entry in order, its download already under way; later ones start meanwhile.
    pub fn next_download(&mut self) -> Option<Download> {
        self.fill();
        let next = self.running.pop_front();
        self.fill();
        next
    }

    fn fill(&mut self) {
        while self.running.len() < self.limits.ahead.max(1) {
            let Some(entry) = self.waiting.pop_front() else {
                return;
            };
            // Capacity is not the bound (the byte budget is); it only has to exceed the chunks
            // the budget can hold.
            let (tx, events) = mpsc::channel(1024);
            let task = tokio::spawn(download(
                self.http.clone(),
                entry.url.clone(),
                self.limits.clone(),
                tx,
            ));
            self.running.push_back(Download {
                entry,
                events,
                task,
            });
        }
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

async fn download(
    http: reqwest::Client,
    url: String,
    limits: Arc<DownloadLimits>,
    tx: mpsc::Sender<Event>,
) {
    let response =
        match download::fetch_with_retries(&http, &url, limits.allow_private_networks).await {
            Ok(response) => response,
            Err(error) => {
                let _ = tx.send(Event::Failed(error)).await;
                return;
            }
        };
    let content_length = response.content_length();
    if content_length.is_some_and(|l| l > limits.max_source_bytes) {
        let error = too_large(limits.max_source_bytes);
        let _ = tx.send(Event::Failed(error)).await;
        return;
    }
    let validator = Resume::validator(&response);
    if tx.send(Event::Started { content_length }).await.is_err() {
        return;
    }
    let budget = Arc::new(Semaphore::new(limits.bytes_per_entry.max(1)));
    let mut body = response.bytes_stream();
    let (mut received, mut attempt, mut backoff) = (0u64, 1u32, Duration::from_millis(250));
    let mut stall = StallWatch::new(limits.stall_window, limits.stall_min_bytes);
    loop {
        let error = match tokio::time::timeout_at(stall.deadline(), body.next()).await {
            Ok(None) => return, // complete: the channel closes
            Ok(Some(Ok(chunk))) => {
                received += chunk.len() as u64;
                if received > limits.max_source_bytes {
                    let error = too_large(limits.max_source_bytes);
                    let _ = tx.send(Event::Failed(error)).await;
                    return;
                }
                let stalled = stall.check(chunk.len() as u64).is_err();
                let share = chunk.len().clamp(1, limits.bytes_per_entry.max(1)) as u32;
                let Ok(permit) = budget.clone().acquire_many_owned(share).await else {
                    return;
                };
                if tx.send(Event::Data(chunk, permit)).await.is_err() {
                    return;
                }
                if !stalled {
                    continue;
                }
                stalled_error(&limits)
            }
            Ok(Some(Err(_))) => SourceError {
                code: "source_unreachable",
                message: "the source stopped sending before the end".into(),
            },
            Err(_) if stall.check(0).is_ok() => continue,
            Err(_) => stalled_error(&limits),
        };
        // Pick the download up where it broke off, if the source can say it did not change.
        let resumed = match &validator {
            Some(validator) if attempt < ATTEMPTS => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
                let resume = Resume {
                    from: received,
                    validator: validator.clone(),
                };
                tracing::info!(
                    url.len = url.len(),
                    from = received,
                    attempt,
                    code = error.code,
                    "resuming a source"
                );
                match download::fetch(&http, &url, limits.allow_private_networks, Some(&resume))
                    .await
                {
                    Ok(r) if r.status() == reqwest::StatusCode::PARTIAL_CONTENT => Some(r),
                    _ => None,
                }
            }
            _ => None,
        };
        match resumed {
            Some(response) => {
                body = response.bytes_stream();
                stall = StallWatch::new(limits.stall_window, limits.stall_min_bytes);
            }
            None => {
                let _ = tx.send(Event::Failed(error)).await;
                return;
            }
        }
    }
}

fn too_large(limit: u64) -> SourceError {
    SourceError {
        code: "source_too_large",
        message: format!("the source is larger than this deployment's limit of {limit} bytes"),
    }
}

fn stalled_error(limits: &DownloadLimits) -> SourceError {
    SourceError {
        code: "source_stalled",
        message: format!(
            "the source sent fewer than {} bytes in {} s",
            limits.stall_min_bytes,
            limits.stall_window.as_secs()
        ),
    }
}
