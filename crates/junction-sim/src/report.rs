//! The before/after report of the demo.
//!
//! [`DemoReport::build`] turns two measured runs (direct and through Junction)
//! plus the warm-up, the delivery check and the dead-letter count into the
//! figures of the seed's case study: response times, failed transactions,
//! failure reduction, upstream calls the cache saved, payload bytes saved,
//! events delivered eventually. Every figure is computed from measurements;
//! nothing is hard-coded. [`DemoReport::print_table`] prints them as an
//! aligned text table, `write_json` saves them (`plot::write_svg` draws them).

use std::fmt::Write as _;
use std::path::Path as FsPath;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::delivery::DeliveryReport;
use crate::driver::{RunResult, WarmupReport};
use crate::scenario::{OutageWindow, ServiceKind};

/// The measured figures of one path.
#[derive(Debug, Clone, Serialize)]
pub struct PathSummary {
    /// `direct` or `junction`.
    pub label: String,
    /// Transactions started.
    pub transactions: u64,
    /// Mean response time (ms).
    pub avg_ms: f64,
    /// Median response time (ms).
    pub p50_ms: f64,
    /// 99th percentile response time (ms).
    pub p99_ms: f64,
    /// Slowest response (ms).
    pub max_ms: f64,
    /// Transactions the caller saw fail.
    pub failed: u64,
    /// Failed transactions in percent.
    pub failed_pct: f64,
    /// Inventory + supplier lookups the caller asked for.
    pub lookups: u64,
    /// Inventory + supplier calls that reached the services.
    pub lookup_upstream_calls: u64,
    /// Response bytes the caller received.
    pub caller_bytes: u64,
    /// Response bytes all services sent during the run.
    pub service_bytes: u64,
    /// Every response time (ms), sorted; for the plot.
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
}

impl PathSummary {
    /// Summarises one run.
    pub fn from_run(run: &RunResult) -> PathSummary {
        let mut lat: Vec<f64> = run.records.iter().map(|r| ms(r.latency)).collect();
        lat.sort_by(f64::total_cmp);
        let n = lat.len() as u64;
        let failed = run.records.iter().filter(|r| !r.ok).count() as u64;
        let stats = &run.service_stats;
        PathSummary {
            label: run.path.label().to_string(),
            transactions: n,
            avg_ms: if n == 0 {
                0.0
            } else {
                lat.iter().sum::<f64>() / n as f64
            },
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
            failed,
            failed_pct: pct(failed as f64, n as f64),
            lookups: run.lookups(),
            lookup_upstream_calls: stats.get(ServiceKind::Inventory).calls
                + stats.get(ServiceKind::Supplier).calls,
            caller_bytes: run.bytes_received(),
            service_bytes: stats.total_bytes_sent(),
            latencies_ms: lat,
        }
    }

    /// Caller bytes per transaction.
    pub fn caller_bytes_per_tx(&self) -> f64 {
        ratio(self.caller_bytes as f64, self.transactions as f64)
    }

    /// Service bytes per transaction.
    pub fn service_bytes_per_tx(&self) -> f64 {
        ratio(self.service_bytes as f64, self.transactions as f64)
    }
}

/// Failures per time bucket of both runs, for the timeline plot.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// Width of one bucket (s).
    pub bucket_secs: f64,
    /// Failures per second of the direct run, bucket by bucket (by the time
    /// the caller saw the failure: start + latency).
    pub before_failures_per_sec: Vec<f64>,
    /// Failures per second of the Junction run.
    pub after_failures_per_sec: Vec<f64>,
}

impl Timeline {
    /// Buckets both runs' failures by when they were seen (late ones go in the last bucket).
    pub fn build(before: &RunResult, after: &RunResult) -> Timeline {
        let span = before.duration.max(after.duration);
        let bucket = if span >= Duration::from_secs(30) {
            1.0
        } else {
            (span.as_secs_f64() / 30.0).max(0.001)
        };
        let n = (span.as_secs_f64() / bucket - 1e-9).ceil().max(1.0) as usize;
        let series = |run: &RunResult| {
            let mut v = vec![0.0; n];
            for r in run.records.iter().filter(|r| !r.ok) {
                let seen = (r.start + r.latency).as_secs_f64();
                let i = ((seen / bucket) as usize).min(n - 1);
                v[i] += 1.0 / bucket;
            }
            v
        };
        Timeline {
            bucket_secs: bucket,
            before_failures_per_sec: series(before),
            after_failures_per_sec: series(after),
        }
    }
}

