//! How an archive is cut into the parts of a multipart upload.

use std::ops::Range;

/// The first part's size in MiB: S3's smallest part to its largest.
pub const PART_MIB_RANGE: std::ops::RangeInclusive<u32> = 5..=5 * 1024;

/// S3's limits: at most 10,000 parts, each at most 5 GiB.
pub const MAX_PARTS: u64 = 10_000;
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// S3's smallest part, but for an upload's last.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// On S3, part sizes double after every this many parts.
pub const GROW_EVERY: i32 = 1_000;

/// How the archive is cut into parts so it fits in 10,000 of them whatever its size. The archive's
/// size is unknown until the end, so on S3 (and S3-compatible stores) parts start at the
/// configured size and double every 1,000 parts (8 MiB start: 1,000 parts reach 7.8 GiB, 10,000
/// parts over 5 TiB, S3's object limit). R2 requires equal parts except the last, so there the
/// size is fixed up front from the largest archive the deployment accepts. Fewer parts upload at
/// once as they grow, so memory stays near `(in_flight + 1) × first part size`.
#[derive(Debug, Clone, Copy)]
pub struct PartPlan {
    first: u64,
    in_flight: usize,
    equal: bool,
}

impl PartPlan {
    pub fn new(first: usize, in_flight: usize, equal_parts_for: Option<u64>) -> Self {
        let first = first as u64;
        match equal_parts_for {
            Some(largest) => Self {
                first: first.max(largest.div_ceil(MAX_PARTS)).min(MAX_PART),
                in_flight: in_flight.max(1),
                equal: true,
            },
            None => Self {
                first,
                in_flight: in_flight.max(1),
                equal: false,
            },
        }
    }

    /// The size of part `number` (1-based).
    pub fn size(&self, number: i32) -> usize {
        if self.equal {
            return self.first as usize;
        }
        let doublings = ((number.max(1) - 1) / GROW_EVERY).min(20) as u32;
        (self.first << doublings).min(MAX_PART) as usize
    }

    /// What decides where parts start and end, for the record of an upload (`in_flight` does
    /// not change the bytes).
    pub fn describe(&self) -> String {
        format!(
            "parts {} {}",
            self.first,
            if self.equal { "equal" } else { "growing" }
        )
    }

    /// Parts uploading at once while part `number` is cut.
    pub fn in_flight(&self, number: i32) -> usize {
        let grown = self.size(number) as u64 / self.first.max(1);
        (self.in_flight as u64 / grown.max(1)).max(1) as usize
    }
}

/// Where an upload that copies some of its parts from objects in the store (UploadPartCopy)
/// cuts its parts: as the plan cuts them, and besides right before and right after each copied
/// range, which is a part of its own. The writer and the uploader each keep one, fed the same
/// archive offsets, so the writer knows how many of an object's bytes to send before its copied
/// range for the part they end to be large enough.
#[derive(Debug, Clone, Copy)]
pub struct PartCuts {
    plan: PartPlan,
    /// Where the part being filled starts, and its number.
    start: u64,
    number: i32,
}

impl PartCuts {
    /// Cuts of an archive whose part `number` starts at offset `start`.
    pub fn new(plan: PartPlan, start: u64, number: i32) -> Self {
        Self {
            plan,
            start,
            number,
        }
    }

    /// Moves past the full parts that end at or before `offset`.
    fn advance(&mut self, offset: u64) {
        while offset >= self.start + self.plan.size(self.number) as u64 {
            self.start += self.plan.size(self.number) as u64;
            self.number += 1;
        }
    }

    /// How many of an object's first bytes to send before copying the rest of it, in `copies`
    /// ranges, from archive offset `at` on (its local header ends there), so that the part
    /// before the copy is empty or at least `MIN_PART`; `None` when the copies there would
    /// leave too few part numbers.
    pub fn head_before_copy(&mut self, at: u64, copies: u64) -> Option<u64> {
        self.advance(at);
        // The part before, the copied parts, and room for the archive's end.
        if self.number as u64 + copies + 1 >= MAX_PARTS {
            return None;
        }
        let filled = at - self.start;
        Some(if filled == 0 || filled >= MIN_PART {
            0
        } else {
            MIN_PART - filled
        })
    }

