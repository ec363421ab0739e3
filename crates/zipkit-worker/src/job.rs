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
use zipkit_domain::models::{Bucket, EntryOutcome, JobError, Zip, ZipEntry, ZipOutcome};
use zipkit_domain::{EntryState, OnError, Service, ZipId};
use zipkit_storage::BucketLocation;

use crate::archive::deflate::Compressors;
use crate::archive::{
    ArchiveError, ArchiveOptions, ArchiveWriter, DosTime, ZIP64_THRESHOLD, method_for,
};
use crate::prefetch::{DownloadLimits, Event, Prefetcher};
use crate::upload::{self, PartPlan, Target};

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

/// A failed outcome. The source's problems are the request's (`invalid_request_error`: fix the
/// URL and resubmit); everything else — the bucket, the database, the archive — is `api_error`.
fn failed(code: &str, message: impl Into<String>, param: Option<String>) -> ZipOutcome {
    let error_type = if code.starts_with("source_")
        || code == "archive_too_large"
        || code == "all_sources_skipped"
    {
        "invalid_request_error"
    } else {
        "api_error"
    };
    ZipOutcome::Failed(JobError {
        error_type: error_type.into(),
        code: code.into(),
        message: message.into(),
        param,
    })
}

/// Whether a failure may go away on its own, so the whole job is worth another attempt later:
/// sources that were down, slow or rate limiting, and trouble on the way to the bucket or in this
/// worker. A missing source, a refused bucket or a job over a limit fail at once.
pub fn is_transient(code: &str) -> bool {
    crate::download::is_transient_code(code)
        || matches!(
            code,
            "bucket_unreachable" | "bucket_unavailable" | "bucket_upload_failed" | "internal_error"
        )
}

/// Why feeding the sources stopped early.
enum FeedError {
    Outcome(ZipOutcome),
    /// The uploader stopped taking the archive; its own error says why.
    OutputClosed,
}

impl From<ArchiveError> for FeedError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::OutputClosed => FeedError::OutputClosed,
            e => FeedError::Outcome(failed("archive_failed", e.to_string(), None)),
        }
    }
}

