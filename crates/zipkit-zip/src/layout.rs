//! What an archive's size adds up to before a byte of it is written: the writer's own records
//! (`format`), laid out as the writer lays them out. Exact when every entry is stored; for a
//! deflated entry the most its compressed bytes can take (deflate never grows data by more than
//! its stored blocks' headers), so the total is then an upper bound.

use crate::format::{self, MAX32, Method};

/// Uncompressed bytes per deflate block: the worker compresses each block on its own, ended with
/// a sync flush (the last with the stream's end).
pub const DEFLATE_BLOCK: usize = 1024 * 1024;

/// An entry as the plan sees it: its name, how it is stored, and its source's length.
#[derive(Debug, Clone, Copy)]
pub struct PlannedEntry<'a> {
    pub name: &'a str,
    pub method: Method,
    pub length: u64,
}

/// The archive the entries make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The archive's size in bytes: exact when `exact`, else the most it can be.
    pub size: u64,
    pub exact: bool,
    /// Whether ZIP64 records are written (for a bound: may be).
    pub zip64: bool,
    pub entries: u64,
}

/// Lays `entries` out in order, as the writer does.
pub fn layout<'a>(entries: impl IntoIterator<Item = PlannedEntry<'a>>) -> Layout {
    let (mut offset, mut directory, mut count) = (0u64, 0u64, 0u64);
    let (mut exact, mut zip64) = (true, false);
    for entry in entries {
        let compressed = match entry.method {
            Method::Stored => entry.length,
            Method::Deflated => {
                exact = false;
                deflate_bound(entry.length)
            }
        };
        let name = entry.name.as_bytes();
        let room = format::needs_zip64_room(Some(entry.length), offset);
        zip64 |= compressed >= MAX32 || entry.length >= MAX32 || offset >= MAX32;
        directory += format::central_header_len(name, entry.length, compressed, offset) as u64;
        offset += format::local_header_len(name, room) as u64 + compressed;
        count += 1;
    }
    let end = format::end_records_len(count, offset, directory) as u64;
    zip64 |= end > format::CLASSIC_END_LEN as u64;
    Layout {
        size: offset + directory + end,
        exact,
        zip64,
        entries: count,
    }
}

/// The most `length` bytes can deflate to in the worker's blocks: per block, zlib's bound for raw
/// deflate plus its flush marker.
pub fn deflate_bound(length: u64) -> u64 {
    let block = DEFLATE_BLOCK as u64;
    let whole = length / block;
    let rest = length % block;
    let one = |n: u64| n + (n >> 12) + (n >> 14) + (n >> 25) + 7 + 5;
    // An empty entry is one empty final block.
    whole * one(block) + if rest > 0 || whole == 0 { one(rest) } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{CentralRecord, EntryTime, LocalHeader};
    use bytes::{Bytes, BytesMut};

    /// The bytes the writer's records take for stored entries of these names and lengths, laid
    /// out by hand with `format`: the layout must add up to exactly that.
    fn by_hand(entries: &[(&str, u64)]) -> u64 {
        let (mut offset, mut directory) = (0u64, BytesMut::new());
        for (name, length) in entries {
            let header = LocalHeader {
                name: Bytes::copy_from_slice(name.as_bytes()),
                method: Method::Stored,
                modified: EntryTime::default(),
                zip64: *length >= format::ZIP64_THRESHOLD,
            }
            .with_room_at(offset);
            let bytes = header.final_bytes(0, *length, *length, offset);
            format::central_header(
                &mut directory,
                &CentralRecord {
                    name: header.name.clone(),
                    method: Method::Stored,
                    modified: EntryTime::default(),
                    crc32: 0,
                    compressed: *length,
                    uncompressed: *length,
                    header_offset: offset,
                },
            );
            offset += bytes.len() as u64 + length;
        }
        let count = entries.len() as u64;
        offset
            + directory.len() as u64
            + format::end_records(count, offset, directory.len() as u64).len() as u64
    }

    #[test]
    fn stored_entries_add_up_exactly_to_what_the_records_take() {
        let cases: Vec<Vec<(&str, u64)>> = vec![
            vec![("a.txt", 0)],
            vec![("a.txt", 10), ("dir/é.bin", 5 << 20)],
            // Past 4 GiB: a ZIP64 entry, and one whose header lies past 4 GiB.
            vec![("huge.bin", 5 << 30), ("after.txt", 19)],
            vec![("near.bin", format::ZIP64_THRESHOLD - 1), ("b", 70 << 20)],
        ];
        for entries in cases {
            let planned = layout(entries.iter().map(|(name, length)| PlannedEntry {
                name,
                method: Method::Stored,
                length: *length,
            }));
            assert!(planned.exact);
            assert_eq!(planned.size, by_hand(&entries), "{entries:?}");
            let big = entries.iter().map(|e| e.1).sum::<u64>() >= MAX32;
            assert_eq!(planned.zip64, big, "{entries:?}");
        }
    }

    #[test]
    fn more_than_65534_entries_take_the_zip64_end_records() {
        let names: Vec<String> = (0..65_535).map(|i| format!("f{i}")).collect();
        let planned = layout(names.iter().map(|name| PlannedEntry {
            name,
            method: Method::Stored,
            length: 1,
        }));
        assert!(planned.zip64 && planned.exact);
        assert_eq!(planned.entries, 65_535);
        let entries: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        assert_eq!(planned.size, by_hand(&entries));
    }

    #[test]
    fn a_deflated_entry_makes_the_size_a_bound() {
        let planned = layout([
            PlannedEntry {
                name: "a.txt",
                method: Method::Deflated,
                length: 3 << 20,
            },
            PlannedEntry {
                name: "b.jpg",
                method: Method::Stored,
                length: 100,
            },
        ]);
        assert!(!planned.exact);
        let stored_only = by_hand(&[("a.txt", 3 << 20), ("b.jpg", 100)]);
        assert_eq!(
            planned.size,
            stored_only + deflate_bound(3 << 20) - (3 << 20)
        );
        assert_eq!(deflate_bound(0), 12);
    }
}
