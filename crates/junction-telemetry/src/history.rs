//! The last hour of one series at 10 s resolution, its answers by status and
//! its latency histogram since start: what the dashboard's drill-down shows
//! (`GET /admin/drill`).
//!
//! Why apart from the 30 s window of [`crate::stats`]: that window answers
//! "now" with quantiles per second; an investigation asks "since when, how
//! often, which statuses". 360 buckets of counters (no histogram each) keep
//! that to ~12 KB per series, updated under the series' existing lock.

use crate::histogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Seconds per point.
pub const STEP_SECS: u64 = 10;
/// Points kept: one hour.
pub const POINTS: usize = 360;
/// Distinct statuses counted (more are counted under 0).
const MAX_STATUSES: usize = 64;

#[derive(Clone, Copy)]
struct Bucket {
    /// 10 s step (since the series' origin) it holds; `u64::MAX` unused.
    step: u64,
    calls: u32,
    errors: u32,
    sum_us: u64,
    max_us: u64,
}

const EMPTY: Bucket = Bucket {
    step: u64::MAX,
    calls: 0,
    errors: 0,
    sum_us: 0,
    max_us: 0,
};

/// The hour of one series.
pub struct History {
    buckets: Box<[Bucket; POINTS]>,
    statuses: BTreeMap<u16, u64>,
    latency: Histogram,
}

impl Default for History {
    fn default() -> Self {
        Self {
            buckets: Box::new([EMPTY; POINTS]),
            statuses: BTreeMap::new(),
            latency: Histogram::default(),
        }
    }
}

/// What the drill-down shows of a series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistorySnapshot {
    /// Seconds per point.
    pub step_s: u64,
    /// The last hour, oldest first; each point starts `ago_s` seconds ago.
    pub points: Vec<Point>,
    /// Answers by status since start (0: statuses past the first 64 seen).
    pub statuses: Vec<StatusCount>,
    /// Latency histogram since start: calls at or below each bound.
    pub latency: Vec<LatencyBin>,
    /// Calls since start.
    pub calls: u64,
    /// Latency quantiles since start, in ms.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// One 10 s point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Seconds before now at which it starts.
    pub ago_s: u64,
    /// Calls in it.
    pub calls: u32,
    /// Failed calls in it.
    pub errors: u32,
    /// Mean latency (ms; 0 without calls).
    pub mean_ms: f64,
    /// Slowest call (ms).
    pub max_ms: f64,
}

/// Answers with one status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusCount {
    /// The status (0: others).
    pub status: u16,
    /// How many.
    pub count: u64,
}

/// One histogram bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyBin {
    /// Upper bound, ms.
    pub le_ms: f64,
    /// Calls in the bucket.
    pub count: u64,
}

impl History {
    /// Records a call ending `sec` seconds after the series' origin.
    pub fn record(&mut self, sec: u64, micros: u64, is_error: bool, status: Option<u16>) {
        let step = sec / STEP_SECS;
        let b = &mut self.buckets[(step % POINTS as u64) as usize];
        if b.step != step {
            if b.step != u64::MAX && b.step > step {
                return; // older than the hour the bucket now holds
            }
            *b = EMPTY;
            b.step = step;
        }
        b.calls = b.calls.saturating_add(1);
        b.errors = b.errors.saturating_add(u32::from(is_error));
        b.sum_us = b.sum_us.saturating_add(micros);
        b.max_us = b.max_us.max(micros);
        self.latency.record(micros);
        if let Some(s) = status {
            let key = if self.statuses.len() < MAX_STATUSES || self.statuses.contains_key(&s) {
                s
            } else {
                0
            };
            *self.statuses.entry(key).or_default() += 1;
        }
    }

    /// The hour ending at `sec` seconds after the origin.
    pub fn snapshot(&self, sec: u64) -> HistorySnapshot {
        let now_step = sec / STEP_SECS;
        let into_step = sec % STEP_SECS;
        let points = (0..POINTS as u64)
            .rev()
            .map(|back| {
                let ago_s = back * STEP_SECS + into_step;
                let step = now_step.checked_sub(back);
                let b = step
                    .map(|s| self.buckets[(s % POINTS as u64) as usize])
                    .filter(|b| Some(b.step) == step)
                    .unwrap_or(EMPTY);
                Point {
                    ago_s,
                    calls: b.calls,
                    errors: b.errors,
                    mean_ms: if b.calls > 0 {
                        b.sum_us as f64 / f64::from(b.calls) / 1000.0
                    } else {
                        0.0
                    },
                    max_ms: b.max_us as f64 / 1000.0,
                }
            })
            .collect();
        let q = |q: f64| self.latency.quantile(q) as f64 / 1000.0;
        HistorySnapshot {
            step_s: STEP_SECS,
            points,
            statuses: self
                .statuses
                .iter()
                .map(|(s, n)| StatusCount {
                    status: *s,
                    count: *n,
                })
                .collect(),
            latency: self
                .latency
                .bins()
                .map(|(le_us, count)| LatencyBin {
                    le_ms: le_us as f64 / 1000.0,
                    count,
                })
                .collect(),
            calls: self.latency.count(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_ten_second_points_with_statuses_and_a_histogram() {
        let mut h = History::default();
        h.record(5, 1_000, false, Some(200));
        h.record(7, 3_000, true, Some(503));
        h.record(25, 2_000, false, Some(200));
        let s = h.snapshot(31);
        assert_eq!(s.points.len(), POINTS);
        let last = &s.points[POINTS - 1];
        assert_eq!((last.ago_s, last.calls), (1, 0));
        let p = &s.points[POINTS - 2]; // 20–30 s
        assert_eq!((p.ago_s, p.calls, p.errors), (11, 1, 0));
        let p = &s.points[POINTS - 4]; // 0–10 s
        assert_eq!((p.calls, p.errors), (2, 1));
        assert!((p.mean_ms - 2.0).abs() < 1e-9 && (p.max_ms - 3.0).abs() < 1e-9);
        assert_eq!(
            s.statuses,
            vec![
                StatusCount {
                    status: 200,
                    count: 2
                },
                StatusCount {
                    status: 503,
                    count: 1
                }
            ]
        );
        assert_eq!(s.calls, 3);
        assert_eq!(s.latency.iter().map(|b| b.count).sum::<u64>(), 3);
        // An hour and more later, the old points are gone; the totals stay.
        let s = h.snapshot(31 + 3_600);
        assert!(s.points.iter().all(|p| p.calls == 0));
        assert_eq!(s.calls, 3);
    }

    #[test]
    fn statuses_past_the_bound_count_as_others() {
        let mut h = History::default();
        for s in 100..(100 + MAX_STATUSES as u16 + 5) {
            h.record(1, 1, false, Some(s));
        }
        let snap = h.snapshot(2);
        assert_eq!(snap.statuses.len(), MAX_STATUSES + 1);
        assert_eq!(
            snap.statuses[0],
            StatusCount {
                status: 0,
                count: 5
            }
        );
    }
}