/// The before/after figures of the demo.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// The scenario that ran.
    pub scenario: String,
    /// Order syncs started per second.
    pub rate: f64,
    /// Length of each run (s).
    pub duration_secs: f64,
    /// The direct, synchronous path.
    pub before: PathSummary,
    /// The path through Junction.
    pub after: PathSummary,
    /// How much the failed-transaction rate dropped (%); None if nothing failed before.
    pub failure_reduction_pct: Option<f64>,
    /// Mean response time before / after.
    pub speedup: f64,
    /// Lookups answered without reaching the services (cache).
    pub upstream_calls_saved: u64,
    /// The same, in percent of the lookups asked for.
    pub upstream_calls_saved_pct: f64,
    /// How much less the caller received per order (%).
    pub payload_saved_pct: f64,
    /// The warm-up before the Junction run.
    pub warmup: Option<WarmupReport>,
    /// Whether every accepted order reached both subscribers.
    pub delivery: Option<DeliveryReport>,
    /// Messages in Junction's dead-letter queue (None if it could not be read).
    pub dead_letters: Option<usize>,
    /// Outage windows of each run.
    pub outages: Vec<OutageWindow>,
    /// Failures over time.
    pub timeline: Timeline,
}

impl DemoReport {
    /// Computes the report from measured runs.
    pub fn build(
        scenario: &str,
        before: &RunResult,
        after: &RunResult,
        warmup: Option<WarmupReport>,
        delivery: Option<DeliveryReport>,
        dead_letters: Option<usize>,
    ) -> DemoReport {
        let b = PathSummary::from_run(before);
        let a = PathSummary::from_run(after);
        let rate_b = ratio(b.failed as f64, b.transactions as f64);
        let rate_a = ratio(a.failed as f64, a.transactions as f64);
        let saved = a.lookups.saturating_sub(a.lookup_upstream_calls);
        DemoReport {
            scenario: scenario.to_string(),
            rate: ratio(b.transactions as f64, before.duration.as_secs_f64()),
            duration_secs: before.duration.as_secs_f64(),
            failure_reduction_pct: (rate_b > 0.0).then(|| pct(rate_b - rate_a, rate_b)),
            speedup: ratio(b.avg_ms, a.avg_ms),
            upstream_calls_saved: saved,
            upstream_calls_saved_pct: pct(saved as f64, a.lookups as f64),
            payload_saved_pct: pct(
                b.caller_bytes_per_tx() - a.caller_bytes_per_tx(),
                b.caller_bytes_per_tx(),
            ),
            warmup,
            delivery,
            dead_letters,
            outages: before.outages.clone(),
            timeline: Timeline::build(before, after),
            before: b,
            after: a,
        }
    }

