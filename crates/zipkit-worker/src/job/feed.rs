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
    mut archive: ArchiveWriter,
    notes: &mpsc::Sender<Note>,
    mut cancelled: watch::Receiver<Interrupt>,
    carried: Carried,
) -> Result<i32, FeedError> {
    let mut continuing = carried.continuing.is_some();
    let mut downloads = Prefetcher::new(ctx.http.clone(), ctx.downloads.clone(), sources)
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
        let mut next = async || next_event(&mut download.events, &mut cancelled).await;
        let (content_length, validator, last_modified, stored) = match next().await? {
            Some(Event::Started {
                content_length,
                validator,
                last_modified,
                stored,
            }) => (content_length, validator, last_modified, stored),
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
        // The same sources give the same time, so a build taken over writes the same bytes.
        let modified = EntryTime::from_utc(
            download
                .entry
                .modified_at
                .or(last_modified)
                .unwrap_or(zip.created_at),
        );
        let summary = match stored {
            Some(stored) => {
                let size = stored.object.size;
                total += size;
                if total > ctx.max_archive_bytes {
                    return Err(too_large(ctx, index).into());
                }
                let zip64 = zipkit_zip::format::needs_zip64_room(Some(size), 0);
                placements
                    .expected
                    .started(index, Method::Stored, zip64, Some(size));
                let entry = (index, download.entry.filename.as_str(), modified, zip64);
                let events = (&mut download.events, &mut cancelled);
                match write_copied(&mut archive, entry, stored, events).await? {
                    Ok((summary, read)) => {
                        unreported += read;
                        placements
                            .expected
                            .finished(index, Method::Stored, summary.size);
                        summary
                    }
                    Err(error) if skipping => {
                        archive.abandon_entry().await?;
                        placements.expected.skipped(index);
                        skip(notes, index, error).await;
                        placements.report(archive.take_placed(), notes).await;
                        continue 'entries;
                    }
                    Err(error) => return Err(download::failure_of(error, index).into()),
                }
            }
            None => {
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
                    let method =
                        method_for(zip.compression, download.entry.filename.as_str(), &head);
                    // Room for ZIP64 by the length; the writer adds it for a header past 4 GiB.
                    let zip64 = zipkit_zip::format::needs_zip64_room(content_length, 0);

                    // A stored entry of a part or more from a source with a validator announces its
                    // start: a worker taking the job over can pick its source up with `Range` +
                    // `If-Range` where the uploaded parts end.
                    let validator = validator.filter(|_| {
                        method == Method::Stored
                            && content_length.is_none_or(|l| l >= ctx.part_size as u64)
                    });
                    let announce = validator.is_some();
                    if let Some(validator) = validator {
                        placements.validators.insert(index, validator);
                    }
                    archive
                        .start_entry(
                            index,
                            download.entry.filename.as_str(),
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
                                return Err(too_large(ctx, index).into());
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
                        Some(Event::Failed(error)) => {
                            return Err(download::failure_of(error, index).into());
                        }
                        Some(Event::Started { .. } | Event::RangeRefused) => {}
                        None => break,
                    }
                }
                let method = archive.open_method();
                let summary = archive.finish_entry().await?;
                if let Some(method) = method {
                    placements.expected.finished(index, method, summary.size);
                }
                summary
            }
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

fn too_large(ctx: &JobContext, index: i32) -> JobFailure {
    let message = format!(
        "the sources add up to more than this deployment's limit of {} bytes",
        ctx.max_archive_bytes
    );
    JobFailure::new("archive_too_large", message, Blame::Request, Retry::Never)
        .with_param(format!("urls[{index}]"))
}

/// Writes an entry whose object the store copies into the archive: its header, the object's
/// first bytes as far as the part before the copy needs them (`head_before_copy`), and the rest
/// as a copied range, whose CRC-32 comes from the object's: the store's checksum, or one read of
/// all its bytes (read, not sent). The entry's summary and the bytes read, or why its source
/// failed (its header may be out: the caller leaves the entry out or fails the job).
async fn write_copied(
    archive: &mut ArchiveWriter,
    (index, name, modified, zip64): (i32, &str, EntryTime, bool),
    stored: Stored,
    (events, cancelled): (&mut mpsc::Receiver<Event>, &mut watch::Receiver<Interrupt>),
) -> Result<Result<(EntrySummary, u64), SourceError>, FeedError> {
    let object = &stored.object;
    // Where the copy starts depends on where the parts are cut: at an offset the writer knows.
    archive.settle().await?;
    archive
        .start_entry(index, name, Method::Stored, modified, zip64, false)
        .await?;
    let head = archive.head_before_copy()?;
    let (mut read, mut sent) = (0u64, 0u64);
    let (mut all, mut head_crc) = (crc32fast::Hasher::new(), crc32fast::Hasher::new());
    while object.crc32.is_none() || sent < head {
        match next_event(events, cancelled).await? {
            Some(Event::Data(bytes, _permit)) => {
                read += bytes.len() as u64;
                if object.crc32.is_none() {
                    all.update(&bytes);
                }
                let take = usize::try_from(head - sent).map_or(bytes.len(), |h| h.min(bytes.len()));
                if take > 0 {
                    let first = bytes.slice(..take);
                    head_crc.update(&first);
                    sent += take as u64;
                    archive.write(first).await?;
                }
            }
            Some(Event::Failed(error)) => return Ok(Err(error)),
            Some(Event::Started { .. } | Event::RangeRefused) => {}
            None => break,
        }
    }
    let whole = match object.crc32 {
        Some(crc32) if sent == head => crc32,
        None if read == object.size => all.finalize(),
        _ => {
            let error = SourceError::size_mismatch(object.size, &format!("sent {read}"));
            return Ok(Err(error));
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
    archive.copy(range).await?;
    let summary = archive.finish_entry().await?;
    Ok(Ok((summary, read)))
}
