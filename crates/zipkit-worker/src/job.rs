//! One zip job, from its row to the finished object: sources download ahead (`prefetch`) and go
//! into the archive strictly in request order (`archive`), whose output streams into the multipart
//! upload (`upload`). Entry outcomes and progress are written by a recorder task off the hot path.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{Bucket, EntryOutcome, Zip, ZipEntry};
use zipkit_domain::{EntryState, OnError, Service, ZipId};
use zipkit_storage::BucketLocation;

use crate::archive::deflate::Compressors;
use crate::archive::{
    ArchiveError, ArchiveOptions, ArchiveWriter, DosTime, HEAD_BYTES, ZIP64_THRESHOLD, method_for,
};
use crate::download::SourceError;
use crate::failure::{Blame, JobFailure, Retry};
use crate::prefetch::{DownloadLimits, Event, Prefetcher};
use crate::upload::{self, Destination, PartPlan, StoreTimeouts, UploadError, UploadedPart};

/// Everything a job needs from the worker.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub pool: PgPool,
    pub keyring: Arc<KeyRing>,
    pub http: reqwest::Client,
    /// Clients for the jobs' buckets, under the egress policy.
    pub buckets: zipkit_storage::BucketClients,
    /// Size of the first parts (they grow on S3 for very large archives).
    pub part_size: usize,
    /// Time limits of calls on the store.
    pub store_timeouts: StoreTimeouts,
    /// Parts uploading at once.
    pub parts_in_flight: usize,
    pub owner: String,
    pub downloads: DownloadLimits,
    /// Largest archive a job may build, counted in source bytes.
    pub max_archive_bytes: u64,
    pub deflate_level: u32,
    /// The threads that compress deflate blocks, shared by every job.
    pub compressors: Compressors,
}

/// How a job attempt that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub size: u64,
    pub etag: String,
    pub entries: i32,
}

/// Why feeding the sources stopped early.
enum FeedError {
    Failed(JobFailure),
    /// The uploader stopped taking the archive; its own error says why.
    OutputClosed,
}

impl From<JobFailure> for FeedError {
    fn from(failure: JobFailure) -> Self {
        Self::Failed(failure)
    }
}

impl From<ArchiveError> for FeedError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::OutputClosed => FeedError::OutputClosed,
            e => FeedError::Failed(JobFailure::new(
                "archive_failed",
                e.to_string(),
                Blame::Service,
                Retry::Never,
            )),
        }
    }
}

/// The bucket's row, credentials and client, and the job's entries.
async fn prepare(
    ctx: &JobContext,
    zip: &Zip,
) -> Result<(Destination, Service, Vec<ZipEntry>), JobFailure> {
    let unavailable = |e: &dyn std::fmt::Display| JobFailure::internal(format!("database: {e}"));
    let mut conn = ctx.pool.get().await.map_err(|e| unavailable(&e))?;
    let bucket = Bucket::find_any(&mut conn, zip.bucket_id)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| {
            JobFailure::new(
                "bucket_not_found",
                "the bucket was removed",
                Blame::Service,
                Retry::Never,
            )
        })?;
    let credentials = bucket.credentials(&ctx.keyring).map_err(|e| {
        JobFailure::new(
            "bucket_credentials_unreadable",
            e.to_string(),
            Blame::Service,
            Retry::Never,
        )
    })?;
    let entries = Zip::entries(&mut conn, zip.id)
        .await
        .map_err(|e| unavailable(&e))?;
    drop(conn);
    let location = BucketLocation::from(&bucket);
    let client = ctx.buckets.client(&location, &credentials).map_err(|why| {
        JobFailure::new(
            why.job_code(),
            why.to_string(),
            Blame::Service,
            Retry::Never,
        )
    })?;
    let destination = Destination::new(
        client,
        location,
        zip.object_key.clone(),
        zip.id,
        ctx.store_timeouts,
    );
    Ok((destination, bucket.service, entries))
}

/// Builds the archive for a claimed job. Never panics on bad input.
pub async fn run(
    ctx: &JobContext,
    zip: &Zip,
    cancelled: watch::Receiver<bool>,
) -> Result<Built, JobFailure> {
    let (destination, service, entries) = prepare(ctx, zip).await?;
    let (recorder, notes) = Recorder::start(ctx.pool.clone(), zip.id, ctx.owner.clone());
    let plan = PartPlan::new(
        ctx.part_size,
        ctx.parts_in_flight,
        // R2 needs equal parts, so their size must cover the largest archive from the start.
        (service == Service::R2).then_some(ctx.max_archive_bytes),
    );
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(8);
    let (finished, finished_rx) = tokio::sync::oneshot::channel::<bool>();
    let ledger = PgLedger {
        pool: ctx.pool.clone(),
        zip_id: zip.id,
        owner: ctx.owner.clone(),
        notes: notes.clone(),
    };
    let uploader = tokio::spawn(
        async move { upload::upload(&destination, chunks_rx, plan, &ledger, finished_rx).await }
            .instrument(tracing::Span::current()),
    );

    let archive = ArchiveWriter::new(
        ArchiveOptions {
            level: ctx.deflate_level,
            modified: DosTime::from_utc(zip.created_at),
        },
        ctx.compressors.clone(),
        chunks_tx,
    );
    let feed = feed_sources(ctx, zip, entries, archive, &notes, cancelled).await;
    // The upload is completed only if every source went in and the archive was finished;
    // otherwise the uploader sends nothing more and aborts.
    let _ = finished.send(feed.is_ok());
    let uploaded = uploader.await;
    drop(notes);
    recorder.finish().await;

    match (feed, uploaded) {
        (Err(FeedError::Failed(failure)), _) => Err(failure),
        (_, Err(e)) => Err(JobFailure::internal(format!("the uploader stopped: {e}"))),
        (_, Ok(Err(UploadError::Failed(failure)))) => Err(failure),
        (Err(FeedError::OutputClosed), Ok(_)) | (Ok(_), Ok(Err(UploadError::Abandoned))) => Err(
            JobFailure::internal("the uploader stopped taking the archive"),
        ),
        (Ok(entries), Ok(Ok(uploaded))) => Ok(Built {
            size: uploaded.size,
            etag: uploaded.etag,
            entries,
        }),
    }
}

