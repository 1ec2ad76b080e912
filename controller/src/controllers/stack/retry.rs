//! Per-Stack retry state: how many passes in a row failed transiently, and how long to wait before
//! the next one. Delays come from `backon`'s exponential backoff (1 s doubling to a 5 minute cap,
//! with jitter, so that many Stacks failing on the same dead host do not retry in lockstep); the
//! count is reset by the first pass that succeeds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// First retry delay.
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// Retry counts by object key (`namespace/name`).
#[derive(Debug)]
pub struct Retries {
    counts: Mutex<HashMap<String, u32>>,
    builder: ExponentialBuilder,
}

impl Default for Retries {
    fn default() -> Self {
        Self::new()
    }
}

impl Retries {
    /// An empty table.
    pub fn new() -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_factor(2.0)
            .with_max_delay(MAX_DELAY)
            .with_jitter()
            .without_max_times();
        Self { counts: Mutex::new(HashMap::new()), builder }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed pass; returns the number of consecutive failures and the delay before the
    /// next attempt.
    pub fn failed(&self, key: &str) -> (u32, Duration) {
        let count = {
            let mut counts = self.lock();
            let c = counts.entry(key.to_string()).or_default();
            *c = c.saturating_add(1);
            *c
        };
        (count, self.delay(count))
    }

    /// The delay before attempt `count + 1` after `count` consecutive failures.
    pub fn delay(&self, count: u32) -> Duration {
        let nth = count.max(1) as usize;
        let d = self.builder.build().nth(nth - 1).unwrap_or(MAX_DELAY);
        // backon's jitter adds up to one more delay; the cap is a promise to the operator.
        d.min(MAX_DELAY)
    }

    /// Consecutive failures so far.
    pub fn count(&self, key: &str) -> u32 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Records a successful pass.
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_one_second_to_the_cap_and_reset_on_success() {
        let r = Retries::new();
        let mut floors = Vec::new();
        for _ in 0..12 {
            let (count, delay) = r.failed("ns/a");
            // Jitter adds at most as much again as the exponential floor.
            let floor = MIN_DELAY.saturating_mul(1 << (count - 1).min(20)).min(MAX_DELAY);
            assert!(delay >= floor && delay <= (floor * 2).min(MAX_DELAY), "{count}: {delay:?} vs {floor:?}");
            floors.push(floor);
        }
        assert_eq!(floors[0], Duration::from_secs(1));
        assert_eq!(floors[3], Duration::from_secs(8));
        assert_eq!(*floors.last().unwrap(), MAX_DELAY);
        assert_eq!(r.count("ns/a"), 12);
        assert_eq!(r.count("ns/b"), 0, "counts are per object");
        r.succeeded("ns/a");
        assert_eq!(r.failed("ns/a").0, 1);
    }
}
