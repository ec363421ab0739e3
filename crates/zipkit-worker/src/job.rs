//! One zip job, from its row to the finished object: sources download ahead (`prefetch`) and go
//! into the archive strictly in request order (`archive`), whose output streams into the multipart
//! upload (`upload`). Entry outcomes and progress are written by a recorder task off the hot path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{Bucket, EntryOutcome, EntryPlacement, PlacedEnd, Zip, ZipEntry};
use zipkit_domain::{EntryState, OnError, Service, ZipId, ZipStatus};
use zipkit_storage::BucketLocation;

use crate::archive::deflate::Compressors;
use crate::archive::{
    ArchiveError, ArchiveOptions, ArchiveWriter, EntryTime, HEAD_BYTES, Method, Piece, Placement,
    method_for,
};
use crate::download::{self, SourceError};
use crate::expected::ExpectedSize;
use crate::failure::{Blame, JobFailure, Retry};
use crate::lease::Interrupt;
use crate::memory::{BufferBudget, PartMemory};
use crate::prefetch::{Continue, DownloadLimits, Event, Prefetcher, Source};
use crate::resume::{self, Continuation};
use crate::upload::{
    self, Destination, Ending, PartPlan, Resume, StoreTimeouts, UploadError, UploadedPart,
};

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
    /// The worker's buffer memory, shared by its jobs (`worker.buffer_mib`).
    pub buffers: BufferBudget,
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
    /// The entry this build continues could not be picked up where it was cut
    /// (`Event::RangeRefused`).
    Uncontinued,
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
            // The continued entry is not the one in the bucket: build it from its start.
            ArchiveError::Changed(_) => FeedError::Uncontinued,
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
    let mut conn = ctx.pool.get().await.map_err(JobFailure::database)?;
    let bucket = Bucket::find_any(&mut conn, zip.bucket_id)
        .await
        .map_err(JobFailure::database)?
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
        .map_err(JobFailure::database)?;
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

/// Builds the archive for a claimed job. Never panics on bad input. A job taken over from a
/// worker that died continues its upload when the archive rebuilds to the same bytes, and
/// otherwise starts a new one (aborting the old): never a mix of two archives.
pub async fn run(
    ctx: &JobContext,
    zip: &Zip,
    cancelled: watch::Receiver<Interrupt>,
) -> Result<Built, JobFailure> {
    let (destination, service, entries) = prepare(ctx, zip).await?;
    // One copy for both builds, of what downloads need; the rows as loaded (~0.3 KiB each, with
    // the database client's buffers) are given back before the job's buffers fill up.
    let entries: Arc<[Source]> = entries.into_iter().map(Source::from).collect();
    zipkit_runtime::allocator::release_free_memory();
    let plan = PartPlan::new(
        ctx.part_size,
        ctx.parts_in_flight,
        // R2 needs equal parts, so their size must cover the largest archive from the start.
        (service == Service::R2).then_some(ctx.max_archive_bytes),
    );
    // Everything that decides the archive's bytes and where its parts are cut.
    let description = format!(
        "{} level {} {}",
        ARCHIVE_FORMAT,
        ctx.deflate_level,
        plan.describe()
    );
    let resume = resume_point(ctx, zip, &destination, &description, &entries).await?;
    let resuming = resume.as_ref().map(|(r, _)| r.upload_id.clone());
    let job = Attempt {
        ctx,
        zip,
        destination: &destination,
        plan,
        description: &description,
    };

    let mut built = job.build(entries.clone(), cancelled.clone(), resume).await;
    if let Err(Restart::Uncontinued) = built {
        tracing::info!(
            zip.id = %zip.id,
            "the source cut by the uploaded parts' end did not answer the range asked for; \
             building its entry again from its start"
        );
        // The same as before (the build recorded nothing), without continuing that entry.
        let resume = resume_point(ctx, zip, &destination, &description, &entries)
            .await?
            .map(|(resume, kept)| {
                let kept = kept.without_continuing();
                let from = (kept.written.offset, kept.written.crc32);
                let resume = Resume {
                    from: from.0,
                    crc32_before: from.1,
                    ..resume
                };
                (resume, kept)
            });
        built = job.build(entries.clone(), cancelled.clone(), resume).await;
    }
    match built {
        Err(Restart::Diverged { part }) => {
            let upload_id = resuming.unwrap_or_default();
            tracing::warn!(
                zip.id = %zip.id,
                upload.id = %upload_id,
                part,
                "the rebuilt archive differs from the part already uploaded (a source changed?); \
                 aborting that upload and starting a new one"
            );
            destination.abort(&upload_id).await;
            forget_upload(ctx, zip, &upload_id).await?;
        }
        Err(Restart::Lost(failure)) => {
            let upload_id = resuming.unwrap_or_default();
            tracing::warn!(
                zip.id = %zip.id,
                upload.id = %upload_id,
                error = %failure,
                "the upload to resume is gone from the bucket; starting a new one"
            );
            forget_upload(ctx, zip, &upload_id).await?;
        }
        Err(Restart::Not(failure)) => return Err(failure),
        Err(Restart::Uncontinued) => {
            return Err(JobFailure::internal(
                "a build that continues no entry was asked to start one over",
            ));
        }
        Ok(built) => return Ok(built),
    }
    match job.build(entries, cancelled, None).await {
        Ok(built) => Ok(built),
        Err(Restart::Not(failure) | Restart::Lost(failure)) => Err(failure),

        Err(Restart::Diverged { .. } | Restart::Uncontinued) => Err(JobFailure::internal(
            "a build from byte zero was asked to check parts or continue an entry it does not have",
        )),
    }
}

