//! What a job taken over from a worker that died keeps of that worker's build: every entry whose
//! bytes are all in parts already uploaded, as its placement was recorded (`zip_entries`:
//! offsets, compressed size, method, the archive's CRC-32 up to its end). Those entries are not
//! downloaded again; the writer starts right after the last of them with the central directory
//! records they need, and the uploader checks the rebuilt bytes from there on against the
//! recorded parts (`upload::Resume`).
//!
//! The entry cut across the end of the uploaded parts is built again from its start, unless it
//! is stored and its start was recorded with the source's validator (stored entries of a part
//! or more announce it): then its source is picked up with `Range` + `If-Range` at the start of
//! the last uploaded part, so that part's bytes of it are downloaded again and checked against
//! the part (the CRC-32 of the source's bytes before that point follows from the recorded
//! CRCs), and a source that changed since answers with all of itself, which sends the build
//! back to the entry's start.

use bytes::Bytes;
use zipkit_domain::EntryState;
use zipkit_domain::models::RecordedEntry;

use crate::archive::{CentralRecord, EntryTime, LocalHeader, Method, OpenSoFar, WrittenSoFar};
use crate::prefetch::Continue;
use crate::upload::{UploadedPart, crc32_concat, crc32_of, crc32_tail};

/// Where a taken-over build starts.
#[derive(Debug)]
pub struct Continuation {
    /// The archive as the earlier build wrote it up to where this one starts, with the entry it
    /// continues, if any.
    pub written: WrittenSoFar,
    /// How many of the job's entries (from the first) are kept whole: not downloaded, not
    /// recorded again; and the last of them (-1 for none): the build starts after it.
    pub kept: usize,
    pub last_kept: i32,
    /// Of those, the entries in the archive, and their sources' bytes (with those of the
    /// continued entry already written).
    pub files: i32,
    pub bytes: u64,
    /// The entry after the kept ones is continued: its download starts here.
    pub continuing: Option<Continue>,
    /// The times the earlier build gave the entries after the kept ones that it placed: built
    /// again, they keep them (their headers may be in parts already uploaded), even if their
    /// source's `Last-Modified` moved.
    pub times: Vec<(i32, chrono::DateTime<chrono::Utc>)>,
    /// The end of the kept run and the archive's CRC-32 there, where a build that does not
    /// continue the entry after it starts.
    run_end: (u64, u32),
}

impl Default for Continuation {
    fn default() -> Self {
        Self {
            written: WrittenSoFar::default(),
            kept: 0,
            last_kept: -1,
            files: 0,
            bytes: 0,
            continuing: None,
            times: Vec::new(),
            run_end: (0, 0),
        }
    }
}

impl Continuation {
    /// The same, but building the entry after the kept ones from its start (its source did not
    /// answer the range asked for).
    pub fn without_continuing(mut self) -> Self {
        if let Some(open) = self.written.open.take() {
            (self.written.offset, self.written.crc32) = self.run_end;
            self.bytes -= open.size;
            self.continuing = None;
        }
        self
    }
}

/// The longest run of entries, from the first, that the earlier build placed wholly within
/// `parts` (entries it skipped without writing a byte belong to the run when a later entry
/// does), and the stored entry after them when it can be continued. Anything that does not line
/// up (an offset that does not follow the previous entry's end, a listed entry without its size
/// or CRC-32) ends the run there: the rest is built again and checked against the parts.
///
/// Worked out from the recorded entries in order, a page at a time (`push`), holding none of
/// them: the run's central directory records go straight into its `Directory`.
#[derive(Debug)]
pub struct Scan<'p> {
    parts: &'p [UploadedPart],
    created: EntryTime,
    /// The parts' bytes.
    uploaded: u64,
    found: Continuation,
    /// Entries pushed so far.
    seen: usize,
    /// The run has ended.
    ended: bool,
    /// The first entry after the kept run, once pushed.
    after_run: Option<RecordedEntry>,
}

/// What an entry does to the run.
enum Turn {
    Kept,
    /// Skipped without a byte written: kept if a later entry is.
    Passed,
    Ends,
}