    /// A range of `len` bytes copied at archive offset `at`: the part being filled ends there,
    /// the range is the next part, and the one after starts behind it.
    pub fn copied(&mut self, at: u64, len: u64) {
        self.advance(at);
        if at > self.start {
            self.number += 1;
        }
        self.number += 1;
        self.start = at + len;
    }
}

/// The ranges of an object of `size` bytes the store copies into the archive after its first
/// `head` bytes were sent: parts of their own, each from `MIN_PART` to `MAX_PART` (an object up
/// to `MAX_PART` is one range). Past `MAX_PART` the last range is as large as a part may be and
/// the bytes before it are split evenly, so where the object's CRC-32 is known only the bytes
/// before the last range must be read to know every range's (`read_before_last_copy`).
/// `head` is under `MIN_PART` and `size` at least twice it, as `PartCuts::head_before_copy` and
/// the sizes worth copying make them.
pub fn copied_ranges(head: u64, size: u64) -> Vec<Range<u64>> {
    let last = last_copy_start(size).max(head);
    let before = last - head;
    let pieces = before.div_ceil(MAX_PART);
    let mut ranges: Vec<Range<u64>> = (0..pieces)
        .map(|i| head + before * i / pieces..head + before * (i + 1) / pieces)
        .collect();
    ranges.push(last..size);
    ranges
}

/// Where the last copied range of an object of `size` bytes starts, for any head.
fn last_copy_start(size: u64) -> u64 {
    if size <= MAX_PART {
        0
    } else {
        size - MAX_PART.min(size - 2 * MIN_PART)
    }
}

/// How many of an object's first bytes are read when the store keeps its CRC-32: those sent
/// before the copy and those of every copied range but the last, whose CRC-32 follows from the
/// object's.
pub fn read_before_last_copy(size: u64) -> u64 {
    MIN_PART.max(last_copy_start(size))
}

