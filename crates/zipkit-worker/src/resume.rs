//! What a job taken over from a worker that died keeps of that worker's build: every entry whose
//! bytes are all in parts already uploaded, as its placement was recorded (`zip_entries`:
//! offsets, compressed size, method, the archive's CRC-32 up to its end). Those entries are not
//! downloaded again; the writer starts right after the last of them with the central directory
//! records they need, and the uploader checks the rebuilt bytes from there on against the
//! recorded parts (`upload::Resume`). An entry cut across the end of the uploaded parts is built
//! again from its start.

use bytes::Bytes;
use zipkit_domain::EntryState;
use zipkit_domain::models::RecordedEntry;

use crate::archive::{CentralRecord, DosTime, Method, WrittenSoFar};
use crate::prefetch::Source;

/// Where a taken-over build starts.
#[derive(Debug, Default)]
pub struct Continuation {
    /// The archive as the earlier build wrote it up to where this one starts.
    pub written: WrittenSoFar,
    /// How many of the job's entries (from the first) are kept: not downloaded, not recorded
    /// again.
    pub kept: usize,
    /// Of those, the entries in the archive, and their sources' bytes.
    pub files: i32,
    pub bytes: u64,
}

/// The longest run of entries, from the first, that the earlier build placed wholly within the
/// first `uploaded` bytes of the archive (entries it skipped without writing a byte belong to
/// the run when a later entry does). Anything that does not line up (an offset that does not
/// follow the previous entry's end, a listed entry without its size or CRC-32) ends the run
/// there: the rest is built again and checked against the parts.
pub fn continuation(
    recorded: &[RecordedEntry],
    sources: &[Source],
    uploaded: u64,
    modified: DosTime,
) -> Continuation {
    let mut found = Continuation::default();
    // Every entry pushed here is kept in the same turn of the loop.
    let mut directory = Vec::new();
    for (position, (entry, source)) in recorded.iter().zip(sources).enumerate() {
        if entry.index != source.index {
            break;
        }
        let Some(placed) = entry.placement else {
            if entry.state == EntryState::Skipped {
                continue;
            }
            break;
        };
        let (Ok(offset), Ok(end), Ok(compressed)) = (
            u64::try_from(placed.offset),
            u64::try_from(placed.end),
            u64::try_from(placed.compressed_size),
        ) else {
            break;
        };
        if offset != found.written.offset || end > uploaded {
            break;
        }
        match (entry.state, entry.size, entry.crc32) {
            (EntryState::Done, Some(size), Some(crc32)) => {
                let (Ok(size), Ok(crc32)) = (u64::try_from(size), u32::try_from(crc32)) else {
                    break;
                };
                directory.push(CentralRecord {
                    name: Bytes::copy_from_slice(source.filename.as_bytes()),
                    method: if placed.deflated {
                        Method::Deflated
                    } else {
                        Method::Stored
                    },
                    modified,
                    crc32,
                    compressed,
                    uncompressed: size,
                    header_offset: offset,
                });
                found.files += 1;
                found.bytes += size;
            }
            // Started, then left out (`on_error: skip`): in the archive, not in the directory.
            (EntryState::Skipped, ..) => {}
            _ => break,
        }
        found.written.offset = end;
        found.written.crc32 = placed.archive_crc32;
        found.kept = position + 1;
    }
    found.written.directory = directory;
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use zipkit_domain::models::EntryPlacement;

    fn source(index: i32) -> Source {
        Source {
            index,
            url: format!("https://example.com/{index}").into(),
            filename: format!("f{index}.bin").into(),
        }
    }

    fn done(index: i32, offset: i64, end: i64, crc: u32) -> RecordedEntry {
        RecordedEntry {
            index,
            state: EntryState::Done,
            size: Some(end - offset - 50),
            crc32: Some(i64::from(index) + 100),
            placement: Some(EntryPlacement {
                index,
                offset,
                end,
                compressed_size: end - offset - 50,
                deflated: index % 2 == 1,
                archive_crc32: crc,
            }),
        }
    }

    fn unplaced(index: i32, state: EntryState) -> RecordedEntry {
        RecordedEntry {
            index,
            state,
            size: None,
            crc32: None,
            placement: None,
        }
    }

    #[test]
    fn entries_placed_wholly_inside_the_uploaded_bytes_are_kept_with_their_directory_records() {
        let sources: Vec<Source> = (0..5).map(source).collect();
        let recorded = vec![
            done(0, 0, 1000, 11),
            unplaced(1, EntryState::Skipped),
            done(2, 1000, 3000, 22),
            done(3, 3000, 6000, 33),
            done(4, 6000, 9000, 44),
        ];
        let kept = continuation(&recorded, &sources, 6500, DosTime::default());
        assert_eq!(
            kept.kept, 4,
            "entry 3 ends at 6,000, entry 4 at 9,000 > 6,500"
        );
        assert_eq!((kept.written.offset, kept.written.crc32), (6000, 33));
        assert_eq!((kept.files, kept.bytes), (3, 950 + 1950 + 2950));
        let directory = &kept.written.directory;
        assert_eq!(directory.len(), 3, "the skipped entry is not listed");
        assert_eq!(directory[1].name, Bytes::from_static(b"f2.bin"));
        assert_eq!(directory[1].header_offset, 1000);
        assert_eq!(directory[1].method, Method::Stored);
        assert_eq!(directory[2].method, Method::Deflated);
        assert_eq!((directory[2].crc32, directory[2].compressed), (103, 2950));
    }

    #[test]
    fn the_run_ends_at_the_first_entry_that_does_not_line_up() {
        let sources: Vec<Source> = (0..4).map(source).collect();
        // A skipped entry with no later placed entry may have been left out after its bytes
        // went in: it is built again.
        let trailing_skip = vec![done(0, 0, 100, 1), unplaced(1, EntryState::Skipped)];
        let kept = continuation(&trailing_skip, &sources, 1000, DosTime::default());
        assert_eq!((kept.kept, kept.written.offset), (1, 100));
        // An offset that does not follow the previous end (an earlier build's leftover).
        let gap = vec![done(0, 0, 100, 1), done(1, 150, 300, 2)];
        assert_eq!(
            continuation(&gap, &sources, 1000, DosTime::default()).kept,
            1
        );
        // Done but not placed yet (its bytes were still on their way out).
        let pending = vec![unplaced(0, EntryState::Done), done(1, 0, 100, 1)];
        let kept = continuation(&pending, &sources, 1000, DosTime::default());
        assert_eq!(
            (kept.kept, kept.written.offset, kept.written.crc32),
            (0, 0, 0)
        );
        // Nothing uploaded: nothing kept.
        let all = vec![done(0, 0, 100, 1), done(1, 100, 200, 2)];
        assert_eq!(continuation(&all, &sources, 0, DosTime::default()).kept, 0);
        assert_eq!(
            continuation(&all, &sources, 200, DosTime::default()).kept,
            2
        );
    }
}