impl<'p> Scan<'p> {
    pub fn new(parts: &'p [UploadedPart], created: EntryTime) -> Self {
        Self {
            parts,
            created,
            uploaded: parts.iter().map(|p| p.size as u64).sum(),
            found: Continuation::default(),
            seen: 0,
            ended: false,
            after_run: None,
        }
    }

    /// The job's next recorded entry, in index order.
    pub fn push(&mut self, entry: RecordedEntry) -> std::io::Result<()> {
        let position = self.seen;
        self.seen += 1;
        if !self.ended {
            match self.turn(&entry)? {
                Turn::Kept => {
                    self.found.kept = position + 1;
                    self.found.last_kept = entry.index;
                    self.after_run = None;
                    return Ok(());
                }
                Turn::Passed => {
                    self.after_run.get_or_insert(entry);
                    return Ok(());
                }
                Turn::Ends => self.ended = true,
            }
        }
        // After the run: the times the earlier build gave the entries it placed.
        if let Some(time) = entry.placement.as_ref().and_then(|p| p.entry_time) {
            self.found.times.push((entry.index, time));
        }
        self.after_run.get_or_insert(entry);
        Ok(())
    }

    fn turn(&mut self, entry: &RecordedEntry) -> std::io::Result<Turn> {
        let found = &mut self.found;
        let Some((placed, end)) = entry.placement.as_ref().and_then(|p| Some((p, p.end?))) else {
            if entry.state == EntryState::Skipped && entry.placement.is_none() {
                return Ok(Turn::Passed);
            }
            return Ok(Turn::Ends);
        };
        let (Ok(offset), Ok(end_offset), Ok(compressed)) = (
            u64::try_from(placed.offset),
            u64::try_from(end.end),
            u64::try_from(end.compressed_size),
        ) else {
            return Ok(Turn::Ends);
        };
        if offset != found.written.offset || end_offset > self.uploaded {
            return Ok(Turn::Ends);
        }
        match (entry.state, entry.size, entry.crc32) {
            (EntryState::Done, Some(size), Some(crc32)) => {
                let (Ok(size), Ok(crc32)) = (u64::try_from(size), u32::try_from(crc32)) else {
                    return Ok(Turn::Ends);
                };
                found.written.directory.push(&CentralRecord {
                    name: Bytes::copy_from_slice(entry.filename.as_str().as_bytes()),
                    method: if placed.deflated {
                        Method::Deflated
                    } else {
                        Method::Stored
                    },
                    modified: time_of(placed, self.created),
                    crc32,
                    compressed,
                    uncompressed: size,
                    header_offset: offset,
                })?;
                found.files += 1;
                found.bytes += size;
            }
            // Started, then left out (`on_error: skip`): in the archive, not in the directory.
            (EntryState::Skipped, ..) => {}
            _ => return Ok(Turn::Ends),
        }
        found.written.offset = end_offset;
        found.written.crc32 = end.archive_crc32;
        Ok(Turn::Kept)
    }

    /// Where the build starts, once every recorded entry was pushed.
    pub fn finish(mut self) -> Continuation {
        self.found.run_end = (self.found.written.offset, self.found.written.crc32);
        if let Some(entry) = self.after_run.take() {
            continue_entry(&mut self.found, &entry, self.parts, self.created);
        }
        self.found
    }
}

/// The time in a placed entry's headers: as recorded, or the job's creation time for an entry
/// placed before entry times were recorded.
fn time_of(placed: &zipkit_domain::models::EntryPlacement, created: EntryTime) -> EntryTime {
    placed.entry_time.map_or(created, EntryTime::from_utc)
}

