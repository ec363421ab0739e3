//! Feeding a build's sources into the archive in request order: each download as it comes, the
//! method and time of its entry, sources left out (`on_error: skip`), and what is reported as it
//! goes (outcomes, placements, the archive's expected size).

use tokio::sync::{mpsc, watch};
use zipkit_domain::models::{EntryOutcome, Zip};
use zipkit_domain::{EntryState, OnError};

use super::JobContext;
use super::recorder::{Note, placement_row};
use crate::archive::{
    ArchiveError, ArchiveWriter, CopiedRange, EntrySummary, EntryTime, HEAD_BYTES, Method,
    Placement, method_for,
};
use crate::download::{self, SourceError};
use crate::expected::ExpectedSize;
use crate::failure::{Blame, JobFailure, Retry};
use crate::lease::Interrupt;
use crate::prefetch::{Continue, Event, Prefetcher, Sources, Stored};
use crate::upload::crc32_tail;

/// Why feeding the sources stopped early.
pub(super) enum FeedError {
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
            // The worker's temporary file (a full disk?): another attempt may find room.
            e @ ArchiveError::Directory(_) => FeedError::Failed(JobFailure::new(
                "archive_failed",
                e.to_string(),
                Blame::Service,
                Retry::Later,
            )),
            e => FeedError::Failed(JobFailure::new(
                "archive_failed",
                e.to_string(),
                Blame::Service,
                Retry::Never,
            )),
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
pub(super) struct Carried {
    pub(super) files: i32,
    pub(super) bytes: u64,
    /// The first entry is open in the archive already: its download starts here.
    pub(super) continuing: Option<Continue>,
    /// The archive's size, counting the kept entries.
    pub(super) expected: ExpectedSize,
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
pub(super) async fn feed_sources(
    ctx: &JobContext,
    zip: &Zip,
    sources: Sources,
    archive: ArchiveWriter,
    notes: &mpsc::Sender<Note>,
    mut cancelled: watch::Receiver<Interrupt>,
    carried: Carried,
) -> Result<i32, FeedError> {
    let mut continuing = carried.continuing.is_some();
    let mut downloads = Prefetcher::new(ctx.http.clone(), ctx.downloads.clone(), sources)
        .continuing(carried.continuing);
    let mut done = carried.files;
    let mut feed = Feed {
        ctx,
        zip,
        archive,
        notes,
        placements: Placements {
            validators: Default::default(),
            expected: carried.expected,
        },
        total: carried.bytes,
        unreported: 0,
    };
    while let Some(mut download) = downloads.next_download().await? {
        let index = download.entry.index;
        // Only the first entry can be one the archive has open already.
        let continued = std::mem::take(&mut continuing);
        let events = (&mut download.events, &mut cancelled);
        let started = match next_event(events.0, events.1).await? {
            Some(Event::Started {
                content_length,
                validator,
                last_modified,
                stored,
            }) => Started {
                content_length,
                validator,
                stored,
                // The same sources give the same time, so a build taken over writes the same
                // bytes.
                modified: EntryTime::from_utc(
                    download
                        .entry
                        .modified_at
                        .or(last_modified)
                        .unwrap_or(zip.created_at),
                ),
            },
            Some(Event::RangeRefused) => return Err(FeedError::Uncontinued),
            Some(Event::Failed(error)) => {
                feed.source_failed(index, error, continued).await?;
                continue;
            }
            Some(Event::Data(..)) | None => {
                return Err(JobFailure::internal(format!(
                    "urls[{index}]: the download stopped unexpectedly"
                ))
                .with_param(format!("urls[{index}]"))
                .into());
            }
        };
        let entry = (index, download.entry.filename.as_str());
        let written = match started.stored {
            Some(stored) => {
                feed.copied(entry, (stored, started.modified), events)
                    .await?
            }
            None => feed.streamed(entry, started, continued, events).await?,
        };
        let Some(summary) = written else {
            continue; // left out
        };
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
        feed.report().await;
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
    let finished = feed.archive.finish().await?;
    feed.placements.report(finished.placed, notes).await;
    let _ = notes.send(Note::Downloaded(feed.unreported)).await;
    Ok(done)
}

/// What a download said as it started.
struct Started {
    content_length: Option<u64>,
    validator: Option<String>,
    /// An object the store copies into the archive (`Event::Started`).
    stored: Option<Stored>,
    /// The entry's time.
    modified: EntryTime,
}

/// A download's events, and the job's word to stop.
type Events<'e> = (
    &'e mut mpsc::Receiver<Event>,
    &'e mut watch::Receiver<Interrupt>,
);

/// One build feeding its entries into the archive: what it reports, and the bytes it counts.
struct Feed<'a> {
    ctx: &'a JobContext,
    zip: &'a Zip,
    archive: ArchiveWriter,
    notes: &'a mpsc::Sender<Note>,
    placements: Placements,
    /// Source bytes in the archive (against `max_archive_bytes`).
    total: u64,
    /// Bytes downloaded and not yet reported.
    unreported: u64,
}

impl Feed<'_> {
    /// Sends the placements since the last report, and the archive's size if newly known.
    async fn report(&mut self) {
        let placed = self.archive.take_placed();
        self.placements.report(placed, self.notes).await;
    }