/// The version of the archive writer's output: a worker resumes another's upload only when it
/// writes the same bytes. Bump it with any change to what `archive` emits.
const ARCHIVE_FORMAT: &str = "zipkit-archive/2";

/// The upload a job taken over can continue: the one recorded for it, made with the same plan,
/// and its parts from the first on, each with its CRC-32; and the entries wholly inside those
/// parts, which are not built again. Any other recorded upload is aborted.
async fn resume_point(
    ctx: &JobContext,
    zip: &Zip,
    destination: &Destination,
    description: &str,
    entries: &[Source],
) -> Result<Option<(Resume, Continuation)>, JobFailure> {
    let Some(upload_id) = zip.upload_id.clone() else {
        return Ok(None);
    };
    let mut conn = ctx.pool.get().await.map_err(JobFailure::database)?;
    let recorded = Zip::upload_plan(&mut conn, zip.id, &upload_id)
        .await
        .map_err(JobFailure::database)?;
    if recorded.as_deref() != Some(description) {
        tracing::info!(
            zip.id = %zip.id,
            upload.id = %upload_id,
            recorded = recorded.as_deref().unwrap_or("none"),
            current = description,
            "the upload to take over was made with other settings; starting a new one"
        );
        drop(conn);
        destination.abort(&upload_id).await;
        forget_upload(ctx, zip, &upload_id).await?;
        return Ok(None);
    }
    let mut parts = Vec::new();
    for part in Zip::parts(&mut conn, zip.id, &upload_id)
        .await
        .map_err(JobFailure::database)?
    {
        // From part 1 on without a gap; later ones are uploaded again.
        let Some(crc32) = part.crc32.and_then(|c| u32::try_from(c).ok()) else {
            break;
        };
        if part.part_number != parts.len() as i32 + 1 {
            break;
        }
        parts.push(UploadedPart {
            number: part.part_number,
            etag: part.etag,
            size: part.size,
            crc32,
        });
    }
    let uploaded = parts.iter().map(|p| p.size as u64).sum::<u64>();
    let recorded = Zip::recorded_entries(&mut conn, zip.id)
        .await
        .map_err(JobFailure::database)?;
    drop(conn);
    let kept = resume::continuation(
        &recorded,
        entries,
        &parts,
        EntryTime::from_utc(zip.created_at),
    );
    drop(recorded);
    zipkit_runtime::allocator::release_free_memory();
    tracing::info!(
        zip.id = %zip.id,
        upload.id = %upload_id,
        parts = parts.len(),
        bytes = uploaded,
        entries_kept = kept.kept,
        rebuilt_from = kept.written.offset,
        continued_from = kept.continuing.as_ref().map(|c| c.from),
        "taking the job over: resuming its upload"
    );
    let resume = Resume {
        upload_id,
        parts,
        from: kept.written.offset,
        crc32_before: kept.written.crc32,
    };
    Ok(Some((resume, kept)))
}

