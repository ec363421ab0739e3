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
use zipkit_zip::parts::{copied_ranges, copy_part_numbers};

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
    /// (`head_before_copy`), and the rest as copied ranges (one up to 5 GiB, more past it:
    /// `copied_ranges`), whose CRC-32s come from reading the object (read, not sent): the bytes
    /// before the last range when the store keeps the object's checksum, all of them
    /// otherwise. `None` when it was left out.
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
        let head = archive.head_before_copy(copy_part_numbers(object.size) - 1)?;
        let ranges = copied_ranges(head, object.size);
        // The object's CRC-32 up to each range's start and end, as far as it is read.
        let mut crc_at = CrcAt::new(head, &ranges);
        let needed = match object.crc32 {
            Some(_) => ranges.last().map_or(head, |r| r.start),
            None => object.size,
        };
        let mut read = 0u64;
        let mut failed = None;
        // Without the store's checksum, read to the end: the object must be exactly its size.
        while object.crc32.is_none() || read < needed {
            match next_event(events, cancelled).await? {
                Some(Event::Data(mut bytes, _permit)) => {
                    while !bytes.is_empty() && read < needed {
                        let piece = bytes.split_to(crc_at.before_next(read, needed, bytes.len()));
                        if read < head {
                            archive.write(piece.clone()).await?;
                        }
                        crc_at.update(&piece);
                        read += piece.len() as u64;
                        crc_at.mark(read);
                    }
                    read += bytes.len() as u64;
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
            (None, Some(crc32)) if read >= needed => crc32,
            (None, None) if read == object.size => crc_at.so_far(),
            (failed, _) => {
                let error = failed.unwrap_or_else(|| {
                    SourceError::size_mismatch(object.size, &format!("sent {read}"))
                });
                // Its header is out.
                self.source_failed(index, error, true).await?;
                return Ok(None);
            }
        };
        crc_at.mark_end(object.size, whole);
        for (range, crc32) in ranges.iter().zip(crc_at.of_ranges()) {
            let range = CopiedRange {
                bucket: stored.bucket.clone(),
                key: stored.key.clone(),
                etag: stored.object.etag.clone(),
                start: range.start,
                len: range.end - range.start,
                crc32,
            };
            self.archive.copy(range).await?;
        }
        let summary = self.archive.finish_entry().await?;
        self.placements
            .expected
            .finished(index, Method::Stored, summary.size);
        Ok(Some(summary))
    }
}

/// An object's CRC-32 at the offsets where its copied ranges start and end, taken as its bytes
/// are read; a range's CRC-32 follows from those at its ends (`crc32_tail`).
struct CrcAt {
    /// Offsets: the first range's start, then each range's end.
    offsets: Vec<u64>,
    /// The CRC-32 of the object's bytes before each offset reached.
    at: Vec<u32>,
    running: crc32fast::Hasher,
}

impl CrcAt {
    fn new(head: u64, ranges: &[std::ops::Range<u64>]) -> Self {
        let offsets: Vec<u64> = std::iter::once(head)
            .chain(ranges.iter().map(|r| r.end))
            .collect();
        let mut crc_at = Self {
            at: Vec::with_capacity(offsets.len()),
            offsets,
            running: crc32fast::Hasher::new(),
        };
        crc_at.mark(0);
        crc_at
    }

    /// How many of `available` bytes read from offset `read` on go before the next offset (or
    /// `needed`), so that no piece spans one.
    fn before_next(&self, read: u64, needed: u64, available: usize) -> usize {
        let next = self
            .offsets
            .iter()
            .copied()
            .find(|o| *o > read)
            .unwrap_or(u64::MAX)
            .min(needed);
        usize::try_from(next - read).map_or(available, |n| n.min(available))
    }

    fn update(&mut self, bytes: &[u8]) {
        self.running.update(bytes);
    }

    /// Notes the CRC-32 so far if `read` is the next offset.
    fn mark(&mut self, read: u64) {
        if self.offsets.get(self.at.len()) == Some(&read) {
            self.at.push(self.running.clone().finalize());
        }
    }

    fn so_far(&self) -> u32 {
        self.running.clone().finalize()
    }

    /// The whole object's CRC-32, `crc32`, at its end `size` (the last offset), when it was not
    /// read that far.
    fn mark_end(&mut self, size: u64, crc32: u32) {
        if self.at.len() + 1 == self.offsets.len() && self.offsets.last() == Some(&size) {
            self.at.push(crc32);
        }
    }

    /// Each range's CRC-32, from those at its start and end.
    fn of_ranges(&self) -> impl Iterator<Item = u32> + '_ {
        self.offsets
            .windows(2)
            .zip(self.at.windows(2))
            .map(|(o, crc)| {
                let len = o[1] - o[0];
                crc32_tail(crc[1], crc[0], len)
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC-32 of each copied range, from an object read in uneven chunks: as far as the last
    /// range's start with the object's checksum given, and all of it without.
    #[test]
    fn each_ranges_crc32_follows_from_the_objects_at_its_ends() {
        let object: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let ranges = [300..40_000, 40_000..71_000, 71_000..100_000];
        let expected: Vec<u32> = ranges
            .iter()
            .map(|r| crc32fast::hash(&object[r.start as usize..r.end as usize]))
            .collect();
        for known in [true, false] {
            let mut crc_at = CrcAt::new(300, &ranges);
            let needed = if known { 71_000 } else { 100_000 };
            let mut read = 0u64;
            for chunk in object.chunks(7_777) {
                let mut bytes = bytes::Bytes::copy_from_slice(chunk);
                while !bytes.is_empty() && read < needed {
                    let piece = bytes.split_to(crc_at.before_next(read, needed, bytes.len()));
                    crc_at.update(&piece);
                    read += piece.len() as u64;
                    crc_at.mark(read);
                }
            }
            if known {
                crc_at.mark_end(100_000, crc32fast::hash(&object));
            } else {
                assert_eq!(crc_at.so_far(), crc32fast::hash(&object));
            }
            assert_eq!(crc_at.of_ranges().collect::<Vec<_>>(), expected, "{known}");
        }
        // A copy from the object's first byte.
        let whole = std::iter::once(0..100_000).collect::<Vec<_>>();
        let mut from_start = CrcAt::new(0, &whole);
        from_start.mark_end(100_000, crc32fast::hash(&object));
        assert_eq!(
            from_start.of_ranges().collect::<Vec<_>>(),
            [crc32fast::hash(&object)]
        );
    }
}
