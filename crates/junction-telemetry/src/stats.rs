//! Live per-series numbers for the dashboard: rate, error ratio, latency quantiles.
//!
//! Why: Prometheus histograms answer "since start"; an operator watching the
//! dashboard wants "right now". A [`RouteStats`] keeps a rolling window (30 s
//! by default) of one-second slots, each holding a count, error and retry
//! counters and a log-linear latency histogram (see `histogram`). Recording
//! takes a short lock, touches one slot and never allocates; reading merges the
//! slots of the window into one histogram (on the stack) and answers quantiles
//! whose error is bounded by the bucket width (≤ 12.5 %, reported as midpoints).
//!
//! Time is injectable: `record_at`/`snapshot(now)` take a `tokio::time::Instant`,
//! so tests drive the clock by hand or with tokio's paused time.

use crate::histogram::{self, BINS};
use crate::history::{History, HistorySnapshot};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Default length of the rolling window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// Longest window a series may keep (memory grows with it).
const MAX_WINDOW_SECS: u64 = 300;

/// What a series looks like now (over the window) and since it started (totals).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Calls per second over the window.
    pub rps: f64,
    /// Failed calls / calls over the window (0 when there were none).
    pub error_ratio: f64,
    /// Retried calls / calls over the window (0 when there were none).
    pub retry_ratio: f64,
    /// Median latency over the window, in ms (0 when there were no calls).
    pub p50_ms: f64,
    /// 95th percentile latency over the window, in ms.
    pub p95_ms: f64,
    /// 99th percentile latency over the window, in ms.
    pub p99_ms: f64,
    /// Calls over the window (the oldest slot weighted by its overlap).
    pub window_calls: f64,
    /// Calls since the series was created.
    pub count_total: u64,
    /// Failed calls since the series was created.
    pub errors_total: u64,
    /// Retried calls since the series was created.
    pub retries_total: u64,
}

/// One second of samples.
struct Slot {
    /// Second (since the series' origin) this slot holds; `u64::MAX` when unused.
    sec: u64,
    count: u32,
    errors: u32,
    retries: u32,
    hist: [u32; BINS],
}

impl Slot {
    const EMPTY: Slot = Slot {
        sec: u64::MAX,
        count: 0,
        errors: 0,
        retries: 0,
        hist: [0; BINS],
    };
}

/// The hour of history a series may keep.
type MaybeHistory = Option<Box<History>>;

/// Live numbers of one series (a route, an upstream, a subscriber, a graph edge).
pub struct RouteStats {
    origin: Instant,
    window_secs: u64,
    /// `window_secs + 1` slots (the window plus the slot it is sliding out
    /// of), and the hour of history when kept.
    slots: Mutex<(Box<[Slot]>, MaybeHistory)>,
    count_total: AtomicU64,
    errors_total: AtomicU64,
    retries_total: AtomicU64,
}

// === impl RouteStats ===