/// Whether the job's lease is still this worker's (the heartbeat notices a lost lease only on
/// its next beat). When the database cannot say, the job goes on as if it were.
async fn still_ours(ctx: &JobContext, zip: &Zip) -> bool {
    let Ok(mut conn) = ctx.pool.get().await else {
        return true;
    };
    match Zip::find_any(&mut conn, zip.id).await {
        Ok(Some(now)) => {
            now.status == ZipStatus::Processing && now.lease_owner.as_deref() == Some(&ctx.owner)
        }
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Marks an upload ended and no longer the job's.
async fn forget_upload(ctx: &JobContext, zip: &Zip, upload_id: &str) -> Result<(), JobFailure> {
    let mut conn = ctx.pool.get().await.map_err(JobFailure::database)?;
    Zip::end_upload(&mut conn, zip.id, upload_id)
        .await
        .map_err(JobFailure::database)?;
    Zip::forget_upload(&mut conn, zip.id, &ctx.owner)
        .await
        .map_err(JobFailure::database)?;
    Ok(())
}

/// How one build of the archive ended, when it did not.
enum Restart {
    /// A failure of the job.
    Not(JobFailure),
    /// The resumed upload's parts do not match the rebuilt archive.
    Diverged { part: i32 },
    /// The resumed upload is gone.
    Lost(JobFailure),
    /// The entry cut by the uploaded parts' end could not be continued: build it from its start
    /// (the upload is left as it was).
    Uncontinued,
}

impl From<JobFailure> for Restart {
    fn from(failure: JobFailure) -> Self {
        Self::Not(failure)
    }
}

/// One build of a job's archive, from its first source to its object.
struct Attempt<'a> {
    ctx: &'a JobContext,
    zip: &'a Zip,
    destination: &'a Destination,
    plan: PartPlan,
    description: &'a str,
}

impl Attempt<'_> {
    async fn build(
        &self,
        entries: Arc<[Source]>,
        cancelled: watch::Receiver<Interrupt>,
        resume: Option<(Resume, Continuation)>,
    ) -> Result<Built, Restart> {
        let (ctx, zip) = (self.ctx, self.zip);
        let (resume, kept) = match resume {
            Some((resume, kept)) => (Some(resume), kept),
            None => {
                // Built from byte zero: an earlier build's placements are not this one's.
                let mut conn = ctx.pool.get().await.map_err(JobFailure::database)?;
                Zip::clear_placements(&mut conn, zip.id)
                    .await
                    .map_err(JobFailure::database)?;
                (None, Continuation::default())
            }
        };
        // Before the first download: a job that has started can always finish.
        let memory = PartMemory::reserve(&ctx.buffers, self.plan.size(1)).await;
        let (recorder, notes) = Recorder::start(ctx.pool.clone(), zip.id, ctx.owner.clone());
        if let Some(resume) = &resume {
            let already: i64 = resume.parts.iter().map(|p| p.size).sum();
            let _ = notes.send(Note::Uploaded(already)).await;
            let _ = notes
                .send(Note::Kept {
                    files: kept.files,
                    bytes: kept.bytes,
                })
                .await;
        }
        let (chunks_tx, chunks_rx) = mpsc::channel::<Piece>(8);
        let (finished, finished_rx) = tokio::sync::oneshot::channel::<Ending>();
        let ledger = PgLedger {
            pool: ctx.pool.clone(),
            zip_id: zip.id,
            owner: ctx.owner.clone(),
            plan: self.description.to_owned(),
            notes: notes.clone(),
        };
        let (destination, plan) = (self.destination.clone(), self.plan);
        let uploader = tokio::spawn(
            async move {
                upload::upload(
                    &destination,
                    chunks_rx,
                    plan,
                    &memory,
                    &ledger,
                    finished_rx,
                    resume,
                )
                .await
            }
            .instrument(tracing::Span::current()),
        );
        let written = kept.written;
        let rest: Arc<[Source]> = match (kept.kept, kept.times.is_empty()) {
            (0, true) => entries,
            (kept, true) => Arc::from(&entries[kept..]),
            // Entries placed before keep the time the earlier build gave them.
            (kept_count, false) => {
                let times: std::collections::HashMap<_, _> = kept.times.into_iter().collect();
                entries[kept_count..]
                    .iter()
                    .map(|source| Source {
                        modified_at: times.get(&source.index).copied().or(source.modified_at),
                        ..source.clone()
                    })
                    .collect()
            }
        };
        let carried = Carried {
            files: kept.files,
            bytes: kept.bytes,
            continuing: kept.continuing,
            expected: ExpectedSize::new(zip.compression, rest.clone(), &written),
        };
        let archive = ArchiveWriter::resume(
            ArchiveOptions {
                level: ctx.deflate_level,
            },
            ctx.compressors.clone(),
            chunks_tx,
            written,
        );
        let feed = feed_sources(ctx, zip, rest, archive, &notes, cancelled.clone(), carried).await;
        // The upload is completed only if every source went in and the archive was finished,
        // and the job is still this worker's: one that was paused past its lease may find its
        // archive whole while another worker continues the same upload, which is that worker's
        // to complete. Otherwise the uploader sends nothing more, and aborts unless another
        // worker has the job now.
        let interrupt = *cancelled.borrow();
        let _ = finished.send(match (&feed, interrupt) {
            (Ok(_), Interrupt::TakenOver) => Ending::HandOver,
            (Ok(_), _) if !still_ours(ctx, zip).await => Ending::HandOver,
            (Ok(_), _) => Ending::Complete,
            // Nothing was sent; the next build continues the upload.
            (Err(FeedError::Uncontinued), _) => Ending::HandOver,
            (Err(_), interrupt) if interrupt.keeps_upload() => Ending::HandOver,
            (Err(_), _) => Ending::Abort,
        });
        let uploaded = uploader.await;
        drop(notes);
        recorder.finish().await;

        match (feed, uploaded) {
            (Err(FeedError::Uncontinued), _) => Err(Restart::Uncontinued),
            (_, Ok(Err(UploadError::Diverged { part }))) => Err(Restart::Diverged { part }),
            (_, Ok(Err(UploadError::Lost(failure)))) => Err(Restart::Lost(failure)),
            (Err(FeedError::Failed(failure)), _) => Err(Restart::Not(failure)),
            (_, Err(e)) => Err(Restart::Not(JobFailure::internal(format!(
                "the uploader stopped: {e}"
            )))),
            (_, Ok(Err(UploadError::Failed(failure)))) => Err(Restart::Not(failure)),
            (Err(FeedError::OutputClosed), Ok(_)) | (Ok(_), Ok(Err(UploadError::Abandoned))) => {
                Err(Restart::Not(JobFailure::internal(
                    "the uploader stopped taking the archive",
                )))
            }
            (Ok(entries), Ok(Ok(uploaded))) => {
                if uploaded.resumed_parts > 0 {
                    tracing::info!(
                        zip.id = %zip.id,
                        resumed_parts = uploaded.resumed_parts,
                        parts = uploaded.parts,
                        "finished a job taken over without uploading its first parts again"
                    );
                }
                Ok(Built {
                    size: uploaded.size,
                    etag: uploaded.etag,
                    entries,
                })
            }
        }
    }
}

