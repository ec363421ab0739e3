//! The ZIP records zipkit writes (APPNOTE 6.3.10): local headers that carry each entry's CRC-32
//! and sizes (no data descriptors: readers that walk local headers, like the JDK's
//! `ZipInputStream`, find every entry's end from its header), the central directory, and the end
//! records, with ZIP64 fields where a size, an offset or the entry count does not fit the classic
//! ones. A local header goes out first with zeros where its values go (`LocalHeader::placeholder`)
//! and is written again with them once the entry is done (`LocalHeader::final_bytes`), the same
//! length: the uploader holds back the part it falls in until then.
//!
//! The `zip` crate writes these too, but only around its own single-threaded compressor; zipkit
//! deflates blocks of an entry on several cores and needs to stream already-compressed bytes into
//! an entry, so it emits the records itself (see docs/DEPENDENCIES.md). `crate::layout` adds up
//! the same records' lengths to predict an archive's size.

use bytes::{BufMut, Bytes, BytesMut};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;

/// Bit 11: names are UTF-8.
const FLAGS: u16 = 0x0800;
const VERSION_DEFAULT: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// "Made by" Unix (3), spec 4.5, so the external attributes carry Unix permissions.
const MADE_BY: u16 = (3 << 8) | VERSION_ZIP64;
/// A regular file, rw-r--r--.
const EXTERNAL_ATTRIBUTES: u32 = 0o100_644 << 16;
const ZIP64_EXTRA: u16 = 0x0001;
/// An extra field that only takes room (the ID Android's zipalign uses): where a ZIP64 extra
/// field was kept room for and turned out not to be needed.
const PADDING_EXTRA: u16 = 0xD935;
/// Info-ZIP's extended timestamp: the modification time in UTC, to the second (the DOS fields
/// have no zone and count in steps of two seconds).
const TIMESTAMP_EXTRA: u16 = 0x5455;
const TIMESTAMP_EXTRA_LEN: u16 = 5;
/// Info-ZIP's Unicode Path: the UTF-8 name again, for readers that ignore the UTF-8 flag (older
/// Windows tools); written for names that are not plain ASCII.
const UNICODE_PATH_EXTRA: u16 = 0x7075;

/// Entries that may pass 4 GiB (unknown size, or near the limit) get room for ZIP64 fields in
/// their local header up front.
pub const ZIP64_THRESHOLD: u64 = 0xFFFF_FFFF - 64 * 1024 * 1024;

/// Largest value a classic 32-bit field holds; the value itself means "see the ZIP64 field".
pub const MAX32: u64 = 0xFFFF_FFFF;
const MAX16: u64 = 0xFFFF;

/// How an entry's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Stored,
    Deflated,
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Stored => 0,
            Method::Deflated => 8,
        }
    }
}

/// A timestamp in MS-DOS form (local time of the creator; zipkit writes UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DosTime {
    pub time: u16,
    pub date: u16,
}

impl DosTime {
    /// DOS dates run from 1980 to 2107; times outside are clamped to the nearest end.
    pub fn from_utc(at: chrono::DateTime<chrono::Utc>) -> Self {
        use chrono::{Datelike, Timelike};
        if at.year() < 1980 {
            return Self {
                time: 0,
                date: (1 << 5) | 1,
            };
        }
        if at.year() > 1980 + 127 {
            return Self {
                time: (23 << 11) | (59 << 5) | 29,
                date: (127 << 9) | (12 << 5) | 31,
            };
        }
        let year = (at.year() - 1980) as u16;
        Self {
            time: ((at.hour() as u16) << 11)
                | ((at.minute() as u16) << 5)
                | (at.second() as u16 / 2),
            date: (year << 9) | ((at.month() as u16) << 5) | at.day() as u16,
        }
    }
}

/// An entry's modification time, to the second: what its DOS fields and its extended
/// timestamp carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryTime(chrono::DateTime<chrono::Utc>);

impl EntryTime {
    pub fn from_utc(at: chrono::DateTime<chrono::Utc>) -> Self {
        use chrono::SubsecRound;
        Self(at.trunc_subsecs(0))
    }

    pub fn at(self) -> chrono::DateTime<chrono::Utc> {
        self.0
    }

    fn dos(self) -> DosTime {
        DosTime::from_utc(self.0)
    }

    /// Seconds since 1970, clamped to 0..=2^31-1 so readers that take the field as signed
    /// and those that take it as unsigned agree.
    fn unix(self) -> u32 {
        self.0.timestamp().clamp(0, i64::from(i32::MAX)) as u32
    }
}

