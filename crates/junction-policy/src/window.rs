//! A rolling window of counters split into fixed buckets.
//!
//! Old buckets are cleared lazily when time moves past them, so recording and
//! reading are O(buckets) with no background task.

use std::time::Duration;
use tokio::time::Instant;

/// Number of buckets a window is split into; the window slides in steps of `window / BUCKETS`.
const BUCKETS: usize = 10;

/// Counts of two kinds of events (e.g. successes and failures) over the last `window`.
#[derive(Debug)]
pub(crate) struct RollingWindow {
    bucket_len: Duration,
    origin: Instant,
    /// (bucket index since origin, a count, b count)
    buckets: [(u64, u64, u64); BUCKETS],
}

impl RollingWindow {
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        let bucket_len = (window / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            bucket_len,
            origin: now,
            buckets: [(u64::MAX, 0, 0); BUCKETS],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.bucket_len.as_nanos()) as u64
    }

    /// Adds `a` and `b` to the bucket for `now`.
    pub(crate) fn record(&mut self, now: Instant, a: u64, b: u64) {
        let idx = self.index(now);
        let slot = &mut self.buckets[(idx % BUCKETS as u64) as usize];
        if slot.0 != idx {
            *slot = (idx, 0, 0);
        }
        slot.1 += a;
        slot.2 += b;
    }

    /// Sums of `a` and `b` over the buckets still inside the window at `now`.
    pub(crate) fn totals(&self, now: Instant) -> (u64, u64) {
        let idx = self.index(now);
        let oldest = idx.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|(i, _, _)| *i != u64::MAX && *i >= oldest && *i <= idx)
            .fold((0, 0), |(a, b), (_, x, y)| (a + x, b + y))
    }

    /// Forgets everything.
    pub(crate) fn reset(&mut self) {
        self.buckets = [(u64::MAX, 0, 0); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_buckets_fall_out_of_the_window() {
        let mut w = RollingWindow::new(Duration::from_secs(10), Instant::now());
        w.record(Instant::now(), 3, 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record(Instant::now(), 1, 1);
        assert_eq!(w.totals(Instant::now()), (4, 2));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(w.totals(Instant::now()), (1, 1));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(w.totals(Instant::now()), (0, 0));
    }
}