/// The part numbers copying an object of `size` bytes takes at most: its ranges, and the part
/// before them cut short.
pub fn copy_part_numbers(size: u64) -> u64 {
    copied_ranges(0, size).len() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn growing_parts_fit_s3s_largest_object_in_10000_parts() {
        let plan = PartPlan::new(8 * MIB, 4, None);
        assert_eq!(plan.size(1), 8 * MIB);
        assert_eq!(plan.size(1000), 8 * MIB);
        assert_eq!(plan.size(1001), 16 * MIB);
        assert_eq!(plan.in_flight(1), 4);
        assert_eq!(plan.in_flight(2001), 1);
        let total: u64 = (1..=MAX_PARTS as i32).map(|n| plan.size(n) as u64).sum();
        assert!(
            total >= 5 * 1024 * 1024 * MIB as u64,
            "10,000 parts hold {total} bytes"
        );
    }

    #[test]
    fn equal_parts_cover_the_largest_archive() {
        let largest = 500 * 1024 * MIB as u64;
        let plan = PartPlan::new(8 * MIB, 4, Some(largest));
        assert_eq!(plan.size(1), plan.size(9_999));
        assert!(plan.size(1) as u64 * MAX_PARTS >= largest);
        let small = PartPlan::new(8 * MIB, 4, Some(10 * MIB as u64));
        assert_eq!(small.size(1), 8 * MIB);
    }

    #[test]
    fn a_copy_gets_a_part_of_its_own_and_the_part_before_it_at_least_5_mib() {
        let plan = PartPlan::new(8 * MIB, 4, None);
        let mut cuts = PartCuts::new(plan, 0, 1);
        // A header of 100 bytes, then an object: 5 MiB less those 100 bytes go first.
        assert_eq!(cuts.head_before_copy(100, 1), Some(MIN_PART - 100));
        cuts.copied(MIN_PART, 300 * MIB as u64);
        let after = MIN_PART + 300 * MIB as u64;
        // Parts 1 (header and head) and 2 (the copy); part 3 starts behind it.
        assert_eq!((cuts.start, cuts.number), (after, 3));
        // 6 MiB streamed after it fill part 3 past 5 MiB: nothing more is sent first.
        assert_eq!(cuts.head_before_copy(after + 6 * MIB as u64, 1), Some(0));
        // 20 MiB streamed: part 3 is full at 8 MiB, part 4 too, part 5 holds 4 MiB.
        let mut later = PartCuts::new(plan, after, 3);
        assert_eq!(
            later.head_before_copy(after + 20 * MIB as u64, 1),
            Some(MIN_PART - 4 * MIB as u64)
        );
        assert_eq!(later.number, 5);
        // Exactly at a part's end: the copy starts the next part, nothing is sent first.
        let mut exact = PartCuts::new(plan, 0, 1);
        assert_eq!(exact.head_before_copy(8 * MIB as u64, 1), Some(0));
        exact.copied(8 * MIB as u64, 10 * MIB as u64);
        assert_eq!(exact.number, 3);
        // Without part numbers left, no copy.
        let mut last = PartCuts::new(plan, 0, MAX_PARTS as i32 - 2);
        assert_eq!(last.head_before_copy(100, 1), None);
        // Three copied ranges need three part numbers more than one does.
        let mut room = PartCuts::new(plan, 0, MAX_PARTS as i32 - 4);
        assert_eq!(room.head_before_copy(100, 1), Some(MIN_PART - 100));
        assert_eq!(room.head_before_copy(100, 3), None);
    }

    #[test]
    fn an_object_up_to_a_part_is_one_range_and_a_larger_one_ends_with_the_largest_part() {
        let gib = 1024 * MIB as u64;
        // Up to 5 GiB: one range after the head.
        let one = |r: Range<u64>| std::iter::once(r).collect::<Vec<_>>();
        assert_eq!(
            copied_ranges(100, 256 * MIB as u64),
            one(100..256 * MIB as u64)
        );
        assert_eq!(copied_ranges(0, MAX_PART), one(0..MAX_PART));
        assert_eq!(read_before_last_copy(MAX_PART), MIN_PART);
        assert_eq!(copy_part_numbers(MAX_PART), 2);
        // Just over 5 GiB: the last range leaves 10 MiB before it, so the range between the
        // head and it is at least 5 MiB whatever the head.
        let just_over = MAX_PART + 1;
        for head in [0, 1, MIN_PART - 1] {
            let ranges = copied_ranges(head, just_over);
            assert_eq!(ranges.len(), 2, "{ranges:?}");
            assert_eq!(ranges[0].start, head);
            assert_eq!(ranges[1], 2 * MIN_PART..just_over);
        }
        assert_eq!(read_before_last_copy(just_over), 2 * MIN_PART);
        // 23 GiB: the last 5 GiB, and 18 GiB before it in four even ranges.
        let size = 23 * gib;
        let ranges = copied_ranges(4096, size);
        assert_eq!(ranges.len(), 5);
        assert_eq!(ranges[4], 18 * gib..size);
        assert_eq!(read_before_last_copy(size), 18 * gib);
        assert!(copy_part_numbers(size) > ranges.len() as u64);
        for (a, b) in ranges.iter().zip(&ranges[1..]) {
            assert_eq!(a.end, b.start, "{ranges:?}");
        }
        for size in [
            2 * MIN_PART,
            3 * gib,
            MAX_PART + 7,
            11 * gib,
            5 * 1024 * gib,
        ] {
            for head in [0, 777, MIN_PART - 1] {
                let ranges = copied_ranges(head, size);
                assert_eq!(ranges.first().unwrap().start, head);
                assert_eq!(ranges.last().unwrap().end, size);
                assert!((ranges.len() as u64) < copy_part_numbers(size));
                for r in &ranges {
                    let len = r.end - r.start;
                    assert!((MIN_PART..=MAX_PART).contains(&len), "{size} {head}: {r:?}");
                }
            }
        }
    }
}