impl Default for RouteStats {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStats")
            .field("window_secs", &self.window_secs)
            .field("count_total", &self.count_total.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RouteStats {
    /// A series with the default 30 s window, starting now.
    pub fn new() -> Self {
        Self::with_window(DEFAULT_WINDOW, Instant::now())
    }

    /// A series with a window of `window` (whole seconds, 1..=300) whose clock starts at `origin`.
    pub fn with_window(window: Duration, origin: Instant) -> Self {
        let window_secs = window.as_secs().clamp(1, MAX_WINDOW_SECS);
        let slots: Vec<Slot> = (0..=window_secs).map(|_| Slot::EMPTY).collect();
        RouteStats {
            origin,
            window_secs,
            slots: Mutex::new((slots.into_boxed_slice(), None)),
            count_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            retries_total: AtomicU64::new(0),
        }
    }

    /// Like [`RouteStats::with_window`], also keeping the last hour at 10 s,
    /// statuses and a latency histogram (see [`crate::history`]).
    pub fn with_history(window: Duration, origin: Instant) -> Self {
        let s = Self::with_window(window, origin);
        s.slots.lock().1 = Some(Box::default());
        s
    }

    /// The hour of history ending at `now`, when the series keeps one.
    pub fn history(&self, now: Instant) -> Option<HistorySnapshot> {
        let sec = now.saturating_duration_since(self.origin).as_secs();
        self.slots.lock().1.as_ref().map(|h| h.snapshot(sec))
    }

    /// Records one call answered with `status` (kept by the history).
    pub fn record_status(&self, latency: Duration, is_error: bool, status: u16) {
        self.record_full(Instant::now(), latency, is_error, false, Some(status));
    }

    /// Length of the rolling window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }

    /// Records one call that took `latency` and failed when `is_error`.
    pub fn record(&self, latency: Duration, is_error: bool) {
        self.record_at(Instant::now(), latency, is_error, false);
    }

    /// Records one call that ended at `now`; `retried` when it needed more than one attempt.
    pub fn record_at(&self, now: Instant, latency: Duration, is_error: bool, retried: bool) {
        self.record_full(now, latency, is_error, retried, None);
    }

    fn record_full(
        &self,
        now: Instant,
        latency: Duration,
        is_error: bool,
        retried: bool,
        status: Option<u16>,
    ) {
        self.count_total.fetch_add(1, Ordering::Relaxed);
        if is_error {
            self.errors_total.fetch_add(1, Ordering::Relaxed);
        }
        if retried {
            self.retries_total.fetch_add(1, Ordering::Relaxed);
        }
        let sec = now.saturating_duration_since(self.origin).as_secs();
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bin = histogram::index(micros);
        let mut guard = self.slots.lock();
        let (slots, history) = &mut *guard;
        if let Some(h) = history {
            h.record(sec, micros, is_error, status);
        }
        let len = slots.len() as u64;
        let slot = &mut slots[(sec % len) as usize];
        if slot.sec != sec {
            if slot.sec != u64::MAX && slot.sec > sec {
                // A sample stamped before this slot was reused: too old for the window.
                return;
            }
            slot.sec = sec;
            slot.count = 0;
            slot.errors = 0;
            slot.retries = 0;
            slot.hist = [0; BINS];
        }
        slot.count = slot.count.saturating_add(1);
        slot.errors = slot.errors.saturating_add(u32::from(is_error));
        slot.retries = slot.retries.saturating_add(u32::from(retried));
        slot.hist[bin] = slot.hist[bin].saturating_add(1);
    }

    /// The numbers over the window ending at `now`, plus totals.
    ///
    /// The window is `(now - window, now]`: whole slots inside it count fully,
    /// the slot it is sliding out of counts by its overlap, so a steady rate
    /// reads steady. Until a full window has passed, the rate divides by the
    /// time elapsed since creation (at least one second).
    pub fn snapshot(&self, now: Instant) -> StatsSnapshot {
        let since = now.saturating_duration_since(self.origin);
        let sec = since.as_secs();
        let frac = f64::from(since.subsec_nanos()) / 1e9;
        let oldest = sec.checked_sub(self.window_secs);
        let mut hist = [0.0f64; BINS];
        let (mut count, mut errors, mut retries) = (0.0, 0.0, 0.0);
        {
            let guard = self.slots.lock();
            for slot in guard.0.iter() {
                if slot.sec == u64::MAX || slot.sec > sec {
                    continue;
                }
                let weight = match oldest {
                    Some(o) if slot.sec < o => continue,
                    Some(o) if slot.sec == o => 1.0 - frac,
                    _ => 1.0,
                };
                if weight <= 0.0 || slot.count == 0 {
                    continue;
                }
                count += weight * f64::from(slot.count);
                errors += weight * f64::from(slot.errors);
                retries += weight * f64::from(slot.retries);
                for (acc, n) in hist.iter_mut().zip(slot.hist.iter()) {
                    if *n > 0 {
                        *acc += weight * f64::from(*n);
                    }
                }
            }
        }
        let span = since.as_secs_f64().clamp(1.0, self.window_secs as f64);
        let ratio = |n: f64| if count > 0.0 { n / count } else { 0.0 };
        StatsSnapshot {
            rps: count / span,
            error_ratio: ratio(errors),
            retry_ratio: ratio(retries),
            p50_ms: histogram::quantile_ms(&hist, count, 0.50),
            p95_ms: histogram::quantile_ms(&hist, count, 0.95),
            p99_ms: histogram::quantile_ms(&hist, count, 0.99),
            window_calls: count,
            count_total: self.count_total.load(Ordering::Relaxed),
            errors_total: self.errors_total.load(Ordering::Relaxed),
            retries_total: self.retries_total.load(Ordering::Relaxed),
        }
    }
}

/// Series by name (route, upstream, subscriber); names should come from config, not requests.
#[derive(Debug)]
pub struct StatsRegistry {
    window: Duration,
    series: RwLock<HashMap<String, Arc<RouteStats>>>,
}

// === impl StatsRegistry ===

impl Default for StatsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl StatsRegistry {
    /// A registry whose series use the default 30 s window.
    pub fn new() -> Self {
        Self::with_window(DEFAULT_WINDOW)
    }

    /// A registry whose series use `window`.
    pub fn with_window(window: Duration) -> Self {
        StatsRegistry {
            window,
            series: RwLock::new(HashMap::new()),
        }
    }

    /// The series called `name` (keeping an hour of history), created on
    /// first use. Cache the `Arc` on hot paths.
    pub fn get_or_create(&self, name: &str) -> Arc<RouteStats> {
        if let Some(s) = self.series.read().get(name) {
            return Arc::clone(s);
        }
        let mut series = self.series.write();
        let entry = series
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(RouteStats::with_history(self.window, Instant::now())));
        Arc::clone(entry)
    }

    /// The series called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<RouteStats>> {
        self.series.read().get(name).cloned()
    }

    /// Every series' snapshot at `now`, sorted by name.
    pub fn snapshot_all(&self, now: Instant) -> Vec<(String, StatsSnapshot)> {
        let series: Vec<(String, Arc<RouteStats>)> = self
            .series
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let mut out: Vec<_> = series
            .into_iter()
            .map(|(name, s)| (name, s.snapshot(now)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.read().len()
    }

    /// True when no series exists yet.
    pub fn is_empty(&self) -> bool {
        self.series.read().is_empty()
    }
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