/// The fields local and central headers share, from "version needed" to the DOS time.
fn put_version_to_time(b: &mut BytesMut, zip64: bool, method: Method, modified: EntryTime) {
    b.put_u16_le(if zip64 {
        VERSION_ZIP64
    } else {
        VERSION_DEFAULT
    });
    b.put_u16_le(FLAGS);
    b.put_u16_le(method.code());
    let dos = modified.dos();
    b.put_u16_le(dos.time);
    b.put_u16_le(dos.date);
}

/// The extra fields every header carries after the ZIP64 one: the extended timestamp, and the
/// Unicode Path for a name that is not ASCII.
fn put_common_extras(b: &mut BytesMut, name: &[u8], modified: EntryTime) {
    b.put_u16_le(TIMESTAMP_EXTRA);
    b.put_u16_le(TIMESTAMP_EXTRA_LEN);
    b.put_u8(1); // the modification time only
    b.put_u32_le(modified.unix());
    if !name.is_ascii() {
        b.put_u16_le(UNICODE_PATH_EXTRA);
        b.put_u16_le(5 + name.len() as u16);
        b.put_u8(1); // version
        b.put_u32_le(crc32fast::hash(name));
        b.put_slice(name);
    }
}

fn common_extras_len(name: &[u8]) -> u16 {
    let unicode = if name.is_ascii() {
        0
    } else {
        9 + name.len() as u16
    };
    4 + TIMESTAMP_EXTRA_LEN + unicode
}

/// What the central directory keeps about an entry once it is written.
#[derive(Debug, Clone)]
pub struct CentralRecord {
    pub name: Bytes,
    pub method: Method,
    pub modified: EntryTime,
    pub crc32: u32,
    pub compressed: u64,
    pub uncompressed: u64,
    pub header_offset: u64,
}

/// An entry's local header: its name, method, time, and whether it has room for a ZIP64 extra
/// field (decided before its first byte: the header's length cannot change afterwards).
#[derive(Debug, Clone)]
pub struct LocalHeader {
    pub name: Bytes,
    pub method: Method,
    pub modified: EntryTime,
    /// Room for the ZIP64 extra field: an entry whose size is not known to stay under 4 GiB, or
    /// whose header lies past 4 GiB (`with_room_at`).
    pub zip64: bool,
}

impl LocalHeader {
    /// The same header, with room for ZIP64 when it lies at `offset` past 4 GiB: its central
    /// record then needs ZIP64 for the offset, and so does it.
    pub fn with_room_at(mut self, offset: u64) -> Self {
        self.zip64 |= offset >= MAX32;
        self
    }

    /// Its length in bytes, the same before and after its values are known.
    pub fn encoded_len(&self) -> usize {
        local_header_len(&self.name, self.zip64)
    }

    /// The header before the entry's values are known: zeros where they go.
    pub fn placeholder(&self) -> Bytes {
        self.bytes(0, 0, 0, false)
    }

    /// The header at `offset` with the entry's CRC-32 and sizes; as long as the placeholder.
    /// ZIP64 only where needed: when a size or the offset passes the classic fields, the sizes
    /// go in the ZIP64 extra field and the classic fields say so; otherwise the room kept for it
    /// is a padding extra field (0xD935, as Android's zipalign writes), which readers skip.
    pub fn final_bytes(
        &self,
        crc32: u32,
        compressed: u64,
        uncompressed: u64,
        offset: u64,
    ) -> Bytes {
        let zip64 = compressed >= MAX32 || uncompressed >= MAX32 || offset >= MAX32;
        debug_assert!(
            !zip64 || self.zip64,
            "ZIP64 values in a header without room for them"
        );
        self.bytes(crc32, compressed, uncompressed, zip64 && self.zip64)
    }

    fn bytes(&self, crc32: u32, compressed: u64, uncompressed: u64, zip64: bool) -> Bytes {
        let name = &self.name;
        let mut b = BytesMut::with_capacity(30 + 2 * name.len() + 40);
        b.put_u32_le(LOCAL_HEADER);
        put_version_to_time(&mut b, zip64, self.method, self.modified);
        b.put_u32_le(crc32);
        if zip64 {
            b.put_u32_le(MAX32 as u32);
            b.put_u32_le(MAX32 as u32);
        } else {
            b.put_u32_le(compressed as u32);
            b.put_u32_le(uncompressed as u32);
        }
        b.put_u16_le(name.len() as u16);
        let room = if self.zip64 { 20 } else { 0 };
        b.put_u16_le(room + common_extras_len(name));
        b.put_slice(name);
        if self.zip64 {
            b.put_u16_le(if zip64 { ZIP64_EXTRA } else { PADDING_EXTRA });
            b.put_u16_le(16);
            b.put_u64_le(if zip64 { uncompressed } else { 0 });
            b.put_u64_le(if zip64 { compressed } else { 0 });
        }
        put_common_extras(&mut b, name, self.modified);
        b.freeze()
    }
}