    /// The table, as printed by [`DemoReport::print_table`].
    pub fn table(&self) -> String {
        let (b, a) = (&self.before, &self.after);
        let mut rows: Vec<[String; 4]> = vec![
            row("", "Before (direct)", "After (Junction)", "Change"),
            row(
                "Transactions",
                &count(b.transactions),
                &count(a.transactions),
                "",
            ),
            row(
                "Average response time",
                &dur(b.avg_ms),
                &dur(a.avg_ms),
                &format!("{:.1}x faster", self.speedup),
            ),
            row(
                "p50 response time",
                &dur(b.p50_ms),
                &dur(a.p50_ms),
                &change(b.p50_ms, a.p50_ms),
            ),
            row(
                "p99 response time",
                &dur(b.p99_ms),
                &dur(a.p99_ms),
                &change(b.p99_ms, a.p99_ms),
            ),
            row(
                "Max response time",
                &dur(b.max_ms),
                &dur(a.max_ms),
                &change(b.max_ms, a.max_ms),
            ),
            row(
                "Failed transactions",
                &format!("{} ({:.1}%)", count(b.failed), b.failed_pct),
                &format!("{} ({:.1}%)", count(a.failed), a.failed_pct),
                &self
                    .failure_reduction_pct
                    .map_or("n/a".into(), |p| format!("-{p:.0}%")),
            ),
            row(
                "Lookups reaching services",
                &format!("{} of {}", count(b.lookup_upstream_calls), count(b.lookups)),
                &format!("{} of {}", count(a.lookup_upstream_calls), count(a.lookups)),
                &format!(
                    "{} saved ({:.0}%)",
                    count(self.upstream_calls_saved),
                    self.upstream_calls_saved_pct
                ),
            ),
            row(
                "Payload received / order",
                &bytes(b.caller_bytes_per_tx()),
                &bytes(a.caller_bytes_per_tx()),
                &format!("-{:.0}%", self.payload_saved_pct),
            ),
            row(
                "Bytes sent by services / order",
                &bytes(b.service_bytes_per_tx()),
                &bytes(a.service_bytes_per_tx()),
                &change(b.service_bytes_per_tx(), a.service_bytes_per_tx()),
            ),
        ];
        if let Some(d) = &self.delivery {
            let when = match (d.complete, d.backlog_cleared_after_outage) {
                (false, _) => format!("missing after waiting {}", dur(ms(d.waited))),
                (true, Some(t)) => format!("backlog cleared {} after outage", dur(ms(t))),
                (true, None) => "all".to_string(),
            };
            let got = d.fulfillment_received.min(d.analytics_received);
            rows.push(row(
                "Events delivered eventually",
                "n/a",
                &format!("{} of {}", count(got as u64), count(d.accepted as u64)),
                &when,
            ));
        }
        let dlq = self.dead_letters.map_or("n/a".into(), |n| count(n as u64));
        rows.push(row("Dead letters", "n/a", &dlq, ""));

        let widths: Vec<usize> = (0..4)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let total: usize = widths.iter().sum::<usize>() + 3 * 3;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Junction demo — scenario {}, {:.0} orders/s for {}",
            self.scenario,
            self.rate,
            dur(self.duration_secs * 1000.0)
        );
        for (i, r) in rows.iter().enumerate() {
            let line = format!(
                "{:<w0$}   {:>w1$}   {:>w2$}   {}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
            let _ = writeln!(out, "{}", line.trim_end());
            if i == 0 {
                let _ = writeln!(out, "{}", "-".repeat(total));
            }
        }
        for w in &self.outages {
            let _ = writeln!(
                out,
                "Outage: {} ({}) from {} to {} of each run.",
                w.service,
                w.mode.name(),
                dur(ms(w.start)),
                dur(ms(w.end))
            );
        }
        if let Some(w) = &self.warmup {
            let _ = writeln!(
                out,
                "Warm-up (not measured): {} requests, {} failed, {}.",
                w.requests,
                w.failures,
                dur(ms(w.elapsed))
            );
        }
        out.trim_end().to_string()
    }

    /// Prints the table to stdout.
    pub fn print_table(&self) {
        println!("{}", self.table());
    }

    /// Writes the report as JSON.
    pub fn write_json(&self, path: impl AsRef<FsPath>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

fn row(a: &str, b: &str, c: &str, d: &str) -> [String; 4] {
    [a.into(), b.into(), c.into(), d.into()]
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn pct(a: f64, b: f64) -> f64 {
    100.0 * ratio(a, b)
}

fn change(before: f64, after: f64) -> String {
    if before <= 0.0 {
        return String::new();
    }
    let p = pct(after - before, before);
    format!("{}{p:.0}%", if p >= 0.0 { "+" } else { "" })
}

/// `812 ms`, `4.21 s`, `2.5 min`.
pub(crate) fn dur(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 120_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{:.1} min", ms / 60_000.0)
    }
}

fn bytes(b: f64) -> String {
    if b < 1024.0 {
        format!("{b:.0} B")
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// `150,000`.
fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[path = "report_tests.rs"]
pub(crate) mod tests;
