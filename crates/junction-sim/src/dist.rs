//! Latency distributions for the simulated services.
//!
//! Real service latencies are skewed: most calls are near the median and a few
//! take many times longer. A scenario describes a latency by the two figures
//! people actually know (the mean and the p99) and this module turns them into
//! a log-normal distribution with exactly that mean and p99. It promises that
//! [`LogNormal::sample`] has the configured mean and p99 (up to sampling noise)
//! and that scaling by a factor scales every sample by that factor.

use std::time::Duration;

use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// The standard normal quantile of 0.99.
const Z99: f64 = 2.326_347_874_040_841;

/// Longest single sample, so a pathological tail cannot stall a run.
const MAX_SAMPLE_SECS: f64 = 600.0;

/// A log-normal latency distribution fixed by its mean and its p99.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
    mu: f64,
    sigma: f64,
}

impl LogNormal {
    /// Builds the distribution whose mean and 99th percentile are the given ones.
    ///
    /// For a log-normal, `ln(p99 / mean) = z·σ − σ²/2`; this takes the smaller
    /// root, the one where the tail is a tail and not most of the mass. That
    /// requires `mean < p99 <= ~14.9 × mean`.
    pub fn from_mean_p99(mean: Duration, p99: Duration) -> Result<Self> {
        let (m, p) = (mean.as_secs_f64(), p99.as_secs_f64());
        if m <= 0.0 {
            bail!("latency mean must be positive, got {mean:?}");
        }
        if p <= m {
            bail!("latency p99 ({p99:?}) must be larger than the mean ({mean:?})");
        }
        let d = (p / m).ln();
        let disc = Z99 * Z99 - 2.0 * d;
        if disc < 0.0 {
            let max = (Z99 * Z99 / 2.0).exp();
            bail!("latency p99 ({p99:?}) is more than {max:.1}× the mean ({mean:?}); a log-normal cannot have that shape");
        }
        let sigma = Z99 - disc.sqrt();
        let mu = m.ln() - sigma * sigma / 2.0;
        Ok(Self { mu, sigma })
    }

    /// The same shape with every sample multiplied by `factor` (> 0).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            mu: self.mu + factor.ln(),
            sigma: self.sigma,
        }
    }

    /// The mean of the distribution.
    pub fn mean(&self) -> Duration {
        secs((self.mu + self.sigma * self.sigma / 2.0).exp())
    }

    /// The value at standard-normal score `z` (0 gives the median, 2.326 the p99).
    pub fn quantile_z(&self, z: f64) -> Duration {
        secs((self.mu + self.sigma * z).exp())
    }

    /// The 99th percentile of the distribution.
    pub fn p99(&self) -> Duration {
        self.quantile_z(Z99)
    }

    /// Draws one latency.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let z: f64 = StandardNormal.sample(rng);
        secs((self.mu + self.sigma * z).exp())
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, MAX_SAMPLE_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn samples(d: &LogNormal, n: usize) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut v: Vec<f64> = (0..n).map(|_| d.sample(&mut rng).as_secs_f64()).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn closed_form_matches_inputs() {
        let d = LogNormal::from_mean_p99(ms(900), ms(3000)).unwrap();
        assert!((d.mean().as_secs_f64() - 0.9).abs() < 1e-6);
        assert!((d.p99().as_secs_f64() - 3.0).abs() < 1e-6);
    }

    #[test]
    fn sampled_mean_and_p99_within_tolerance() {
        for (mean, p99) in [(900, 3000), (1600, 6000), (600, 2500), (20, 60)] {
            let d = LogNormal::from_mean_p99(ms(mean), ms(p99)).unwrap();
            let v = samples(&d, 10_000);
            let got_mean = v.iter().sum::<f64>() / v.len() as f64;
            let want_mean = mean as f64 / 1000.0;
            assert!(
                (got_mean - want_mean).abs() / want_mean < 0.05,
                "mean {got_mean} vs {want_mean}"
            );
            let got_p99 = v[(v.len() as f64 * 0.99) as usize];
            let want_p99 = p99 as f64 / 1000.0;
            assert!(
                (got_p99 - want_p99).abs() / want_p99 < 0.12,
                "p99 {got_p99} vs {want_p99}"
            );
            // Skewed: the median is below the mean.
            assert!(v[v.len() / 2] < want_mean);
        }
    }

    #[test]
    fn scaling_scales_mean() {
        let d = LogNormal::from_mean_p99(ms(1000), ms(4000))
            .unwrap()
            .scaled(0.01);
        assert!((d.mean().as_secs_f64() - 0.01).abs() < 1e-9);
        let v = samples(&d, 10_000);
        let got = v.iter().sum::<f64>() / v.len() as f64;
        assert!((got - 0.01).abs() / 0.01 < 0.05, "{got}");
    }

    #[test]
    fn rejects_impossible_shapes() {
        assert!(LogNormal::from_mean_p99(ms(0), ms(10)).is_err());
        assert!(LogNormal::from_mean_p99(ms(100), ms(100)).is_err());
        assert!(LogNormal::from_mean_p99(ms(100), ms(50)).is_err());
        assert!(LogNormal::from_mean_p99(ms(100), ms(2000)).is_err());
        assert!(LogNormal::from_mean_p99(ms(100), ms(1400)).is_ok());
    }
}