/// What an entry's name takes in each of its headers: the name and the extra fields it brings
/// (the timestamp, and a Unicode path for a name that is not ASCII). A plan counts entries by it
/// without keeping their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameCost(u32);

impl NameCost {
    pub fn of(name: &[u8]) -> Self {
        Self(name.len() as u32 + u32::from(common_extras_len(name)))
    }
}

/// The length of a local header for `name`, with room for a ZIP64 field or not.
pub fn local_header_len(name: &[u8], zip64_room: bool) -> usize {
    local_header_len_by(NameCost::of(name), zip64_room)
}

/// `local_header_len` by the name's cost.
pub fn local_header_len_by(name: NameCost, zip64_room: bool) -> usize {
    let room = if zip64_room { 20 } else { 0 };
    30 + name.0 as usize + room
}

/// Whether an entry's local header has room for a ZIP64 field: its size may pass 4 GiB, or the
/// header lies past 4 GiB (`LocalHeader::with_room_at`).
pub fn needs_zip64_room(length_at_most: Option<u64>, offset: u64) -> bool {
    length_at_most.is_none_or(|l| l >= ZIP64_THRESHOLD) || offset >= MAX32
}

/// The length of an entry's central directory header.
pub fn central_header_len(name: &[u8], uncompressed: u64, compressed: u64, offset: u64) -> usize {
    central_header_len_by(NameCost::of(name), uncompressed, compressed, offset)
}

/// `central_header_len` by the name's cost.
pub fn central_header_len_by(
    name: NameCost,
    uncompressed: u64,
    compressed: u64,
    offset: u64,
) -> usize {
    let overflowing = zip64_fields(uncompressed, compressed, offset).count();
    let zip64 = if overflowing > 0 {
        4 + 8 * overflowing
    } else {
        0
    };
    46 + name.0 as usize + zip64
}

/// The values of a central header that overflow the classic fields: they go into its ZIP64
/// extra field, in the order the spec fixes.
fn zip64_fields(uncompressed: u64, compressed: u64, offset: u64) -> impl Iterator<Item = u64> {
    [uncompressed, compressed, offset]
        .into_iter()
        .filter(|v| *v >= MAX32)
}

/// Appends one central directory header.
pub fn central_header(out: &mut BytesMut, r: &CentralRecord) {
    let mut extra = BytesMut::new();
    for value in zip64_fields(r.uncompressed, r.compressed, r.header_offset) {
        extra.put_u64_le(value);
    }
    let zip64 = !extra.is_empty();
    let clamp = |v: u64| v.min(MAX32) as u32;
    out.reserve(46 + 2 * r.name.len() + 48);
    out.put_u32_le(CENTRAL_HEADER);
    out.put_u16_le(MADE_BY);
    put_version_to_time(out, zip64, r.method, r.modified);
    out.put_u32_le(r.crc32);
    out.put_u32_le(clamp(r.compressed));
    out.put_u32_le(clamp(r.uncompressed));
    out.put_u16_le(r.name.len() as u16);
    let zip64_len = if zip64 { 4 + extra.len() as u16 } else { 0 };
    out.put_u16_le(zip64_len + common_extras_len(&r.name));
    out.put_u16_le(0); // comment
    out.put_u16_le(0); // disk number
    out.put_u16_le(0); // internal attributes
    out.put_u32_le(EXTERNAL_ATTRIBUTES);
    out.put_u32_le(clamp(r.header_offset));
    out.put_slice(&r.name);
    if zip64 {
        out.put_u16_le(ZIP64_EXTRA);
        out.put_u16_le(extra.len() as u16);
        out.put_slice(&extra);
    }
    put_common_extras(out, &r.name, r.modified);
}

/// The classic end record's length; the ZIP64 end record and locator add 76 bytes.
pub const CLASSIC_END_LEN: usize = 22;

fn zip64_end(entries: u64, directory_offset: u64, directory_size: u64) -> bool {
    entries >= MAX16 || directory_offset >= MAX32 || directory_size >= MAX32
}

/// The length of the end records.
pub fn end_records_len(entries: u64, directory_offset: u64, directory_size: u64) -> usize {
    let zip64 = if zip64_end(entries, directory_offset, directory_size) {
        56 + 20
    } else {
        0
    };
    CLASSIC_END_LEN + zip64
}