/// Builds the archive for a claimed job and says how it ended. Never panics on bad input.
pub async fn run(ctx: &JobContext, zip: &Zip, cancelled: watch::Receiver<bool>) -> ZipOutcome {
    let mut conn = match ctx.pool.get().await {
        Ok(conn) => conn,
        Err(e) => return failed("internal_error", format!("database unavailable: {e}"), None),
    };
    let bucket = match Bucket::find_any(&mut conn, zip.bucket_id).await {
        Ok(Some(bucket)) => bucket,
        Ok(None) => return failed("bucket_not_found", "the bucket was removed", None),
        Err(e) => return failed("internal_error", e.to_string(), None),
    };
    let credentials = match bucket.credentials(&ctx.keyring) {
        Ok(c) => c,
        Err(e) => return failed("bucket_credentials_unreadable", e.to_string(), None),
    };
    let entries = match Zip::entries(&mut conn, zip.id).await {
        Ok(e) => e,
        Err(e) => return failed("internal_error", e.to_string(), None),
    };
    drop(conn);

    let location = BucketLocation::from(&bucket);
    let client = match ctx.buckets.client(&location, &credentials) {
        Ok(client) => client,
        Err(why) => return failed(why.job_code(), why.to_string(), None),
    };
    let mut create = client
        .create_multipart_upload()
        .bucket(&bucket.name)
        .key(&zip.object_key)
        .content_type("application/zip");
    if let Some(acl) = &location.acl {
        create = create.acl(aws_sdk_s3::types::ObjectCannedAcl::from(acl.as_str()));
    }
    let create_span = tracing::info_span!("create upload", otel.kind = "client");
    let upload_id = match create.send().instrument(create_span).await {
        Ok(out) => out.upload_id().unwrap_or_default().to_owned(),
        Err(e) => {
            let why = zipkit_storage::explain(&location, &e);
            return failed(why.job_code(), why.to_string(), None);
        }
    };
    let target = Target {
        client,
        bucket: bucket.name.clone(),
        key: zip.object_key.clone(),
        upload_id: upload_id.clone(),
    };
    if let Ok(mut conn) = ctx.pool.get().await {
        let _ = Zip::set_upload_id(&mut conn, zip.id, &ctx.owner, &upload_id).await;
    }

    let (recorder, notes) = Recorder::start(ctx.pool.clone(), zip.id, ctx.owner.clone());
    let plan = PartPlan::new(
        ctx.part_size,
        ctx.parts_in_flight,
        // R2 needs equal parts, so their size must cover the largest archive from the start.
        (bucket.service == Service::R2).then_some(ctx.max_archive_bytes),
    );
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(8);
    let (complete, complete_rx) = tokio::sync::oneshot::channel::<bool>();
    let uploader = tokio::spawn(
        {
            let (pool, zip_id, upload_id) = (ctx.pool.clone(), zip.id, upload_id.clone());
            let target = target.clone();
            let notes = notes.clone();
            async move {
                let mut record = move |number: i32, etag: String, size: i64| {
                    let (pool, upload_id, notes) = (pool.clone(), upload_id.clone(), notes.clone());
                    Box::pin(async move {
                        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                        Zip::record_part(&mut conn, zip_id, &upload_id, number, &etag, size)
                            .await
                            .map_err(|e| e.to_string())?;
                        let _ = notes.send(Note::Uploaded(size)).await;
                        Ok(())
                    })
                        as std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
                };
                upload::upload(&target, chunks_rx, plan, &mut record, complete_rx).await
            }
        }
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
    // Complete the upload only if every source went in and the archive was finished.
    let _ = complete.send(feed.is_ok());
    let uploaded = uploader.await;
    drop(notes);
    recorder.finish().await;

    let outcome = match (feed, uploaded) {
        (Err(FeedError::Outcome(outcome)), _) => outcome,
        (_, Err(e)) => failed("internal_error", format!("the uploader stopped: {e}"), None),
        (_, Ok(Err(e))) => failed("bucket_upload_failed", e.to_string(), None),
        (Err(FeedError::OutputClosed), Ok(Ok(_))) => failed(
            "internal_error",
            "the uploader stopped taking the archive",
            None,
        ),
        (Ok(done), Ok(Ok((size, etag)))) => ZipOutcome::Succeeded {
            size: i64::try_from(size).unwrap_or(i64::MAX),
            etag,
            entries: done,
        },
    };
    if matches!(outcome, ZipOutcome::Failed(_)) {
        upload::abort(&target).await;
    }
    outcome
}

fn cancelled_outcome() -> FeedError {
    FeedError::Outcome(failed(
        "cancelled",
        "the job was cancelled (or taken over by another worker)",
        None,
    ))
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
    let (mut done, mut total, mut unreported) = (0i32, 0u64, 0u64);
    while let Some(mut download) = downloads.next_download() {
        let index = download.entry.entry_index;
        let param = || Some(format!("urls[{index}]"));
        // A quiet source must not delay a cancel: wait for whichever comes first.
        let mut next = async || -> Result<Option<Event>, FeedError> {
            tokio::select! {
                event = download.events.recv() => Ok(event),
                _ = cancelled.wait_for(|c| *c) => Err(cancelled_outcome()),
            }
        };
        let content_length = match next().await? {
            Some(Event::Started { content_length }) => content_length,
            Some(Event::Failed(error)) if zip.on_error == OnError::Skip => {
                let outcome = EntryOutcome {
                    index,
                    state: EntryState::Skipped,
                    size: None,
                    crc32: None,
                    error_code: Some(error.code.into()),
                    error_message: Some(error.message),
                };
                let _ = notes.send(Note::Entry(outcome)).await;
                continue;
            }
            Some(Event::Failed(error)) => {
                let message = format!("urls[{index}]: {}", error.message);
                return Err(FeedError::Outcome(failed(error.code, message, param())));
            }
            Some(Event::Data(..)) | None => {
                let message = format!("urls[{index}]: the download stopped unexpectedly");
                return Err(FeedError::Outcome(failed(
                    "internal_error",
                    message,
                    param(),
                )));
            }
        };
        // `auto` may need the first bytes to decide; they are written right after the header.
        let mut first = next().await?;
        let head = match &first {
            Some(Event::Data(bytes, _)) => bytes.clone(),
            _ => Bytes::new(),
        };
        let method = method_for(zip.compression, &download.entry.filename, &head);
        let zip64 = content_length.is_none_or(|l| l >= ZIP64_THRESHOLD);
        archive
            .start_entry(&download.entry.filename, method, zip64)
            .await?;
        loop {
            let event = match first.take() {
                Some(event) => Some(event),
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
                        return Err(FeedError::Outcome(failed(
                            "archive_too_large",
                            message,
                            param(),
                        )));
                    }
                    // Counted locally and reported when the recorder has room: never waits.
                    unreported += bytes.len() as u64;
                    if notes.try_send(Note::Downloaded(unreported)).is_ok() {
                        unreported = 0;
                    }
                    archive.write(bytes).await?;
                    drop(permit);
                }
                // Bytes of this entry are already in the archive: no skipping from here on.
                Some(Event::Failed(error)) => {
                    let message = format!("urls[{index}]: {}", error.message);
                    return Err(FeedError::Outcome(failed(error.code, message, param())));
                }
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
        return Err(FeedError::Outcome(failed(
            "all_sources_skipped",
            "every source failed and was skipped (on_error: skip), so no archive was written; \
             each source's reason is on its entry",
            None,
        )));
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
