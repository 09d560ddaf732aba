use super::*;

fn get(at_ms: u64, key: u32, body: u64) -> Sample {
    Sample {
        at_ms: Some(at_ms),
        route: Some("items".into()),
        template: Some("/items/{id}".into()),
        upstream: Some("catalog".into()),
        method: "GET".into(),
        path: format!("/items/{key}"),
        caller: Some("shop".into()),
        status: Some(200),
        latency_us: 20_000,
        response_bytes: Some(100),
        response_hash: Some(body),
        ..Default::default()
    }
}

#[test]
fn memory_stays_bounded_with_100_000_distinct_keys() {
    let mut rec = Recorder::new(Settings {
        max_keys: 10_000,
        ..Default::default()
    });
    for i in 0..100_000u32 {
        rec.record(&get(1_000_000 + u64::from(i), i, 1));
    }
    assert!(rec.tracked_keys() <= 10_000, "{}", rec.tracked_keys());
    assert!(rec.untracked_keys() > 0);
    // The tables, histograms and traces together stay within a few MiB.
    assert!(rec.approx_bytes() < 8 << 20, "{} bytes", rec.approx_bytes());
    assert_eq!(rec.endpoints()[0].totals().requests, 100_000);
    // Once keys expire, new ones are tracked again.
    let later = 1_000_000 + 100_000 + 301_000;
    rec.record(&get(later, 1_000_001, 1));
    rec.record(&get(later + 1, 1_000_001, 1));
    assert_eq!(rec.endpoints()[0].totals().repeats, 1);
    assert!(rec.tracked_keys() <= 10);
}

#[test]
fn repeats_compare_with_the_keys_previous_body() {
    let mut rec = Recorder::new(Settings::default());
    let t = 10_000_000;
    rec.record(&get(t, 1, 7)); // first: nothing to compare with
    rec.record(&get(t + 1_000, 1, 7)); // repeat
    rec.record(&get(t + 2_000, 1, 8)); // changed: a lifetime of 2 s
    rec.record(&get(t + 200_000, 1, 8)); // same body, but past the 60 s repeat window
    let a = rec.endpoints()[0].totals();
    assert_eq!((a.cache_requests, a.repeats), (4, 1));
    assert_eq!(a.lifetimes.count(), 1);
    let l = a.lifetimes.quantile(0.5) as f64;
    assert!((l - 2_000.0).abs() < 2_000.0 / 8.0, "{l}");
    // The 5 s cache: hit at +1 s (fresh), hit at +2 s but stale (the body changed).
    let five = a.ttl[TTLS_S.iter().position(|s| *s == 5).expect("5 s")];
    assert_eq!((five.hits, five.stale), (2, 1));
    // The 300 s cache also serves the +200 s request (stale too: stored at the start).
    let long = a.ttl[TTLS_S.len() - 1];
    assert_eq!((long.hits, long.stale), (3, 2));
}

#[test]
fn duplicates_need_the_same_caller_path_and_body_within_the_window() {
    let mut rec = Recorder::new(Settings::default());
    let post = |at: u64, caller: &str, body: u64| Sample {
        at_ms: Some(at),
        method: "POST".into(),
        path: "/charges".into(),
        caller: Some(caller.into()),
        status: Some(201),
        request_hash: Some(body),
        ..Default::default()
    };
    let t = 5_000_000;
    rec.record(&post(t, "a", 1));
    rec.record(&post(t + 100, "a", 1)); // duplicate
    rec.record(&post(t + 200, "b", 1)); // another caller
    rec.record(&post(t + 300, "a", 2)); // another body
    rec.record(&post(t + 10_000, "a", 1)); // too late
    let mut no_body = post(t + 10_001, "a", 1);
    no_body.request_hash = None; // cannot tell: not checked
    rec.record(&no_body);
    let a = rec.endpoints()[0].totals();
    assert_eq!((a.dup_checked, a.dups), (5, 1));
}

#[test]
fn upstream_error_spells_are_bucketed() {
    let mut rec = Recorder::new(Settings::default());
    for i in 0..40u64 {
        let mut s = get(20_000_000 + i * 500, i as u32, 1);
        s.status = Some(if i >= 20 { 503 } else { 200 });
        rec.record(&s);
    }
    let u = rec.upstreams().next().expect("one upstream");
    assert_eq!(u.totals().errors, 20);
    let buckets: Vec<_> = u.buckets().collect();
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets[1], (20_010_000, 20, 20));
}
