//! The one backoff schedule every retry in zipkit uses: a first delay, doubled after each later
//! failure, never more than a ceiling.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// How long to wait after the `failures`-th failure in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_up_to_the_ceiling() {
        let backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(3600));
        assert_eq!(backoff.delay(1), Duration::from_secs(10));
        assert_eq!(backoff.delay(3), Duration::from_secs(40));
        assert_eq!(backoff.delay(20), Duration::from_secs(3600));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(3600));
        assert_eq!(backoff.delay(0), Duration::from_secs(10));
        let fast = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
        assert_eq!(
            (1..=3).map(|n| fast.delay(n)).collect::<Vec<_>>(),
            [250, 500, 1000].map(Duration::from_millis)
        );
    }
}
