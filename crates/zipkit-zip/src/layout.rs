//! What an archive's size adds up to before a byte of it is written: the writer's own records
//! (`format`), laid out as the writer lays them out. Exact when every entry is stored; for a
//! deflated entry the most its compressed bytes can take (deflate never grows data by more than
//! its stored blocks' headers), so the total is then an upper bound.

use zipkit_domain::Compression;

use crate::format::{self, MAX32, Method, NameCost};
use crate::method::method_by_name;

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

impl<'a> PlannedEntry<'a> {
    /// The entry when its request alone makes its bytes certain: stored by its name under the
    /// job's `compression`, and its size given.
    pub fn certain(compression: Compression, name: &'a str, size: Option<u64>) -> Option<Self> {
        match (method_by_name(compression, name), size) {
            (Some(Method::Stored), Some(length)) => Some(Self {
                name,
                method: Method::Stored,
                length,
            }),
            _ => None,
        }
    }
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
    let mut laid = Layouter::default();
    for entry in entries {
        laid.add_planned(entry);
    }
    laid.layout()
}

/// The archive's exact size when its request alone decides it: every entry `certain`.
pub fn certain_size<'a>(
    compression: Compression,
    entries: impl IntoIterator<Item = (&'a str, Option<u64>)>,
) -> Option<u64> {
    let mut laid = Layouter::default();
    for (name, size) in entries {
        laid.add_planned(PlannedEntry::certain(compression, name, size)?);
    }
    Some(laid.layout().size)
}

/// An archive laid out one entry at a time, as the writer writes it: entries already written,
/// with their actual sizes, then planned ones.
#[derive(Debug, Clone)]
pub struct Layouter {
    offset: u64,
    directory: u64,
    entries: u64,
    exact: bool,
    zip64: bool,
}

impl Default for Layouter {
    fn default() -> Self {
        Self::after(0, (0, 0, false))
    }
}

impl Layouter {
    /// Continues an archive written up to `offset`, whose central directory lists `entries` in
    /// `len` bytes, one of them with ZIP64 fields or not.
    pub fn after(offset: u64, (entries, len, zip64): (u64, u64, bool)) -> Self {
        Self {
            offset,
            directory: len,
            entries,
            exact: true,
            zip64,
        }
    }

    /// An entry whose sizes are known: its header was started with room for ZIP64 or not
    /// (`zip64_room`; the writer adds room to a header past 4 GiB).
    pub fn add_written(
        &mut self,
        name: NameCost,
        zip64_room: bool,
        uncompressed: u64,
        compressed: u64,
    ) {
        let room = zip64_room || self.offset >= MAX32;
        self.zip64 |= compressed >= MAX32 || uncompressed >= MAX32 || self.offset >= MAX32;
        self.directory +=
            format::central_header_len_by(name, uncompressed, compressed, self.offset) as u64;
        self.offset += format::local_header_len_by(name, room) as u64 + compressed;
        self.entries += 1;
    }

    /// An entry not written yet, with room for ZIP64 as its length decides; a deflated one takes
    /// the most it can, and the size becomes a bound.
    pub fn add_planned(&mut self, entry: PlannedEntry<'_>) {
        let compressed = match entry.method {
            Method::Stored => entry.length,
            Method::Deflated => {
                self.exact = false;
                deflate_bound(entry.length)
            }
        };
        let room = format::needs_zip64_room(Some(entry.length), 0);
        self.add_written(
            NameCost::of(entry.name.as_bytes()),
            room,
            entry.length,
            compressed,
        );
    }

    /// A stored entry not written yet, counted by its name's cost (`PlannedEntry::certain`).
    pub fn add_certain(&mut self, name: NameCost, length: u64) {
        let room = format::needs_zip64_room(Some(length), 0);
        self.add_written(name, room, length, length);
    }

    /// The archive these entries make, with its central directory and end records.
    pub fn layout(&self) -> Layout {
        let end = format::end_records_len(self.entries, self.offset, self.directory) as u64;
        Layout {
            size: self.offset + self.directory + end,
            exact: self.exact,
            zip64: self.zip64 || end > format::CLASSIC_END_LEN as u64,
            entries: self.entries,
        }
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

    #[test]
    fn a_request_decides_the_size_only_when_every_entry_is_stored_by_name_with_its_size() {
        let photos = [("a.jpg", Some(10)), ("b/c.PDF", Some(0))];
        let by_hand_size = by_hand(&[("a.jpg", 10), ("b/c.PDF", 0)]);
        assert_eq!(certain_size(Compression::Auto, photos), Some(by_hand_size));
        assert_eq!(certain_size(Compression::Store, photos), Some(by_hand_size));
        assert_eq!(certain_size(Compression::Deflate, photos), None);
        // `auto` decides a text file by its first bytes; a source without its size is unknown.
        assert_eq!(certain_size(Compression::Auto, [("a.txt", Some(10))]), None);
        assert_eq!(certain_size(Compression::Store, [("a.jpg", None)]), None);
    }
}
