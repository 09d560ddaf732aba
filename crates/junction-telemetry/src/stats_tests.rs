use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Ten calls a second, latencies cycling 10..=100 ms, from `from_s` to `to_s` (exclusive).
fn steady(stats: &RouteStats, t0: Instant, from_s: u64, to_s: u64) {
    for s in from_s..to_s {
        for k in 0..10u64 {
            let at = t0 + Duration::from_secs(s) + ms(k * 100);
            stats.record_at(at, ms((k + 1) * 10), k == 0, k < 2);
        }
    }
}

fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance
}

#[test]
fn steady_traffic_reads_steady() {
    let t0 = Instant::now();
    let stats = RouteStats::with_window(DEFAULT_WINDOW, t0);
    steady(&stats, t0, 0, 60);
    let s = stats.snapshot(t0 + Duration::from_secs(60));
    assert!(within(s.rps, 10.0, 1e-9), "rps {}", s.rps);
    assert!(within(s.window_calls, 300.0, 1e-9));
    assert!(
        within(s.error_ratio, 0.1, 1e-9),
        "error ratio {}",
        s.error_ratio
    );
    assert!(
        within(s.retry_ratio, 0.2, 1e-9),
        "retry ratio {}",
        s.retry_ratio
    );
    assert_eq!(s.count_total, 600);
    assert_eq!(s.errors_total, 60);
    assert_eq!(s.retries_total, 120);

    // Half a second into the next slot: the oldest slot counts by its overlap.
    steady(&stats, t0, 60, 61);
    let s = stats.snapshot(t0 + ms(60_550));
    // Slot 30 weighs 0.45 (4.5 calls), slots 31..59 give 290, slot 60 has 10
    // (recorded ahead of the clock; the window ends at `now`, later ones count).
    assert!(
        within(s.window_calls, 304.5, 1e-6),
        "calls {}",
        s.window_calls
    );
    assert!(within(s.rps, 304.5 / 30.0, 1e-6), "rps {}", s.rps);
}

#[test]
fn quantiles_are_within_one_bucket() {
    let t0 = Instant::now();
    let stats = RouteStats::with_window(DEFAULT_WINDOW, t0);
    // 1..=100 ms, once each, spread over three seconds.
    for i in 1..=100u64 {
        stats.record_at(t0 + ms(i * 30), ms(i), false, false);
    }
    let s = stats.snapshot(t0 + Duration::from_secs(4));
    for (got, want) in [(s.p50_ms, 50.0), (s.p95_ms, 95.0), (s.p99_ms, 99.0)] {
        assert!(
            within(got, want, want / 8.0),
            "got {got}, want {want} ± 12.5%"
        );
    }
    assert!(s.p50_ms < s.p95_ms && s.p95_ms <= s.p99_ms);
    assert!(within(s.rps, 25.0, 1e-9), "100 calls over 4 s: {}", s.rps);
}

#[test]
fn known_traffic_gives_known_error_ratio() {
    let t0 = Instant::now();
    let stats = RouteStats::with_window(DEFAULT_WINDOW, t0);
    for i in 0..100u64 {
        stats.record_at(t0 + ms(i * 10), ms(5), i % 10 == 3, false);
    }
    let s = stats.snapshot(t0 + Duration::from_secs(2));
    assert!(within(s.error_ratio, 0.1, 1e-12), "{}", s.error_ratio);
    assert_eq!((s.count_total, s.errors_total), (100, 10));
    assert!(within(s.rps, 50.0, 1e-9), "100 calls over 2 s: {}", s.rps);
    assert!(within(s.p99_ms, 5.0, 5.0 / 8.0), "{}", s.p99_ms);
}

#[test]
fn old_traffic_leaves_the_window_but_not_the_totals() {
    let t0 = Instant::now();
    let stats = RouteStats::with_window(DEFAULT_WINDOW, t0);
    steady(&stats, t0, 0, 5);
    let s = stats.snapshot(t0 + Duration::from_secs(40));
    assert_eq!(s.rps, 0.0);
    assert_eq!(s.p99_ms, 0.0);
    assert_eq!(s.error_ratio, 0.0);
    assert_eq!(s.count_total, 50);

    // A slot is reused once its second has left the window.
    stats.record_at(t0 + Duration::from_secs(41), ms(7), false, false);
    let s = stats.snapshot(t0 + Duration::from_secs(42));
    assert!(within(s.window_calls, 1.0, 1e-12));
    assert!(within(s.p50_ms, 7.0, 7.0 / 8.0));
}

#[test]
fn a_late_sample_older_than_its_slot_only_counts_in_totals() {
    let t0 = Instant::now();
    let stats = RouteStats::with_window(Duration::from_secs(2), t0);
    stats.record_at(t0 + Duration::from_secs(3), ms(1), false, false);
    // Second 0 maps to the same slot (3 slots) but is older than what it holds.
    stats.record_at(t0, ms(1), true, false);
    let s = stats.snapshot(t0 + Duration::from_secs(3));
    assert!(within(s.window_calls, 1.0, 1e-12));
    assert_eq!(s.error_ratio, 0.0);
    assert_eq!((s.count_total, s.errors_total), (2, 1));
}

#[test]
fn rate_before_a_full_second_divides_by_one_second() {
    let t0 = Instant::now();
    let stats = RouteStats::with_window(DEFAULT_WINDOW, t0);
    for i in 0..5u64 {
        stats.record_at(t0 + ms(i * 100), ms(1), false, false);
    }
    assert!(within(stats.snapshot(t0 + ms(500)).rps, 5.0, 1e-9));
    assert_eq!(
        RouteStats::with_window(DEFAULT_WINDOW, t0).snapshot(t0),
        StatsSnapshot::default()
    );
}

#[tokio::test(start_paused = true)]
async fn paused_clock_drives_the_window() {
    let stats = RouteStats::new();
    for _ in 0..20 {
        for _ in 0..4 {
            stats.record(ms(20), false);
        }
        tokio::time::advance(ms(250)).await;
    }
    // 80 calls over 5 s of paused time.
    let s = stats.snapshot(Instant::now());
    assert!(within(s.rps, 16.0, 1e-9), "rps {}", s.rps);
    assert!(within(s.p50_ms, 20.0, 20.0 / 8.0), "p50 {}", s.p50_ms);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(stats.snapshot(Instant::now()).rps, 0.0);
}

#[test]
fn concurrent_recorders_lose_nothing() {
    let stats = Arc::new(RouteStats::new());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let stats = Arc::clone(&stats);
            std::thread::spawn(move || {
                for i in 0..2_000u32 {
                    stats.record(Duration::from_micros(u64::from(i)), i % 4 == 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("recorder thread");
    }
    let s = stats.snapshot(Instant::now());
    assert_eq!((s.count_total, s.errors_total), (8_000, 2_000));
    assert!(within(s.window_calls, 8_000.0, 1e-6));
    assert!(within(s.error_ratio, 0.25, 1e-9));
}

#[test]
fn registry_hands_out_one_series_per_name() {
    let reg = StatsRegistry::new();
    assert!(reg.is_empty());
    let a = reg.get_or_create("orders");
    let b = reg.get_or_create("orders");
    assert!(Arc::ptr_eq(&a, &b));
    reg.get_or_create("inventory").record(ms(3), true);
    a.record(ms(1), false);
    assert_eq!(reg.len(), 2);
    assert!(reg.get("missing").is_none());
    let all = reg.snapshot_all(Instant::now());
    let names: Vec<_> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["inventory", "orders"]);
    assert_eq!(all[0].1.errors_total, 1);
    assert_eq!(all[1].1.count_total, 1);
}