/// Records the upload in PostgreSQL as it happens (`zips.upload_id`, `zip_parts`). A failure
/// here is this side's, never the bucket's.
struct PgLedger {
    pool: PgPool,
    zip_id: ZipId,
    owner: String,
    /// How the archive is cut, recorded with the upload.
    plan: String,
    notes: mpsc::Sender<Note>,
}

impl upload::Ledger for PgLedger {
    async fn started(&self, upload_id: &str) -> Result<(), JobFailure> {
        let mut conn = self.pool.get().await.map_err(|e| {
            JobFailure::internal(format!("recording the upload in the database failed: {e}"))
        })?;
        match Zip::set_upload_id(&mut conn, self.zip_id, &self.owner, upload_id, &self.plan).await {
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
            part.crc32,
        )
        .await
        .map_err(|e| failed(&e))?;
        let _ = self.notes.send(Note::Uploaded(part.size)).await;
        Ok(())
    }

    async fn ended(&self, upload_id: &str) {
        let ended = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            Zip::end_upload(&mut conn, self.zip_id, upload_id)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = ended.await {
            // Only the orphan sweeper reads it; it checks the job's state too.
            tracing::warn!(zip.id = %self.zip_id, upload.id = upload_id, error = %e, "could not record the end of an upload");
        }
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

/// What a build taken over carries from the entries it kept (`resume`); a new build carries
/// nothing.
#[derive(Debug)]
struct Carried {
    files: i32,
    bytes: u64,
    /// The first entry is open in the archive already: its download starts here.
    continuing: Option<Continue>,
    /// The archive's size, counting the kept entries.
    expected: ExpectedSize,
}

/// Where the entries written out went, reported for a worker that may take the job over, and the
/// archive's size once it is certain.
struct Placements {
    /// The validators of sources whose entries announce their start, until it is placed.
    validators: std::collections::HashMap<i32, String>,
    expected: ExpectedSize,
}

impl Placements {
    /// Sends the placements since the last call, and the archive's size if it is newly known.
    /// Always after the entries' outcomes: a placement recorded means its outcome is.
    async fn report(&mut self, placed: Vec<Placement>, notes: &mpsc::Sender<Note>) {
        if !placed.is_empty() {
            self.expected.placed(&placed);
            let rows = placed
                .iter()
                .map(|p| {
                    let validator = p.end.is_none().then(|| self.validators.remove(&p.entry));
                    placement_row(p, validator.flatten())
                })
                .collect();
            let _ = notes.send(Note::Placed(rows)).await;
        }
        if let Some(size) = self.expected.update() {
            let _ = notes.send(Note::Expected(size)).await;
        }
    }
}

/// Takes each entry's download in order and writes it into the archive; returns how many
/// entries are in it (with those `carried` from an earlier build).
async fn feed_sources(
    ctx: &JobContext,
    zip: &Zip,
    entries: Arc<[Source]>,
    mut archive: ArchiveWriter,
    notes: &mpsc::Sender<Note>,
    mut cancelled: watch::Receiver<Interrupt>,
    carried: Carried,
) -> Result<i32, FeedError> {
    let mut continuing = carried.continuing.is_some();
    let mut downloads = Prefetcher::new(ctx.http.clone(), ctx.downloads.clone(), entries)
        .continuing(carried.continuing);
    let skipping = zip.on_error == OnError::Skip;
    let (mut done, mut total, mut unreported) = (carried.files, carried.bytes, 0u64);
    let mut placements = Placements {
        validators: Default::default(),
        expected: carried.expected,
    };
    'entries: while let Some(mut download) = downloads.next_download() {
        let index = download.entry.index;
        // Only the first entry can be one the archive has open already.
        let continued = std::mem::take(&mut continuing);
        // A quiet source must not delay a cancel: wait for whichever comes first.
        let mut next = async || -> Result<Option<Event>, FeedError> {
            tokio::select! {
                event = download.events.recv() => Ok(event),
                _ = cancelled.wait_for(|c| *c != Interrupt::None) => Err(JobFailure::cancelled().into()),
            }
        };
        let (content_length, validator, last_modified) = match next().await? {
            Some(Event::Started {
                content_length,
                validator,
                last_modified,
            }) => (content_length, validator, last_modified),
            Some(Event::RangeRefused) => return Err(FeedError::Uncontinued),
            Some(Event::Failed(error)) if skipping => {
                if continued {
                    archive.abandon_entry().await?;
                }
                placements.expected.skipped(index);
                skip(notes, index, error).await;
                placements.report(archive.take_placed(), notes).await;
                continue;
            }
            Some(Event::Failed(error)) => return Err(download::failure_of(error, index).into()),
            Some(Event::Data(..)) | None => {
                return Err(JobFailure::internal(format!(
                    "urls[{index}]: the download stopped unexpectedly"
                ))
                .with_param(format!("urls[{index}]"))
                .into());
            }
        };
        let mut early = std::collections::VecDeque::new();
        // A continued entry is open in the archive already, its header written long ago.
        if !continued {
            // `auto` may need the first bytes to decide; they are written right after the
            // header. Always the same number of them, however the network cut them into chunks:
            // the same job must give the same archive.
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
            // Room for ZIP64 by the length; the writer adds it for a header past 4 GiB.
            let zip64 = zipkit_zip::format::needs_zip64_room(content_length, 0);

            // A stored entry of a part or more from a source with a validator announces its
            // start: a worker taking the job over can pick its source up with `Range` +
            // `If-Range` where the uploaded parts end.
            let validator = validator.filter(|_| {
                method == Method::Stored && content_length.is_none_or(|l| l >= ctx.part_size as u64)
            });
            let announce = validator.is_some();
            if let Some(validator) = validator {
                placements.validators.insert(index, validator);
            }
            // The same sources give the same time, so a build taken over writes the same bytes.
            let modified = EntryTime::from_utc(
                download
                    .entry
                    .modified_at
                    .or(last_modified)
                    .unwrap_or(zip.created_at),
            );
            archive
                .start_entry(
                    index,
                    &download.entry.filename,
                    method,
                    modified,
                    zip64,
                    announce,
                )
                .await?;
            placements
                .expected
                .started(index, method, zip64, content_length);
            placements.report(archive.take_placed(), notes).await;
        }
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
                    placements.report(archive.take_placed(), notes).await;
                }
                // Some of its bytes are in the archive already: the entry is closed and left out
                // of the central directory, so no reader lists it (docs/JOBS.md).
                Some(Event::Failed(error)) if skipping => {
                    archive.abandon_entry().await?;
                    placements.expected.skipped(index);
                    skip(notes, index, error).await;
                    placements.report(archive.take_placed(), notes).await;
                    continue 'entries;
                }
                Some(Event::Failed(error)) => return Err(download::failure_of(error, index).into()),
                Some(Event::Started { .. } | Event::RangeRefused) => {}
                None => break,
            }
        }
        let method = archive.open_method();
        let summary = archive.finish_entry().await?;
        if let Some(method) = method {
            placements.expected.finished(index, method, summary.size);
        }
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
        placements.report(archive.take_placed(), notes).await;
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
    let finished = archive.finish().await?;
    placements.report(finished.placed, notes).await;
    let _ = notes.send(Note::Downloaded(unreported)).await;
    Ok(done)
}

