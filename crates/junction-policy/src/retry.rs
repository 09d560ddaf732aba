//! Retries are three things: a policy (what is retryable, decided by the caller),
//! a backoff (how long to wait), and a budget (how much extra load retries may add).
//!
//! A fixed attempt count alone causes retry storms: when an upstream struggles,
//! every caller multiplies its load by the attempt count. The [`RetryBudget`] caps
//! retries to a fraction of recent requests (plus a small floor), so a struggling
//! upstream sees at most `1 + ratio` times its normal load.

use crate::window::RollingWindow;
use parking_lot::Mutex;
use rand::Rng;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Exponential backoff with full jitter: the wait before retry `n` (1-based) is
/// uniform in `[0, min(max, base * 2^(n-1))]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first retry's wait.
    pub base: Duration,
    /// Largest wait ever.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the wait before retry `retry` (1-based), before jitter.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A jittered wait before retry `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = rand::thread_rng().gen_range(0..=ceiling.as_nanos() as u64);
        Duration::from_nanos(nanos)
    }
}

/// Tuning of a [`RetryBudget`].
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a fraction of requests over the window (0.2 = 20%).
    pub ratio: f64,
    /// Retries always allowed per second, so low-traffic upstreams can still retry.
    pub min_per_sec: u32,
    /// How far back requests and retries are counted.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Caps retries to a fraction of recent requests. Shared by all callers of one upstream.
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// a = first attempts (deposits), b = retries (withdrawals)
    window: Mutex<RollingWindow>,
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let window = Mutex::new(RollingWindow::new(config.window, Instant::now()));
        Self { config, window }
    }

    /// Records a first attempt, which earns `ratio` of a retry.
    pub fn deposit(&self) {
        self.window.lock().record(Instant::now(), 1, 0);
    }

    /// Takes one retry from the budget; `false` means the budget is spent and the caller must not retry.
    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        let mut window = self.window.lock();
        let (requests, retries) = window.totals(now);
        let floor = self.config.min_per_sec as f64 * self.config.window.as_secs_f64();
        let allowed = floor + self.config.ratio * requests as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        window.record(now, 0, 1);
        true
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date. Dates in the past give zero.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceiling_doubles_up_to_max() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(700),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(4), Duration::from_millis(700));
        assert_eq!(b.ceiling(60), Duration::from_millis(700));
        for n in 1..8 {
            assert!(b.delay(n) <= b.ceiling(n));
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let b = Backoff {
            base: Duration::from_millis(1000),
            max: Duration::from_secs(10),
        };
        let samples: Vec<_> = (0..2000).map(|_| b.delay(1)).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(900)));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_ratio_of_requests_plus_floor() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.1,
            min_per_sec: 0,
            window: Duration::from_secs(10),
        });
        assert!(!budget.try_withdraw(), "no requests, no floor: no retries");
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..50).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!budget.try_withdraw(), "deposits expire with the window");
    }

    #[tokio::test(start_paused = true)]
    async fn budget_floor_lets_quiet_upstreams_retry() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.0,
            min_per_sec: 1,
            window: Duration::from_secs(3),
        });
        let granted = (0..10).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 3);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&future).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