/// Continues `entry`, the one after the kept run, inside the last uploaded part when it is a
/// stored entry whose start was recorded right where the run ends and whose data began before
/// that part.
fn continue_entry(
    found: &mut Continuation,
    entry: &RecordedEntry,
    parts: &[UploadedPart],
    created: EntryTime,
) {
    // Without a validator to send as `If-Range`, a source that changed could not be told from
    // one that did not.
    let Some((placed, validator)) = entry
        .placement
        .as_ref()
        .and_then(|p| Some((p, p.source_validator.clone()?)))
    else {
        return;
    };
    let Some((_, earlier)) = parts.split_last() else {
        return;
    };
    let at_run_end = u64::try_from(placed.offset).ok() == Some(found.written.offset);
    if placed.deflated || !at_run_end {
        return;
    }
    // The header in the bucket carries the entry's CRC-32 and size (the part it is in went up
    // only once they were known): continuing needs them as the earlier build recorded them.
    let (EntryState::Done, Some(size), Some(crc32)) = (entry.state, entry.size, entry.crc32) else {
        return;
    };
    let (Ok(size), Ok(entry_crc32)) = (u64::try_from(size), u32::try_from(crc32)) else {
        return;
    };
    let name = Bytes::copy_from_slice(entry.filename.as_str().as_bytes());
    let modified = time_of(placed, created);
    let header = LocalHeader {
        name: name.clone(),
        method: Method::Stored,
        modified,
        zip64: placed.zip64,
    }
    .final_bytes(entry_crc32, size, size, found.written.offset);
    let data_start = found.written.offset + header.len() as u64;

    let (last_start, crc_to_last) = crc32_of(earlier);
    let Some(written) = last_start.checked_sub(data_start).filter(|n| *n > 0) else {
        return;
    };
    let crc_to_data = crc32_concat(
        found.written.crc32,
        crc32fast::hash(&header),
        header.len() as u64,
    );
    let crc32 = crc32_tail(crc_to_last, crc_to_data, written);
    found.written.open = Some(OpenSoFar {
        entry: entry.index,
        name,
        zip64: placed.zip64,
        header_offset: found.written.offset,
        data_start,
        size: written,
        crc32,
        modified,
        header,
    });
    found.written.offset = last_start;
    found.written.crc32 = crc_to_last;
    found.bytes += written;
    found.continuing = Some(Continue {
        from: written,
        crc32,
        validator,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use zipkit_domain::models::{EntryPlacement, PlacedEnd};
    use zipkit_domain::values::EntryName;

    fn name(index: i32) -> EntryName {
        EntryName::parse(&format!("f{index}.bin")).unwrap()
    }

    /// Where a build taken over starts, the recorded entries pushed one by one.
    fn continuation(
        recorded: &[RecordedEntry],
        parts: &[UploadedPart],
        created: EntryTime,
    ) -> Continuation {
        let mut scan = Scan::new(parts, created);
        for entry in recorded {
            scan.push(entry.clone()).unwrap();
        }
        scan.finish()
    }

    /// The directory's bytes, and those of the records it should list.
    fn listing(directory: crate::archive::directory::Directory) -> Vec<u8> {
        let mut reader = directory.into_reader().unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk(1 << 16).unwrap() {
            bytes.extend_from_slice(&chunk);
        }
        bytes
    }

    /// Records of `done` entries: index, offset, end, method, time.
    fn expected(records: &[(i32, u64, u64, Method, EntryTime)]) -> Vec<u8> {
        let mut bytes = bytes::BytesMut::new();
        for (index, offset, end, method, modified) in records {
            let size = end - offset - 50;
            crate::archive::format::central_header(
                &mut bytes,
                &CentralRecord {
                    name: Bytes::from(format!("f{index}.bin")),
                    method: *method,
                    modified: *modified,
                    crc32: *index as u32 + 100,
                    compressed: size,
                    uncompressed: size,
                    header_offset: *offset,
                },
            );
        }
        bytes.to_vec()
    }

    fn done(index: i32, offset: i64, end: i64, crc: u32) -> RecordedEntry {
        RecordedEntry {
            index,
            filename: name(index),
            state: EntryState::Done,
            size: Some(end - offset - 50),
            crc32: Some(i64::from(index) + 100),
            placement: Some(EntryPlacement {
                index,
                offset,
                deflated: index % 2 == 1,
                zip64: false,
                source_validator: None,
                entry_time: None,
                end: Some(PlacedEnd {
                    end,
                    compressed_size: end - offset - 50,
                    archive_crc32: crc,
                }),
            }),
        }
    }

    fn unplaced(index: i32, state: EntryState) -> RecordedEntry {
        RecordedEntry {
            index,
            filename: name(index),
            state,
            size: None,
            crc32: None,
            placement: None,
        }
    }

    /// Parts of these sizes (their CRC-32s do not matter where nothing is continued).
    fn parts(sizes: &[i64]) -> Vec<UploadedPart> {
        (1..)
            .zip(sizes)
            .map(|(number, size)| UploadedPart {
                number,
                etag: format!("e{number}"),
                size: *size,
                crc32: 0,
            })
            .collect()
    }

    #[test]
    fn entries_placed_wholly_inside_the_uploaded_bytes_are_kept_with_their_directory_records() {
        let recorded = vec![
            done(0, 0, 1000, 11),
            unplaced(1, EntryState::Skipped),
            done(2, 1000, 3000, 22),
            done(3, 3000, 6000, 33),
            done(4, 6000, 9000, 44),
        ];
        let kept = continuation(&recorded, &parts(&[6500]), EntryTime::default());
        assert_eq!(
            (kept.kept, kept.last_kept),
            (4, 3),
            "entry 3 ends at 6,000, entry 4 at 9,000 > 6,500"
        );
        assert_eq!((kept.written.offset, kept.written.crc32), (6000, 33));
        assert_eq!((kept.files, kept.bytes), (3, 950 + 1950 + 2950));
        assert!(kept.continuing.is_none(), "entry 4 is not being written");
        assert_eq!(
            kept.written.directory.listed(),
            3,
            "the skipped entry is not listed"
        );
        let none = EntryTime::default();
        assert!(
            listing(kept.written.directory)
                == expected(&[
                    (0, 0, 1000, Method::Stored, none),
                    (2, 1000, 3000, Method::Stored, none),
                    (3, 3000, 6000, Method::Deflated, none),
                ])
        );
    }

    #[test]
    fn kept_entries_keep_their_recorded_time_and_those_built_again_are_told_theirs() {
        use chrono::TimeZone;
        let at = |day| {
            chrono::Utc
                .with_ymd_and_hms(2026, 3, day, 9, 30, 1)
                .unwrap()
        };
        let timed = |mut entry: RecordedEntry, day| {
            if let Some(p) = entry.placement.as_mut() {
                p.entry_time = Some(at(day));
            }
            entry
        };
        let recorded = vec![
            timed(done(0, 0, 1000, 11), 1),
            // Placed before times were recorded: the job's creation time, as builds then wrote.
            done(1, 1000, 3000, 22),
            timed(done(2, 3000, 6000, 33), 3),
            timed(done(3, 6000, 9000, 44), 4),
        ];
        let created = EntryTime::from_utc(at(28));
        let kept = continuation(&recorded, &parts(&[6500]), created);
        assert_eq!(kept.kept, 3);
        assert_eq!(kept.times, [(3, at(4))]);
        assert!(
            listing(kept.written.directory)
                == expected(&[
                    (0, 0, 1000, Method::Stored, EntryTime::from_utc(at(1))),
                    (1, 1000, 3000, Method::Deflated, created),
                    (2, 3000, 6000, Method::Stored, EntryTime::from_utc(at(3))),
                ])
        );
    }

    #[test]
    fn the_run_ends_at_the_first_entry_that_does_not_line_up() {
        let parts = parts(&[1000]);
        let none = EntryTime::default();
        // A skipped entry with no later placed entry may have been left out after its bytes
        // went in: it is built again.
        let trailing_skip = vec![done(0, 0, 100, 1), unplaced(1, EntryState::Skipped)];
        let kept = continuation(&trailing_skip, &parts, none);
        assert_eq!((kept.kept, kept.written.offset), (1, 100));
        // An offset that does not follow the previous end (an earlier build's leftover).
        let gap = vec![done(0, 0, 100, 1), done(1, 150, 300, 2)];
        assert_eq!(continuation(&gap, &parts, none).kept, 1);
        // Done but not placed yet (its bytes were still on their way out).
        let pending = vec![unplaced(0, EntryState::Done), done(1, 0, 100, 1)];
        let kept = continuation(&pending, &parts, none);
        assert_eq!(
            (kept.kept, kept.written.offset, kept.written.crc32),
            (0, 0, 0)
        );
        // Nothing uploaded: nothing kept.
        let all = vec![done(0, 0, 100, 1), done(1, 100, 200, 2)];
        assert_eq!(continuation(&all, &[], none).kept, 0);
        assert_eq!(continuation(&all, &parts, none).kept, 2);
    }

    #[test]
    fn a_stored_entry_cut_by_the_last_part_is_continued_at_that_parts_start() {
        // An archive: entry 0 (1,000 bytes of whatever), then the stored f1.bin, in 4,096-byte
        // parts of which three are uploaded; f1.bin's start was announced, and it was done (its
        // header, in part 1, went up with its values).
        let modified = EntryTime::default();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let header = LocalHeader {
            name: Bytes::from_static(b"f1.bin"),
            method: Method::Stored,
            modified,
            zip64: true,
        }
        .final_bytes(crc32fast::hash(&data), 20_000, 20_000, 1000);
        let mut archive: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        archive.extend_from_slice(&header);
        archive.extend_from_slice(&data);
        let uploaded: Vec<UploadedPart> = archive[..3 * 4096]
            .chunks(4096)
            .zip(1..)
            .map(|(bytes, number)| UploadedPart {
                number,
                etag: String::new(),
                size: bytes.len() as i64,
                crc32: crc32fast::hash(bytes),
            })
            .collect();
        let mut first = done(0, 0, 1000, crc32fast::hash(&archive[..1000]));
        first.placement.as_mut().unwrap().deflated = false;
        let recorded = vec![
            first,
            RecordedEntry {
                index: 1,
                filename: name(1),
                state: EntryState::Done,
                size: Some(20_000),
                crc32: Some(i64::from(crc32fast::hash(&data))),
                placement: Some(EntryPlacement {
                    index: 1,
                    offset: 1000,
                    deflated: false,
                    zip64: true,
                    source_validator: Some("\"v1\"".into()),
                    entry_time: None,
                    end: None,
                }),
            },
        ];
        let found = continuation(&recorded, &uploaded, modified);
        assert_eq!(found.kept, 1);
        let data_start = 1000 + header.len();
        let written = 2 * 4096 - data_start;
        assert_eq!(
            found.continuing,
            Some(Continue {
                from: written as u64,
                crc32: crc32fast::hash(&data[..written]),
                validator: "\"v1\"".into(),
            }),
            "picked up at the start of part 3, with the CRC-32 of the source before it"
        );
        assert_eq!(found.written.offset, 2 * 4096);
        assert_eq!(found.written.crc32, crc32fast::hash(&archive[..2 * 4096]));
        let open = found.written.open.clone().unwrap();
        assert_eq!(
            (open.header_offset, open.data_start),
            (1000, data_start as u64)
        );
        assert_eq!((open.size, open.zip64), (written as u64, true));
        assert_eq!(open.header, header, "the header as the bucket has it");
        assert_eq!(found.bytes, 950 + written as u64);

        // Without continuing: from the end of entry 0.
        let plain = found.without_continuing();
        assert!(plain.written.open.is_none() && plain.continuing.is_none());
        assert_eq!(plain.written.offset, 1000);
        assert_eq!(plain.written.crc32, crc32fast::hash(&archive[..1000]));
        assert_eq!(plain.bytes, 950);

        // Not recorded done: the header in the bucket would say what nobody knows here.
        let mut unfinished = recorded.clone();
        (unfinished[1].state, unfinished[1].size, unfinished[1].crc32) =
            (EntryState::Pending, None, None);
        assert!(
            continuation(&unfinished, &uploaded, modified)
                .continuing
                .is_none()
        );

        // A deflated entry, or one whose data starts inside the last part, is built again.
        let mut deflated = recorded.clone();
        deflated[1].placement.as_mut().unwrap().deflated = true;
        assert!(
            continuation(&deflated, &uploaded, modified)
                .continuing
                .is_none()
        );

        let found = continuation(&recorded, &uploaded[..1], modified);
        assert!(found.continuing.is_none(), "f1.bin's data starts in part 1");
        // Nor one whose source gave no validator to send as If-Range.
        let mut unvalidated = recorded.clone();
        unvalidated[1].placement.as_mut().unwrap().source_validator = None;
        let found = continuation(&unvalidated, &uploaded, modified);
        assert!(found.continuing.is_none());
    }
}
