//! One zip job, from its row to the finished object: sources download ahead (`prefetch`) and go
//! into the archive strictly in request order (`feed`, `archive`), whose output streams into the
//! multipart upload (`upload`). Entry outcomes, placements and progress are written by a recorder
//! task off the hot path (`recorder`).

mod entry_writer;
mod feed;
mod listing;
mod manifest;
mod recorder;
mod sources;

use feed::{Carried, FeedError, feed_sources};
use recorder::{Note, PgLedger, Recorder};
use sources::Survey;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{Bucket, Zip};
use zipkit_domain::{Service, ZipStatus};

use crate::archive::deflate::Compressors;
use crate::archive::{ArchiveOptions, ArchiveWriter, EntryTime, Piece};
use crate::expected::{CertainTail, ExpectedSize};
use crate::failure::{Blame, JobFailure, Retry};
use crate::lease::Interrupt;
use crate::memory::{BufferBudget, PartMemory};
use crate::prefetch::{DownloadLimits, Sources};
use crate::resume::{self, Continuation};
use crate::source_buckets::{self, SourceBuckets};
use crate::upload::{
    self, Destination, Ending, PartCuts, PartPlan, Resume, StoreTimeouts, UploadError, UploadedPart,
};

/// Everything a job needs from the worker.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub pool: PgPool,
    /// How the pool connects: a listing's transaction opens a connection of its own
    /// (`EntryLoad`).
    pub database: zipkit_domain::db::DatabaseSettings,
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

/// The bucket's row, credentials and client, what the builds need to know of the job's sources
/// (its prefixes listed into entries first), and the buckets they are read from.
async fn prepare(
    ctx: &JobContext,
    zip: &Zip,
) -> Result<(Destination, Service, Survey, SourceBuckets), JobFailure> {
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
    let opened = source_buckets::open(&ctx.keyring, &ctx.buckets, &bucket)?;
    drop(conn);
    // The buckets listed are those most entries then read: opened once for both.
    let mut source_buckets = SourceBuckets::for_destination(&opened, bucket.capabilities.as_ref());
    listing::list_prefixes(ctx, zip, bucket.service, &mut source_buckets).await?;
    let survey = sources::survey(&ctx.pool, zip).await?;
    let mut conn = ctx.pool.get().await.map_err(JobFailure::database)?;
    source_buckets
        .add(
            &mut conn,
            (&ctx.keyring, &ctx.buckets),
            zip,
            bucket.service,
            survey.read.iter().map(String::as_str),
        )
        .await?;
    let settings = Zip::result_settings(&mut conn, zip.id)
        .await
        .map_err(JobFailure::database)?;
    drop(conn);
    let destination = Destination::new(
        opened.client,
        opened.location,
        bucket.capabilities,
        (zip.object_key.clone(), settings),
        zip.id,
        ctx.store_timeouts,
    );
    Ok((destination, bucket.service, survey, source_buckets))
}

