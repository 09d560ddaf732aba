//! Tests of the report math, on synthetic runs whose figures are known.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::driver::{Path, RunResult, TxRecord};
use crate::scenario::OutageMode;
use crate::services::{ClusterStats, ServiceStats};

fn stats(lookup_calls: u64, bytes: u64) -> ClusterStats {
    let mut services = BTreeMap::new();
    let half = lookup_calls / 2;
    services.insert(
        ServiceKind::Inventory,
        ServiceStats {
            calls: half,
            failures: 0,
            bytes_sent: bytes / 2,
        },
    );
    services.insert(
        ServiceKind::Supplier,
        ServiceStats {
            calls: lookup_calls - half,
            failures: 0,
            bytes_sent: bytes - bytes / 2,
        },
    );
    ClusterStats { services }
}

/// 100 transactions over 10 s; `fail(i)` says which fail.
fn run(
    path: Path,
    latency_ms: impl Fn(u64) -> u64,
    fail: impl Fn(u64) -> bool,
    bytes: u64,
    lookup_calls: u64,
) -> RunResult {
    let records = (0..100u64)
        .map(|i| TxRecord {
            order_id: format!("o{i}"),
            start: Duration::from_millis(i * 100),
            latency: Duration::from_millis(latency_ms(i)),
            ok: !fail(i),
            error: fail(i).then(|| "fulfillment: 503".to_string()),
            accepted: matches!(path, Path::Junction { .. }) && !fail(i),
            bytes_received: bytes,
            lookups: 2,
        })
        .collect();
    RunResult {
        path,
        started: Instant::now(),
        duration: Duration::from_secs(10),
        wall: Duration::from_secs(11),
        records,
        service_stats: stats(lookup_calls, 3000 * 100),
        outages: vec![OutageWindow {
            service: ServiceKind::Fulfillment,
            start: Duration::from_secs(2),
            end: Duration::from_millis(4500),
            mode: OutageMode::Unavailable,
        }],
    }
}

fn runs() -> (RunResult, RunResult) {
    // Before: latencies 1001..=1100 ms... scaled ×10 → 1010..2000 ms; 30 failures (20..50).
    let before = run(
        Path::Direct,
        |i| 1000 + 10 * (i + 1),
        |i| (20..50).contains(&i),
        3000,
        200,
    );
    let gw = "127.0.0.1:1".parse().unwrap();
    // After: 10 ms each but one slow outlier; 2 failures.
    let after = run(
        Path::Junction { gateway: gw },
        |i| if i == 99 { 500 } else { 10 },
        |i| i == 3 || i == 70,
        1200,
        20,
    );
    (before, after)
}

pub(crate) fn sample_report() -> DemoReport {
    let (before, after) = runs();
    DemoReport::build("unit", &before, &after, None, None, Some(0))
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.5), 50.0);
    assert_eq!(percentile(&v, 0.99), 99.0);
    assert_eq!(percentile(&v, 1.0), 100.0);
    assert_eq!(percentile(&[7.0], 0.99), 7.0);
    assert_eq!(percentile(&[], 0.5), 0.0);
}

#[test]
fn summary_figures_come_from_the_runs() {
    let r = sample_report();
    let b = &r.before;
    assert_eq!(b.transactions, 100);
    assert_eq!(b.failed, 30);
    assert!((b.failed_pct - 30.0).abs() < 1e-9);
    assert!((b.avg_ms - 1505.0).abs() < 1e-6, "{}", b.avg_ms);
    assert!((b.p50_ms - 1500.0).abs() < 1e-6);
    assert!((b.p99_ms - 1990.0).abs() < 1e-6);
    assert!((b.max_ms - 2000.0).abs() < 1e-6);
    let a = &r.after;
    assert_eq!(a.failed, 2);
    assert!((a.avg_ms - 14.9).abs() < 1e-6, "{}", a.avg_ms);
    assert!((a.p50_ms - 10.0).abs() < 1e-6);
    assert!((a.max_ms - 500.0).abs() < 1e-6);

    // (30% - 2%) / 30%.
    assert!((r.failure_reduction_pct.unwrap() - 93.333_333).abs() < 1e-3);
    assert!((r.speedup - 1505.0 / 14.9).abs() < 1e-6);
    // 200 lookups asked, 20 reached the services.
    assert_eq!(r.upstream_calls_saved, 180);
    assert!((r.upstream_calls_saved_pct - 90.0).abs() < 1e-9);
    // 3000 B → 1200 B per order.
    assert!((r.payload_saved_pct - 60.0).abs() < 1e-9);
    assert!((r.rate - 10.0).abs() < 1e-9);
}

