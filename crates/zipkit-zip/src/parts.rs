//! How an archive is cut into the parts of a multipart upload.

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

    /// How many of an object's first bytes to send before copying the rest of it from archive
    /// offset `at` on (its local header ends there), so that the part before the copy is empty
    /// or at least `MIN_PART`; `None` when a copy there would leave too few part numbers.
    pub fn head_before_copy(&mut self, at: u64) -> Option<u64> {
        self.advance(at);
        // The part before, the copied part, and room for the archive's end.
        if self.number as u64 + 2 >= MAX_PARTS {
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
        assert_eq!(cuts.head_before_copy(100), Some(MIN_PART - 100));
        cuts.copied(MIN_PART, 300 * MIB as u64);
        let after = MIN_PART + 300 * MIB as u64;
        // Parts 1 (header and head) and 2 (the copy); part 3 starts behind it.
        assert_eq!((cuts.start, cuts.number), (after, 3));
        // 6 MiB streamed after it fill part 3 past 5 MiB: nothing more is sent first.
        assert_eq!(cuts.head_before_copy(after + 6 * MIB as u64), Some(0));
        // 20 MiB streamed: part 3 is full at 8 MiB, part 4 too, part 5 holds 4 MiB.
        let mut later = PartCuts::new(plan, after, 3);
        assert_eq!(
            later.head_before_copy(after + 20 * MIB as u64),
            Some(MIN_PART - 4 * MIB as u64)
        );
        assert_eq!(later.number, 5);
        // Exactly at a part's end: the copy starts the next part, nothing is sent first.
        let mut exact = PartCuts::new(plan, 0, 1);
        assert_eq!(exact.head_before_copy(8 * MIB as u64), Some(0));
        exact.copied(8 * MIB as u64, 10 * MIB as u64);
        assert_eq!(exact.number, 3);
        // Without part numbers left, no copy.
        let mut last = PartCuts::new(plan, 0, MAX_PARTS as i32 - 2);
        assert_eq!(last.head_before_copy(100), None);
    }
}
