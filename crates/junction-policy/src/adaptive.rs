//! An adaptive concurrency limit: how many calls an upstream should have in
//! flight, learned from how long its answers take.
//!
//! The model is Netflix's Gradient2 (`concurrency-limits`), which Envoy's
//! adaptive concurrency filter also follows: a long-run average of response
//! times stands for the upstream's answer time when it is not queueing; when
//! recent answers take longer than `tolerance` × that, calls are queueing
//! somewhere and the limit shrinks in proportion (down to half per step);
//! while they do not, it grows by a small queue allowance per step. Failures
//! that mean "no answer" (timeouts, refused connections) cut it by a tenth,
//! as a loss does in TCP. The limit moves between `min` and `max` (the
//! upstream's `max_concurrency`); calls past it are refused at once by the
//! bulkhead (503 + `Retry-After: 1`) instead of waiting behind a slow upstream.
//!
//! Written here rather than taken from a crate: the crates that exist
//! (`tower-acc` 0.1, `tower-resilience-adaptive`) are young tower layers that
//! wait for capacity; Junction needs the limit inside its own bulkhead (which
//! refuses, and reports the limit to the admin API and metrics), and the
//! algorithm is about forty lines.

use parking_lot::Mutex;
use std::time::Duration;

/// How the limit learns (`upstreams.<name>.adaptive_concurrency`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Never below this.
    pub min: usize,
    /// Where it starts.
    pub initial: usize,
    /// Recent answers this many times slower than usual mean queueing.
    pub tolerance: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            min: 4,
            initial: 20,
            tolerance: 1.5,
        }
    }
}

/// Samples the long-run average spans (Gradient2's default).
const LONG_WINDOW: f64 = 600.0;
/// Samples before the long-run average means anything.
const WARMUP: u32 = 10;
/// How much of each new estimate is taken (smoothing).
const SMOOTHING: f64 = 0.2;
/// Calls allowed to queue on top of the estimate, so the limit can grow.
const QUEUE_ALLOWANCE: f64 = 4.0;

/// The learned limit of one upstream.
#[derive(Debug)]
pub struct AdaptiveLimit {
    cfg: AdaptiveConfig,
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: f64,
    /// Long-run average response time, in seconds.
    long_rtt: f64,
    samples: u32,
}

impl AdaptiveLimit {
    /// A limit between `cfg.min` and `max`, starting at `cfg.initial`.
    pub fn new(cfg: AdaptiveConfig, max: usize) -> Self {
        let max = max.max(1);
        let min = cfg.min.clamp(1, max);
        let cfg = AdaptiveConfig { min, ..cfg };
        Self {
            cfg,
            max,
            state: Mutex::new(State {
                limit: cfg.initial.clamp(min, max) as f64,
                long_rtt: 0.0,
                samples: 0,
            }),
        }
    }

    /// Calls allowed in flight now.
    pub fn current(&self) -> usize {
        self.state.lock().limit as usize
    }

    /// An answer took `rtt` with `in_flight` calls out (this one included).
    pub fn answered(&self, rtt: Duration, in_flight: usize) {
        let rtt = rtt.as_secs_f64().max(1e-6);
        let mut s = self.state.lock();
        s.samples = s.samples.saturating_add(1);
        if s.samples <= WARMUP {
            // A plain mean until there are enough samples.
            s.long_rtt += (rtt - s.long_rtt) / f64::from(s.samples);
            return;
        }
        s.long_rtt += (rtt - s.long_rtt) / LONG_WINDOW;
        // An upstream that got much faster for good: the long-run average
        // comes down quickly rather than over its whole window. (One slower
        // for good raises it over the window, ~600 answers, the limit at its
        // low end meanwhile: Gradient2's behaviour.)
        if s.long_rtt / rtt > 2.0 {
            s.long_rtt *= 0.95;
        }
        // Too few calls to say whether the limit is right: leave it.
        if (in_flight as f64) < s.limit / 2.0 {
            return;
        }
        let gradient = (self.cfg.tolerance * s.long_rtt / rtt).clamp(0.5, 1.0);
        let estimate = s.limit * gradient + QUEUE_ALLOWANCE;
        let limit = s.limit * (1.0 - SMOOTHING) + estimate * SMOOTHING;
        s.limit = limit.clamp(self.cfg.min as f64, self.max as f64);
    }

    /// A call got no answer (timeout, refused connection): a tenth off.
    pub fn dropped(&self) {
        let mut s = self.state.lock();
        s.limit = (s.limit * 0.9).max(self.cfg.min as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `n` answers taking `rtt`, each with the limit in use.
    fn busy(l: &AdaptiveLimit, rtt: Duration, n: usize) {
        for _ in 0..n {
            let full = l.current();
            l.answered(rtt, full);
        }
    }

    #[test]
    fn a_steady_busy_upstream_lets_the_limit_grow_to_its_max() {
        let l = AdaptiveLimit::new(AdaptiveConfig::default(), 100);
        busy(&l, ms(10), 2_000);
        assert_eq!(l.current(), 100);
    }

    #[test]
    fn queueing_shrinks_the_limit_towards_its_min() {
        let l = AdaptiveLimit::new(AdaptiveConfig::default(), 100);
        busy(&l, ms(10), 500);
        let before = l.current();
        // Answers now take 10x longer: calls are queueing.
        busy(&l, ms(100), 30);
        let after = l.current();
        assert!(after < before / 2, "{before} -> {after}");
        busy(&l, ms(1000), 200);
        assert!(l.current() <= 8, "{}", l.current());
        assert!(l.current() >= 4, "never below min");
    }

    #[test]
    fn an_idle_upstream_does_not_grow_its_limit_and_drops_cut_it() {
        let l = AdaptiveLimit::new(AdaptiveConfig::default(), 100);
        for _ in 0..1_000 {
            l.answered(ms(10), 1);
        }
        assert_eq!(l.current(), 20, "one call at a time says nothing about 20");
        l.dropped();
        assert_eq!(l.current(), 18);
        for _ in 0..100 {
            l.dropped();
        }
        assert_eq!(l.current(), 4);
    }

    #[test]
    fn bounds_hold_whatever_the_config() {
        let l = AdaptiveLimit::new(
            AdaptiveConfig {
                min: 50,
                initial: 500,
                tolerance: 1.5,
            },
            10,
        );
        assert_eq!(l.current(), 10, "min and initial within max");
    }
}