/// Records the upload in PostgreSQL as it happens (`zips.upload_id`, `zip_parts`). A failure
/// here is this side's, never the bucket's.
struct PgLedger {
    pool: PgPool,
    zip_id: ZipId,
    owner: String,
    notes: mpsc::Sender<Note>,
}

impl upload::Ledger for PgLedger {
    async fn started(&self, upload_id: &str) -> Result<(), JobFailure> {
        let mut conn = self.pool.get().await.map_err(|e| {
            JobFailure::internal(format!("recording the upload in the database failed: {e}"))
        })?;
        match Zip::set_upload_id(&mut conn, self.zip_id, &self.owner, upload_id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(JobFailure::cancelled()),
            Err(e) => Err(JobFailure::internal(format!(
                "recording the upload in the database failed: {e}"
            ))),
        }
    }

    async fn part_uploaded(&self, upload_id: &str, part: &UploadedPart) -> Result<(), JobFailure> {
        let failed = |e: &dyn std::fmt::Display| {
            JobFailure::internal(format!(
                "recording part {} in the database failed: {e}",
                part.number
            ))
        };
        let mut conn = self.pool.get().await.map_err(|e| failed(&e))?;
        Zip::record_part(
            &mut conn,
            self.zip_id,
            upload_id,
            part.number,
            &part.etag,
            part.size,
        )
        .await
        .map_err(|e| failed(&e))?;
        let _ = self.notes.send(Note::Uploaded(part.size)).await;
        Ok(())
    }
}

/// Leaves a failed source out of the archive (`on_error: skip`) by recording why.
async fn skip(notes: &mpsc::Sender<Note>, index: i32, error: SourceError) {
    let outcome = EntryOutcome {
        index,
        state: EntryState::Skipped,
        size: None,
        crc32: None,
        error_code: Some(error.code.into()),
        error_message: Some(error.message),
    };
    let _ = notes.send(Note::Entry(outcome)).await;
}