    /// Counts `bytes` more of the sources against the deployment's limit.
    fn count(&mut self, index: i32, bytes: u64) -> Result<(), FeedError> {
        self.total += bytes;
        if self.total <= self.ctx.max_archive_bytes {
            return Ok(());
        }
        let message = format!(
            "the sources add up to more than this deployment's limit of {} bytes",
            self.ctx.max_archive_bytes
        );
        let failure = JobFailure::new("archive_too_large", message, Blame::Request, Retry::Never)
            .with_param(format!("urls[{index}]"));
        Err(failure.into())
    }

    /// A source failed for good: the job fails, or, asked to skip failures, the entry is left
    /// out (taken back from the archive when some of it is in: `abandon`; then it is closed and
    /// left out of the central directory, so no reader lists it, docs/JOBS.md).
    async fn source_failed(
        &mut self,
        index: i32,
        error: SourceError,
        abandon: bool,
    ) -> Result<(), FeedError> {
        if self.zip.on_error != OnError::Skip {
            return Err(download::failure_of(error, index).into());
        }
        if abandon {
            self.archive.abandon_entry().await?;
        }
        self.placements.expected.skipped(index);
        skip(self.notes, index, error).await;
        self.report().await;
        Ok(())
    }

    /// Writes an entry from its download's bytes; `None` when it was left out.
    async fn streamed(
        &mut self,
        (index, name): (i32, &str),
        started: Started,
        continued: bool,
        (events, cancelled): Events<'_>,
    ) -> Result<Option<EntrySummary>, FeedError> {
        let mut early = std::collections::VecDeque::new();
        // A continued entry is open in the archive already, its header written long ago.
        if !continued {
            // `auto` may need the first bytes to decide; they are written right after the
            // header. Always the same number of them, however the network cut them into
            // chunks: the same job must give the same archive.
            let mut head = Vec::new();
            while head.len() < HEAD_BYTES {
                let event = next_event(events, cancelled).await?;
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
            let method = method_for(self.zip.compression, name, &head);
            // Room for ZIP64 by the length; the writer adds it for a header past 4 GiB.
            let content_length = started.content_length;
            let zip64 = zipkit_zip::format::needs_zip64_room(content_length, 0);
            // A stored entry of a part or more from a source with a validator announces its
            // start: a worker taking the job over can pick its source up with `Range` +
            // `If-Range` where the uploaded parts end.
            let part_size = self.ctx.part_size as u64;
            let validator = started.validator.filter(|_| {
                method == Method::Stored && content_length.is_none_or(|l| l >= part_size)
            });
            let announce = validator.is_some();
            if let Some(validator) = validator {
                self.placements.validators.insert(index, validator);
            }
            self.archive
                .start_entry(index, name, method, started.modified, zip64, announce)
                .await?;
            self.placements
                .expected
                .started((index, name), method, zip64, content_length);
            self.report().await;
        }
        loop {
            let event = match early.pop_front() {
                Some(event) => event,
                None => next_event(events, cancelled).await?,
            };
            match event {
                Some(Event::Data(bytes, permit)) => {
                    self.count(index, bytes.len() as u64)?;
                    // Counted locally and reported when the recorder has room: never waits.
                    self.unreported += bytes.len() as u64;
                    if self
                        .notes
                        .try_send(Note::Downloaded(self.unreported))
                        .is_ok()
                    {
                        self.unreported = 0;
                    }
                    self.archive.write(bytes).await?;
                    drop(permit);
                    self.report().await;
                }
                // Some of its bytes are in the archive already.
                Some(Event::Failed(error)) => {
                    self.source_failed(index, error, true).await?;
                    return Ok(None);
                }
                Some(Event::Started { .. } | Event::RangeRefused) => {}
                None => break,
            }
        }
        let method = self.archive.open_method();
        let summary = self.archive.finish_entry().await?;
        if let Some(method) = method {
            self.placements
                .expected
                .finished(index, method, summary.size);
        }
        Ok(Some(summary))
    }

    /// Writes an entry whose object the store copies into the archive: its header, the
    /// object's first bytes as far as the part before the copy needs them
    /// (`head_before_copy`), and the rest as a copied range, whose CRC-32 comes from the
    /// object's: the store's checksum, or one read of all its bytes (read, not sent). `None`
    /// when it was left out.
    async fn copied(
        &mut self,
        (index, name): (i32, &str),
        (stored, modified): (Stored, EntryTime),
        (events, cancelled): Events<'_>,
    ) -> Result<Option<EntrySummary>, FeedError> {
        let object = &stored.object;
        self.count(index, object.size)?;
        let zip64 = zipkit_zip::format::needs_zip64_room(Some(object.size), 0);
        self.placements
            .expected
            .started((index, name), Method::Stored, zip64, Some(object.size));
        // Where the copy starts depends on where the parts are cut: at an offset the writer
        // knows once everything queued is out.
        let archive = &mut self.archive;
        archive.settle().await?;
        archive
            .start_entry(index, name, Method::Stored, modified, zip64, false)
            .await?;
        let head = archive.head_before_copy()?;
        let (mut read, mut sent) = (0u64, 0u64);
        let (mut all, mut head_crc) = (crc32fast::Hasher::new(), crc32fast::Hasher::new());
        let mut failed = None;
        while object.crc32.is_none() || sent < head {
            match next_event(events, cancelled).await? {
                Some(Event::Data(bytes, _permit)) => {
                    read += bytes.len() as u64;
                    if object.crc32.is_none() {
                        all.update(&bytes);
                    }
                    let left = usize::try_from(head - sent).unwrap_or(usize::MAX);
                    let take = left.min(bytes.len());
                    if take > 0 {
                        let first = bytes.slice(..take);
                        head_crc.update(&first);
                        sent += take as u64;
                        archive.write(first).await?;
                    }
                }
                Some(Event::Failed(error)) => {
                    failed = Some(error);
                    break;
                }
                Some(Event::Started { .. } | Event::RangeRefused) => {}
                None => break,
            }
        }
        self.unreported += read;
        let whole = match (failed, object.crc32) {
            (None, Some(crc32)) if sent == head => crc32,
            (None, None) if read == object.size => all.finalize(),
            (failed, _) => {
                let error = failed.unwrap_or_else(|| {
                    SourceError::size_mismatch(object.size, &format!("sent {read}"))
                });
                // Its header is out.
                self.source_failed(index, error, true).await?;
                return Ok(None);
            }
        };
        let len = object.size - head;
        let range = CopiedRange {
            bucket: stored.bucket,
            key: stored.key,
            etag: stored.object.etag,
            start: head,
            len,
            crc32: crc32_tail(whole, head_crc.finalize(), len),
        };
        self.archive.copy(range).await?;
        let summary = self.archive.finish_entry().await?;
        self.placements
            .expected
            .finished(index, Method::Stored, summary.size);
        Ok(Some(summary))
    }
}

/// The download's next event; a quiet source must not delay a cancel: whichever comes first.
async fn next_event(
    events: &mut mpsc::Receiver<Event>,
    cancelled: &mut watch::Receiver<Interrupt>,
) -> Result<Option<Event>, FeedError> {
    tokio::select! {
        event = events.recv() => Ok(event),
        _ = cancelled.wait_for(|c| *c != Interrupt::None) => Err(JobFailure::cancelled().into()),
    }
}