/// The end records: a ZIP64 end record and locator when the count, size or offset of the central
/// directory overflows the classic fields, then the classic end record.
pub fn end_records(entries: u64, directory_offset: u64, directory_size: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(22 + 56 + 20);
    let zip64 = zip64_end(entries, directory_offset, directory_size);
    if zip64 {
        let zip64_end_offset = directory_offset + directory_size;
        b.put_u32_le(ZIP64_END);
        b.put_u64_le(44); // size of the rest of this record
        b.put_u16_le(MADE_BY);
        b.put_u16_le(VERSION_ZIP64);
        b.put_u32_le(0); // this disk
        b.put_u32_le(0); // disk with the central directory
        b.put_u64_le(entries);
        b.put_u64_le(entries);
        b.put_u64_le(directory_size);
        b.put_u64_le(directory_offset);
        b.put_u32_le(ZIP64_LOCATOR);
        b.put_u32_le(0);
        b.put_u64_le(zip64_end_offset);
        b.put_u32_le(1); // total disks
    }
    let count = entries.min(MAX16) as u16;
    b.put_u32_le(END);
    b.put_u16_le(0);
    b.put_u16_le(0);
    b.put_u16_le(count);
    b.put_u16_le(count);
    b.put_u32_le(directory_size.min(MAX32) as u32);
    b.put_u32_le(directory_offset.min(MAX32) as u32);
    b.put_u16_le(0); // comment
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dos_time_packs_fields_and_clamps_early_dates() {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 26, 13, 45, 31)
            .unwrap();
        let t = DosTime::from_utc(at);
        assert_eq!(t.date >> 9, 46);
        assert_eq!((t.date >> 5) & 0xF, 11);
        assert_eq!(t.date & 0x1F, 26);
        assert_eq!(t.time >> 11, 13);
        assert_eq!((t.time >> 5) & 0x3F, 45);
        assert_eq!(t.time & 0x1F, 15);
        let early = DosTime::from_utc(chrono::Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(early.date, (1 << 5) | 1);
    }

    #[test]
    fn central_header_uses_zip64_only_for_overflowing_fields() {
        let mut small = BytesMut::new();
        let record = CentralRecord {
            name: Bytes::from_static(b"a.txt"),
            method: Method::Stored,
            modified: EntryTime::default(),
            crc32: 1,
            compressed: 10,
            uncompressed: 10,
            header_offset: 0,
        };
        central_header(&mut small, &record);
        assert_eq!(small.len(), 46 + 5 + 9);
        let mut large = BytesMut::new();
        central_header(
            &mut large,
            &CentralRecord {
                compressed: 5 << 30,
                uncompressed: 5 << 30,
                ..record
            },
        );
        assert_eq!(large.len(), 46 + 5 + 4 + 16 + 9);
        assert_eq!(&large[20..28], &[0xFF; 8]);
    }

    #[test]
    fn a_local_header_uses_zip64_only_where_a_size_or_its_offset_needs_it() {
        let header = LocalHeader {
            name: Bytes::from_static(b"a.bin"),
            method: Method::Stored,
            modified: EntryTime::default(),
            zip64: true,
        };
        let extra_id = |b: &Bytes| u16::from_le_bytes([b[35], b[36]]);
        let version = |b: &Bytes| u16::from_le_bytes([b[4], b[5]]);
        // Room kept (unknown size), small after all: classic sizes, the room padding.
        let small = header.final_bytes(7, 10, 10, 0);
        assert_eq!(small.len(), header.placeholder().len());
        assert_eq!((version(&small), extra_id(&small)), (20, PADDING_EXTRA));
        assert_eq!(&small[18..26], &[10, 0, 0, 0, 10, 0, 0, 0]);
        // A size past 4 GiB, or the header past 4 GiB: ZIP64 with both sizes.
        for (size, offset) in [(5 << 30, 0), (10, 5 << 30)] {
            let big = header.final_bytes(7, size, size, offset);
            assert_eq!((version(&big), extra_id(&big)), (45, ZIP64_EXTRA));
            assert_eq!(&big[18..26], &[0xFF; 8]);
            assert_eq!(&big[37 + 2..37 + 10], &size.to_le_bytes());
        }
        // No room: no extra field at all.
        let plain = LocalHeader {
            zip64: false,
            ..header.clone()
        };
        assert_eq!(plain.final_bytes(7, 10, 10, 0).len(), 30 + 5 + 9);
        assert!(plain.clone().with_room_at(5 << 30).zip64);
    }

    #[test]
    fn end_records_switch_to_zip64_past_65534_entries() {
        assert_eq!(end_records(65_534, 100, 100).len(), 22);
        assert_eq!(end_records(65_535, 100, 100).len(), 22 + 56 + 20);
    }
}