/// Takes each entry's download in order and writes it into the archive; returns how many
/// entries went in.
async fn feed_sources(
    ctx: &JobContext,
    zip: &Zip,
    entries: Vec<ZipEntry>,
    mut archive: ArchiveWriter,
    notes: &mpsc::Sender<Note>,
    mut cancelled: watch::Receiver<bool>,
) -> Result<i32, FeedError> {
    let mut downloads = Prefetcher::new(ctx.http.clone(), ctx.downloads.clone(), entries);
    let skipping = zip.on_error == OnError::Skip;
    let (mut done, mut total, mut unreported) = (0i32, 0u64, 0u64);
    'entries: while let Some(mut download) = downloads.next_download() {
        let index = download.entry.entry_index;
        // A quiet source must not delay a cancel: wait for whichever comes first.
        let mut next = async || -> Result<Option<Event>, FeedError> {
            tokio::select! {
                event = download.events.recv() => Ok(event),
                _ = cancelled.wait_for(|c| *c) => Err(JobFailure::cancelled().into()),
            }
        };
        let content_length = match next().await? {
            Some(Event::Started { content_length }) => content_length,
            Some(Event::Failed(error)) if skipping => {
                skip(notes, index, error).await;
                continue;
            }
            Some(Event::Failed(error)) => return Err(error.into_failure(index).into()),
            Some(Event::Data(..)) | None => {
                return Err(JobFailure::internal(format!(
                    "urls[{index}]: the download stopped unexpectedly"
                ))
                .with_param(format!("urls[{index}]"))
                .into());
            }
        };
        // `auto` may need the first bytes to decide; they are written right after the header.
        // Always the same number of them, however the network cut them into chunks: the same
        // job must give the same archive.
        let mut early = std::collections::VecDeque::new();
        let mut head = Vec::new();
        while head.len() < HEAD_BYTES {
            let event = next().await?;
            let more = match &event {
                Some(Event::Data(bytes, _)) => {
                    let take = bytes.len().min(HEAD_BYTES - head.len());
                    head.extend_from_slice(&bytes[..take]);
                    true
                }
                _ => false,
            };
            early.push_back(event);
            if !more {
                break;
            }
        }
        let method = method_for(zip.compression, &download.entry.filename, &head);
        let zip64 = content_length.is_none_or(|l| l >= ZIP64_THRESHOLD);
        archive
            .start_entry(&download.entry.filename, method, zip64)
            .await?;
        loop {
            let event = match early.pop_front() {
                Some(event) => event,
                None => next().await?,
            };
            match event {
                Some(Event::Data(bytes, permit)) => {
                    total += bytes.len() as u64;
                    if total > ctx.max_archive_bytes {
                        let message = format!(
                            "the sources add up to more than this deployment's limit of {} bytes",
                            ctx.max_archive_bytes
                        );
                        return Err(JobFailure::new(
                            "archive_too_large",
                            message,
                            Blame::Request,
                            Retry::Never,
                        )
                        .with_param(format!("urls[{index}]"))
                        .into());
                    }
                    // Counted locally and reported when the recorder has room: never waits.
                    unreported += bytes.len() as u64;
                    if notes.try_send(Note::Downloaded(unreported)).is_ok() {
                        unreported = 0;
                    }
                    archive.write(bytes).await?;
                    drop(permit);
                }
                // Some of its bytes are in the archive already: the entry is closed and left out
                // of the central directory, so no reader lists it (docs/JOBS.md).
                Some(Event::Failed(error)) if skipping => {
                    archive.abandon_entry().await?;
                    skip(notes, index, error).await;
                    continue 'entries;
                }
                Some(Event::Failed(error)) => return Err(error.into_failure(index).into()),
                Some(Event::Started { .. }) => {}
                None => break,
            }
        }
        let summary = archive.finish_entry().await?;
        done += 1;
        let outcome = EntryOutcome {
            index,
            state: EntryState::Done,
            size: Some(i64::try_from(summary.size).unwrap_or(i64::MAX)),
            crc32: Some(i64::from(summary.crc32)),
            error_code: None,
            error_message: None,
        };
        let _ = notes.send(Note::Entry(outcome)).await;
    }
    if done == 0 {
        // Asked to leave failures out, the caller still wants an archive of something: an empty
        // one would "succeed" with nothing in it. Each entry's own reason is recorded.
        return Err(JobFailure::new(
            "all_sources_skipped",
            "every source failed and was skipped (on_error: skip), so no archive was written; \
             each source's reason is on its entry",
            Blame::Request,
            Retry::Never,
        )
        .into());
    }
    archive.finish().await?;
    let _ = notes.send(Note::Downloaded(unreported)).await;
    Ok(done)
}

/// What the recorder writes.
#[derive(Debug)]
enum Note {
    Entry(EntryOutcome),
    Downloaded(u64),
    Uploaded(i64),
}

/// Writes entry outcomes as they come and progress counters at most every `PROGRESS_EVERY`, on
/// its own task so the database never slows the archive down.
struct Recorder {
    task: tokio::task::JoinHandle<()>,
}

const PROGRESS_EVERY: Duration = Duration::from_millis(500);

impl Recorder {
    fn start(pool: PgPool, zip_id: ZipId, owner: String) -> (Self, mpsc::Sender<Note>) {
        let (tx, mut rx) = mpsc::channel::<Note>(4096);
        let task = tokio::spawn(async move {
            let (mut files, mut downloaded, mut uploaded) = (0i32, 0i64, 0i64);
            let mut dirty = false;
            let mut last = tokio::time::Instant::now();
            loop {
                let note = tokio::time::timeout(PROGRESS_EVERY, rx.recv()).await;
                let closed = matches!(note, Ok(None));
                match note {
                    Ok(Some(Note::Entry(outcome))) => {
                        if outcome.state == EntryState::Done {
                            files += 1;
                        }
                        dirty = true;
                        match pool.get().await {
                            Ok(mut conn) => {
                                if let Err(e) = Zip::record_entry(&mut conn, zip_id, &outcome).await
                                {
                                    tracing::warn!(zip.id = %zip_id, error = %e, "recording an entry failed");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(zip.id = %zip_id, error = %e, "recording an entry failed");
                            }
                        }
                    }
                    Ok(Some(Note::Downloaded(n))) => {
                        downloaded += i64::try_from(n).unwrap_or(0);
                        dirty = true;
                    }
                    Ok(Some(Note::Uploaded(n))) => {
                        uploaded += n;
                        dirty = true;
                    }
                    Ok(None) | Err(_) => {}
                }
                if dirty && (closed || last.elapsed() >= PROGRESS_EVERY) {
                    if let Ok(mut conn) = pool.get().await {
                        let _ = Zip::record_progress(
                            &mut conn, zip_id, &owner, files, downloaded, uploaded,
                        )
                        .await;
                    }
                    dirty = false;
                    last = tokio::time::Instant::now();
                }
                if closed {
                    return;
                }
            }
        });
        (Self { task }, tx)
    }

    /// Waits until everything sent so far is written.
    async fn finish(self) {
        let _ = self.task.await;
    }
}
