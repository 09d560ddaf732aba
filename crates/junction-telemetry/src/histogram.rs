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

#[cfg(test)]
mod tests {
    use super::*;

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
