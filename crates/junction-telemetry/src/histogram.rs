//! A fixed-size log-linear latency histogram (microsecond resolution).
//!
//! Why: the dashboard needs p50/p95/p99 per series with small, fixed memory and
//! no allocation per sample. Values are bucketed HDR-style: each power of two is
//! split into `SUB` linear sub-buckets, so a bucket is never wider than 1/`SUB`
//! (12.5 %) of its lower bound; reporting a bucket's midpoint keeps the quantile
//! error within half of that. Values below `SUB` µs are exact; values above
//! ~134 s land in the last bucket.

/// log2 of the number of linear sub-buckets per power of two.
const SUB_BITS: u32 = 3;
/// Linear sub-buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// Largest exponent kept apart; larger values share the last bucket.
const MAX_EXP: u32 = 26;
/// Number of buckets.
pub(crate) const BINS: usize = (SUB + (MAX_EXP - SUB_BITS + 1) as u64 * SUB) as usize;

/// The bucket a latency of `micros` falls into.
pub(crate) fn index(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros();
    if exp > MAX_EXP {
        return BINS - 1;
    }
    let shift = exp - SUB_BITS;
    let sub = (micros >> shift) - SUB;
    (SUB + u64::from(shift) * SUB + sub) as usize
}

/// The inclusive range of microsecond values bucket `i` holds.
pub(crate) fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    let low = (SUB + sub) << shift;
    (low, low + (1 << shift) - 1)
}

/// The value reported for bucket `i`: its midpoint, in microseconds.
pub(crate) fn representative(i: usize) -> f64 {
    let (low, high) = bounds(i);
    (low as f64 + high as f64) / 2.0
}

/// The `q` quantile (0..=1) of a merged histogram, in milliseconds; 0 when empty.
pub(crate) fn quantile_ms(hist: &[f64; BINS], total: f64, q: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    // Rank of the wanted sample, 1-based; weights may be fractional.
    let rank = (q * total).max(f64::MIN_POSITIVE);
    let mut seen = 0.0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank - 1e-9 && *n > 0.0 {
            return representative(i) / 1000.0;
        }
    }
    // Rounding left the rank just past the end: report the highest non-empty bucket.
    hist.iter()
        .rposition(|n| *n > 0.0)
        .map_or(0.0, |i| representative(i) / 1000.0)
}

/// A histogram of microsecond values (latencies, sizes in bytes) with counts,
/// for whoever needs quantiles of their own series (`junction analyze`).
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u32; BINS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BINS]),
            total: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .finish()
    }
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        let c = &mut self.counts[index(value)];
        *c = c.saturating_add(1);
        self.total += 1;
    }

    /// Adds `other`'s counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1), the bucket's midpoint (within 1/16 of the
    /// value); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, n) in self.counts.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return representative(i).round() as u64;
            }
        }
        self.counts
            .iter()
            .rposition(|n| *n > 0)
            .map_or(0, |i| representative(i).round() as u64)
    }

    /// Σ (value − `threshold`) over the values above `threshold` (bucket
    /// midpoints): how much of the series lies past a cut-off.
    pub fn excess_over(&self, threshold: u64) -> f64 {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (representative(i) - threshold as f64).max(0.0) * f64::from(*n))
            .sum()
    }

    /// The non-empty buckets: (upper bound, count), lowest first.
    pub fn bins(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (bounds(i).1, u64::from(*n)))
    }

    /// Heap bytes it holds.
    pub const HEAP_BYTES: usize = BINS * 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_histogram_quantiles_and_merge() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in 1..=50u64 {
            a.record(v * 1000);
        }
        for v in 51..=100u64 {
            b.record(v * 1000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        let p50 = a.quantile(0.5) as f64;
        assert!((p50 - 50_000.0).abs() <= 50_000.0 / 8.0, "{p50}");
        let p99 = a.quantile(0.99) as f64;
        assert!((p99 - 99_000.0).abs() <= 99_000.0 / 8.0, "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn buckets_are_contiguous_and_cover_every_value() {
        let mut next = 0;
        for i in 0..BINS {
            let (low, high) = bounds(i);
            assert_eq!(low, next, "bucket {i} starts where the previous one ended");
            assert!(high >= low);
            next = high + 1;
        }
        assert_eq!(next, 1 << (MAX_EXP + 1));
    }

    #[test]
    fn index_and_bounds_agree() {
        for v in (0..5_000u64).chain([65_535, 1_000_000, 99_999_999]) {
            let (low, high) = bounds(index(v));
            assert!(low <= v && v <= high, "{v} in [{low}, {high}]");
        }
        assert_eq!(index(u64::MAX), BINS - 1);
    }

    #[test]
    fn relative_width_is_bounded() {
        for i in SUB as usize..BINS {
            let (low, high) = bounds(i);
            let width = (high - low + 1) as f64;
            assert!(width / low as f64 <= 1.0 / SUB as f64 + 1e-12);
        }
    }

    #[test]
    fn quantiles_of_a_merged_histogram() {
        let mut h = [0.0; BINS];
        for ms in 1..=100u64 {
            h[index(ms * 1000)] += 1.0;
        }
        let p50 = quantile_ms(&h, 100.0, 0.5);
        let p99 = quantile_ms(&h, 100.0, 0.99);
        assert!((p50 - 50.0).abs() <= 50.0 / 8.0, "p50 {p50}");
        assert!((p99 - 99.0).abs() <= 99.0 / 8.0, "p99 {p99}");
        assert_eq!(quantile_ms(&[0.0; BINS], 0.0, 0.5), 0.0);
    }
}