/// What the recorder writes.
#[derive(Debug)]
enum Note {
    Entry(EntryOutcome),
    /// Where entries' bytes went, in archive order.
    Placed(Vec<EntryPlacement>),
    Downloaded(u64),
    Uploaded(i64),
    /// The archive's exact size, newly known or changed.
    Expected(u64),
    /// Kept from the build a job was taken over from: its entries and their bytes.
    Kept {
        files: i32,
        bytes: u64,
    },
}

/// An entry's placement as the database keeps it.
fn placement_row(p: &Placement, source_validator: Option<String>) -> EntryPlacement {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    EntryPlacement {
        index: p.entry,
        offset: int(p.offset),
        deflated: p.method == Method::Deflated,
        zip64: p.zip64,
        source_validator,
        entry_time: Some(p.modified.at()),
        end: p.end.map(|e| PlacedEnd {
            end: int(e.end),
            compressed_size: int(e.compressed),
            archive_crc32: e.archive_crc32,
        }),
    }
}

/// Writes entry outcomes and progress counters on its own task, so the database never slows the
/// archive down: whatever arrived meanwhile goes in one statement (up to `BATCH` entries), and
/// the counters at most every `PROGRESS_EVERY`. A job of 70,000 small files costs a few dozen
/// statements, not 70,000.
struct Recorder {
    task: tokio::task::JoinHandle<()>,
}

