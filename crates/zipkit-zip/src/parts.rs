//! How an archive is cut into the parts of a multipart upload.

/// The first part's size in MiB: S3's smallest part to its largest.
pub const PART_MIB_RANGE: std::ops::RangeInclusive<u32> = 5..=5 * 1024;

/// S3's limits: at most 10,000 parts, each at most 5 GiB.
pub const MAX_PARTS: u64 = 10_000;
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
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
}