#[test]
fn timeline_buckets_failures_per_second() {
    let r = sample_report();
    let t = &r.timeline;
    // 10 s run → 30 buckets of 1/3 s.
    assert_eq!(t.before_failures_per_sec.len(), 30);
    let total: f64 = t
        .before_failures_per_sec
        .iter()
        .map(|v| v * t.bucket_secs)
        .sum();
    assert!((total - 30.0).abs() < 1e-6);
    let total_after: f64 = t
        .after_failures_per_sec
        .iter()
        .map(|v| v * t.bucket_secs)
        .sum();
    assert!((total_after - 2.0).abs() < 1e-6);
    // Failures are placed where the caller saw them: transaction i (20..50)
    // starts at i × 100 ms and ends 1000 + 10(i + 1) ms later, so the first is
    // seen at 3.21 s (bucket 9) and the last at 6.4 s (bucket 19).
    let nonzero: Vec<usize> = (0..30)
        .filter(|i| t.before_failures_per_sec[*i] > 0.0)
        .collect();
    assert_eq!(nonzero.first(), Some(&9));
    assert_eq!(nonzero.last(), Some(&19));
    // Transaction 3 of the after run: 300 ms + 10 ms → bucket 0.
    assert!((t.after_failures_per_sec[0] - 3.0).abs() < 1e-6);
}

#[test]
fn no_failures_before_means_no_reduction_figure() {
    let (_, after) = runs();
    let clean = run(Path::Direct, |_| 100, |_| false, 10, 200);
    let r = DemoReport::build("unit", &clean, &after, None, None, None);
    assert!(r.failure_reduction_pct.is_none());
    assert!(r.table().contains("n/a"));
}

#[test]
fn table_is_aligned_and_shows_measured_figures() {
    let r = sample_report();
    let table = r.table();
    assert!(table.contains("Failed transactions"));
    assert!(table.contains("30 (30.0%)"));
    assert!(table.contains("2 (2.0%)"));
    assert!(table.contains("-93%"));
    assert!(table.contains("180 saved (90%)"));
    assert!(table.contains("-60%"));
    assert!(table.contains("1.50 s"), "{table}");
    assert!(table.contains("Dead letters"));
    // Column 2 ends at the same place on every table row.
    let lines: Vec<&str> = table
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("Outage"))
        .collect();
    let header = lines[0];
    let end = header.find("Before (direct)").unwrap() + "Before (direct)".len();
    for l in lines.iter().skip(2) {
        let prefix: String = l.chars().take(end).collect();
        assert!(
            prefix.ends_with(|c: char| !c.is_whitespace()),
            "misaligned: {l}"
        );
    }
}

#[test]
fn json_round_trips_key_figures() {
    let r = sample_report();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.json");
    r.write_json(&p).unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["before"]["failed"], 30);
    assert_eq!(v["after"]["failed"], 2);
    assert_eq!(v["upstream_calls_saved"], 180);
    assert_eq!(v["dead_letters"], 0);
    assert!(v["before"].get("latencies_ms").is_none());
}

#[test]
fn counts_and_durations_format() {
    assert_eq!(count(150000), "150,000");
    assert_eq!(count(12), "12");
    assert_eq!(count(1234567), "1,234,567");
    assert_eq!(dur(4200.0), "4.20 s");
    assert_eq!(dur(700.0), "700 ms");
    assert_eq!(bytes(512.0), "512 B");
    assert_eq!(bytes(2048.0), "2.0 KiB");
}