/// Builds the archive for a claimed job. Never panics on bad input. A job taken over from a
/// worker that died continues its upload when the archive rebuilds to the same bytes, and
/// otherwise starts a new one (aborting the old): never a mix of two archives.
pub async fn run(
    ctx: &JobContext,
    zip: &Zip,
    cancelled: watch::Receiver<Interrupt>,
) -> Result<Built, JobFailure> {
    // What surveying the sources took is given back before the job's buffers fill up.
    let (destination, service, survey, source_buckets) = prepare(ctx, zip).await?;
    zipkit_runtime::allocator::release_free_memory();
    let plan = PartPlan::new(
        ctx.part_size,
        ctx.parts_in_flight,
        // R2 needs equal parts, so their size must cover the largest archive from the start.
        (service == Service::R2).then_some(ctx.max_archive_bytes),
    );
    // Everything that decides the archive's bytes and where its parts are cut.
    let copies = survey.copies(&source_buckets);
    let description = format!(
        "{} level {} {}{}",
        ARCHIVE_FORMAT,
        ctx.deflate_level,
        plan.describe(),
        if copies { " copies" } else { "" }
    );
    let resume = resume_point(ctx, zip, &destination, &description)
        .await?
        .map(|(resume, kept)| (Resume { copies, ..resume }, kept));
    let resuming = resume.as_ref().map(|(r, _)| r.upload_id.clone());
    let job = Attempt {
        ctx,
        zip,
        destination: &destination,
        plan,
        copies,
        description: &description,
        source_buckets: Arc::new(source_buckets),
        tail: Arc::new(survey.tail),
    };

    let mut built = job.build(cancelled.clone(), resume).await;
    if let Err(Restart::Uncontinued) = built {
        tracing::info!(
            zip.id = %zip.id,
            "the source cut by the uploaded parts' end did not answer the range asked for; \
             building its entry again from its start"
        );
        // The same as before (the build recorded nothing), without continuing that entry.
        let resume = resume_point(ctx, zip, &destination, &description)
            .await?
            .map(|(resume, kept)| {
                let kept = kept.without_continuing();
                let from = (kept.written.offset, kept.written.crc32);
                let resume = Resume {
                    from: from.0,
                    crc32_before: from.1,
                    copies,
                    ..resume
                };
                (resume, kept)
            });
        built = job.build(cancelled.clone(), resume).await;
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
    match job.build(cancelled, None).await {
        Ok(built) => Ok(built),
        Err(Restart::Not(failure) | Restart::Lost(failure)) => Err(failure),

        Err(Restart::Diverged { .. } | Restart::Uncontinued) => Err(JobFailure::internal(
            "a build from byte zero was asked to check parts or continue an entry it does not have",
        )),
    }
}

/// Recorded entries read per statement when a job is taken over.
const RECORDED_PAGE: i64 = 1_000;

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
    // The recorded entries, a page at a time: a job of a million is never held whole.
    let mut scan = resume::Scan::new(&parts, EntryTime::from_utc(zip.created_at));
    let mut after = -1;
    loop {
        let page = Zip::recorded_entries(&mut conn, zip.id, after, RECORDED_PAGE)
            .await
            .map_err(JobFailure::database)?;
        let last_page = page.len() < RECORDED_PAGE as usize;
        for entry in page {
            after = entry.index;
            scan.push(entry).map_err(|e| {
                JobFailure::new(
                    "archive_failed",
                    format!("keeping the central directory: {e}"),
                    Blame::Service,
                    Retry::Later,
                )
            })?;
        }
        if last_page {
            break;
        }
    }
    drop(conn);
    let kept = scan.finish();
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
        copies: false,
    };
    Ok(Some((resume, kept)))
}

/// The part that archive offset `at` falls in, among `parts` (uploaded, in order) or the one
/// after them: where it starts and its number.
fn part_at(parts: &[UploadedPart], at: u64) -> (u64, i32) {
    let mut start = 0u64;
    for part in parts {
        if at < start + part.size as u64 {
            return (start, part.number);
        }
        start += part.size as u64;
    }
    (start, parts.len() as i32 + 1)
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
    /// Some entries may be copied in the store: the writer keeps track of the parts' cuts.
    copies: bool,
    description: &'a str,
    /// The buckets the job's sources are read from.
    source_buckets: Arc<SourceBuckets>,
    /// What the archive's size needs of the sources at the end.
    tail: Arc<CertainTail>,
}

impl Attempt<'_> {
    async fn build(
        &self,
        cancelled: watch::Receiver<Interrupt>,
        resume: Option<(Resume, Continuation)>,
    ) -> Result<Built, Restart> {
        let (ctx, zip) = (self.ctx, self.zip);
        // Where the part the build's first byte goes in starts, and its number.
        let cuts = match &resume {
            Some((resume, kept)) => part_at(&resume.parts, kept.written.offset),
            None => (0, 1),
        };
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
        let expected = ExpectedSize::new(self.tail.clone(), kept.last_kept, &kept.written);
        let (chunks_tx, chunks_rx) = mpsc::channel::<Piece>(8);
        let options = ArchiveOptions {
            level: ctx.deflate_level,
        };
        let archive =
            ArchiveWriter::resume(options, ctx.compressors.clone(), chunks_tx, kept.written);
        let archive = match self.copies {
            true => archive.with_cuts(PartCuts::new(self.plan, cuts.0, cuts.1)),
            false => archive,
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
        let carried = Carried {
            files: kept.files,
            bytes: kept.bytes,
            continuing: kept.continuing,
            expected,
        };
        // Entries placed before keep the time the earlier build gave them.
        let entries = sources::read(
            ctx.pool.clone(),
            zip,
            self.source_buckets.clone(),
            kept.last_kept,
            kept.times.into_iter().collect(),
        );
        let sources = Sources {
            entries,
            buckets: self.source_buckets.clone(),
        };
        let feed = feed_sources(
            ctx,
            zip,
            sources,
            archive,
            &notes,
            cancelled.clone(),
            carried,
        )
        .await;
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