const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Most entry outcomes written in one statement.
const BATCH: usize = 2_000;

/// What the recorder has not written yet.
#[derive(Default)]
struct Pending {
    entries: Vec<EntryOutcome>,
    placed: Vec<EntryPlacement>,
    files: i32,
    downloaded: i64,
    uploaded: i64,
    expected: Option<i64>,
    dirty: bool,
}

impl Pending {
    fn take(&mut self, note: Note) {
        self.dirty = true;
        match note {
            Note::Entry(outcome) => {
                if outcome.state == EntryState::Done {
                    self.files += 1;
                }
                self.entries.push(outcome);
            }
            Note::Placed(placed) => self.placed.extend(placed),
            Note::Downloaded(n) => self.downloaded += i64::try_from(n).unwrap_or(0),
            Note::Uploaded(n) => self.uploaded += n,
            Note::Expected(size) => self.expected = Some(i64::try_from(size).unwrap_or(i64::MAX)),
            Note::Kept { files, bytes } => {
                self.files += files;
                self.downloaded += i64::try_from(bytes).unwrap_or(0);
            }
        }
    }
}

impl Recorder {
    fn start(pool: PgPool, zip_id: ZipId, owner: String) -> (Self, mpsc::Sender<Note>) {
        let (tx, mut rx) = mpsc::channel::<Note>(4096);
        let task = tokio::spawn(async move {
            let mut pending = Pending::default();
            let mut last = tokio::time::Instant::now();
            loop {
                let note = tokio::time::timeout(PROGRESS_EVERY, rx.recv()).await;
                let closed = matches!(note, Ok(None));
                if let Ok(Some(note)) = note {
                    pending.take(note);
                }
                // Everything that is already waiting joins this write.
                while pending.entries.len() < BATCH && pending.placed.len() < BATCH {
                    match rx.try_recv() {
                        Ok(note) => pending.take(note),
                        Err(_) => break,
                    }
                }
                if !pending.entries.is_empty() {
                    let entries = std::mem::take(&mut pending.entries);
                    let written = match pool.get().await {
                        Ok(mut conn) => Zip::record_entries(&mut conn, zip_id, &entries)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = written {
                        tracing::warn!(zip.id = %zip_id, entries = entries.len(), error = %e, "recording entries failed");
                    }
                }
                // After the outcomes: a worker taking the job over trusts a placement only
                // with its entry's outcome.
                if !pending.placed.is_empty() {
                    let placed = std::mem::take(&mut pending.placed);
                    let written = match pool.get().await {
                        Ok(mut conn) => Zip::record_placements(&mut conn, zip_id, &owner, &placed)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = written {
                        tracing::warn!(zip.id = %zip_id, entries = placed.len(), error = %e, "recording where entries went failed");
                    }
                }
                if let Some(size) = pending.expected.take() {
                    let written = match pool.get().await {
                        Ok(mut conn) => Zip::record_expected_size(&mut conn, zip_id, &owner, size)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = written {
                        tracing::warn!(zip.id = %zip_id, error = %e, "recording the expected size failed");
                    }
                }
                if pending.dirty && (closed || last.elapsed() >= PROGRESS_EVERY) {
                    if let Ok(mut conn) = pool.get().await {
                        let _ = Zip::record_progress(
                            &mut conn,
                            zip_id,
                            &owner,
                            pending.files,
                            pending.downloaded,
                            pending.uploaded,
                        )
                        .await;
                    }
                    pending.dirty = false;
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
