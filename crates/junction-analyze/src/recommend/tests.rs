use super::*;
use crate::recorder::Settings;
use crate::sample::Sample;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        // xorshift64*: deterministic traffic.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sample(at_ms: u64, method: &str, path: &str, status: u16, latency_ms: u64) -> Sample {
    Sample {
        at_ms: Some(at_ms),
        upstream: Some("svc".into()),
        method: method.into(),
        path: path.into(),
        caller: Some("erp".into()),
        status: Some(status),
        latency_us: latency_ms * 1000,
        response_bytes: Some(300),
        response_hash: Some(1),
        request_hash: (method != "GET").then_some(7),
        json: Some(true),
        ..Default::default()
    }
}

fn find<'a>(r: &'a Report, kind: Kind, target: &str) -> Option<&'a Recommendation> {
    r.recommendations
        .iter()
        .find(|x| x.kind == kind && x.target == target)
}

#[test]
fn a_read_repeating_its_body_90_percent_of_the_time_is_a_cache_candidate() {
    let mut rec = Recorder::new(Settings::default());
    let mut rng = Rng(42);
    let mut version = [0u64; 10];
    let t0 = 1_000_000_000;
    for i in 0..2_000u64 {
        let key = (i % 10) as usize;
        if rng.next() < 0.1 {
            version[key] += 1;
        }
        let mut s = sample(t0 + i * 25, "GET", &format!("/items/{key}"), 200, 40);
        s.response_hash = Some(key as u64 * 1000 + version[key]);
        rec.record(&s);
        // Unique keys: never repeat, never a candidate.
        let mut u = sample(t0 + i * 25, "GET", &format!("/search/q{i}"), 200, 40);
        u.response_hash = Some(i);
        rec.record(&u);
    }
    let r = report(&rec, &Known::default(), "test");
    let c = find(&r, Kind::Cache, "GET /items/{id}").expect("cache candidate");
    let hit = c.figures["hit_ratio"];
    assert!((hit - 0.9).abs() < 0.03, "hit ratio {hit}");
    assert!(c.yaml.contains("cache: { ttl: "), "{}", c.yaml);
    // 50 s of traffic: no lifetime longer than what was watched.
    assert!(c.figures["suggested_ttl_s"] <= 50.0, "{:?}", c.figures);
    assert!(c.evidence.contains("the same body"), "{}", c.evidence);
    assert!(find(&r, Kind::Cache, "GET /search/{id}").is_none());
    // Already cached: not recommended again.
    let known = Known {
        cached_routes: ["get-items-id".to_owned()].into(),
        ..Default::default()
    };
    assert!(find(&report(&rec, &known, "t"), Kind::Cache, "GET /items/{id}").is_none());
}

#[test]
fn a_slow_acknowledged_write_is_an_async_candidate_and_a_fast_or_data_write_is_not() {
    let mut rec = Recorder::new(Settings::default());
    let mut rng = Rng(7);
    let t0 = 2_000_000_000;
    for i in 0..200u64 {
        let slow = 500 + (rng.next() * 600.0) as u64; // p50 ~800 ms
        let mut s = sample(t0 + i * 100, "POST", "/events", 202, slow);
        s.request_hash = Some(i);
        rec.record(&s);
        // Slow but answers with data: the caller uses it.
        let mut d = sample(t0 + i * 100, "POST", "/quotes", 200, slow);
        d.request_hash = Some(i);
        d.response_bytes = Some(2_000);
        rec.record(&d);
        // Acknowledged but fast.
        let mut f = sample(t0 + i * 100, "POST", "/pings", 204, 3);
        f.request_hash = Some(i);
        rec.record(&f);
    }
    let r = report(&rec, &Known::default(), "test");
    let a = find(&r, Kind::Async, "POST /events").expect("async candidate");
    let p50 = a.figures["p50_ms"];
    assert!((p50 - 800.0).abs() < 100.0, "p50 {p50}");
    assert_eq!(a.figures["ack_ratio"], 1.0);
    assert!(a.yaml.contains("async:") && a.yaml.contains("topic: post-events"));
    assert!(find(&r, Kind::Async, "POST /quotes").is_none());
    assert!(find(&r, Kind::Async, "POST /pings").is_none());
    // Distinct bodies: no duplicates.
    assert!(r.recommendations.iter().all(|x| x.kind != Kind::Duplicates));
}

#[test]
fn repeated_writes_from_one_caller_want_idempotency_keys() {
    let mut rec = Recorder::new(Settings::default());
    let t0 = 3_000_000_000;
    for i in 0..100u64 {
        let mut s = sample(t0 + i * 1_000, "POST", "/charges", 201, 80);
        s.request_hash = Some(i / 2); // every request sent twice
        rec.record(&s);
    }
    let r = report(&rec, &Known::default(), "test");
    let d = find(&r, Kind::Duplicates, "POST /charges").expect("duplicates");
    assert_eq!(d.figures["duplicates"], 50.0);
    assert!(d.yaml.contains("idempotency: { ttl: 24h }"));
}

#[test]
fn large_payloads_with_asked_fields_are_trimmed() {
    let mut rec = Recorder::new(Settings::default());
    let t0 = 4_000_000_000;
    for i in 0..50u64 {
        let mut s = sample(t0 + i * 1_000, "GET", &format!("/suppliers/s{i}"), 200, 30);
        s.response_bytes = Some(24_576);
        s.response_hash = Some(i);
        s.query = Some("fields=id,name".into());
        s.response_fields = Some(vec![
            ("id".into(), 6),
            ("name".into(), 20),
            ("padding".into(), 24_500),
        ]);
        rec.record(&s);
    }
    let r = report(&rec, &Known::default(), "test");
    let t = find(&r, Kind::Trim, "GET /suppliers/{id}").expect("trim");
    assert!(t.yaml.contains("fields: [id, name]"), "{}", t.yaml);
    assert!(t.figures["bytes_saved"] > 50.0 * 24_000.0);
}

#[test]
fn failing_upstreams_get_breakers_and_timeouts() {
    let mut rec = Recorder::new(Settings::default());
    let t0 = 5_000_000_000;
    for i in 0..600u64 {
        // 2 % sparse errors, and an outage from 20 s to 40 s.
        let down = (200..400).contains(&i);
        let status = if down || i % 50 == 0 { 503 } else { 200 };
        let mut s = sample(t0 + i * 100, "POST", "/orders", status, 100 + i % 7);
        s.upstream = Some("fulfillment".into());
        s.request_hash = Some(i);
        rec.record(&s);
    }
    for i in 0..600u64 {
        let mut s = sample(t0 + i * 100, "GET", &format!("/fast/{i}"), 200, 10);
        s.upstream = Some("healthy".into());
        rec.record(&s);
    }
    let r = report(&rec, &Known::default(), "test");
    let b = find(&r, Kind::Breaker, "upstream fulfillment").expect("breaker");
    assert!(b.figures["spells"] >= 2.0);
    assert!(b.yaml.contains("breaker: { error_threshold_percentage: "));
    assert!(b.yaml.contains("retry:"));
    assert!(find(&r, Kind::Breaker, "upstream healthy").is_none());
    // No timeout known (a log): one is suggested for each.
    let t = find(&r, Kind::Timeout, "upstream healthy").expect("timeout");
    assert_eq!(t.figures["suggested_timeout_ms"], 1_000.0);
    // A configured timeout close to the suggestion is left alone; a loose one is lowered.
    let known = Known {
        upstream_timeouts: [
            ("healthy".to_owned(), std::time::Duration::from_millis(100)),
            ("fulfillment".to_owned(), std::time::Duration::from_secs(30)),
        ]
        .into(),
        ..Default::default()
    };
    let r = report(&rec, &known, "test");
    assert!(find(&r, Kind::Timeout, "upstream healthy").is_none());
    let t = find(&r, Kind::Timeout, "upstream fulfillment").expect("lower it");
    assert!(t.title.contains("from 30s to 1s"), "{}", t.title);
}

#[test]
fn a_sequential_chain_is_broken_by_the_hops_recommendations() {
    let mut rec = Recorder::new(Settings::default());
    let t0 = 6_000_000_000;
    for i in 0..40u64 {
        let trace = Some(format!("trace-{i}"));
        let start = t0 + i * 5_000;
        let mut a = sample(start, "GET", &format!("/suppliers/s{}", i % 4), 200, 1_600);
        a.trace = trace.clone();
        let mut b = sample(start + 1_600, "POST", "/orders", 201, 1_100);
        b.trace = trace.clone();
        b.request_hash = Some(i);
        let mut c = sample(start + 2_700, "POST", "/events", 202, 600);
        c.trace = trace;
        c.request_hash = Some(i);
        for s in [a, b, c] {
            rec.record(&s);
        }
    }
    let r = report(&rec, &Known::default(), "test");
    let c = r
        .recommendations
        .iter()
        .find(|x| x.kind == Kind::Chain)
        .expect("chain");
    assert_eq!(c.figures["hops"], 3.0);
    assert!(c.figures["after_ms"] < 1_000.0, "{:?}", c.figures);
    assert!(c.title.contains("POST /orders async"), "{}", c.title);
    assert!(c.yaml.starts_with("routes:\n") && c.yaml.matches("routes:").count() == 1);
}

#[test]
fn what_the_source_lacked_is_said() {
    let mut rec = Recorder::new(Settings {
        window: None,
        ..Default::default()
    });
    for i in 0..30u64 {
        rec.record(&Sample {
            method: "GET".into(),
            path: format!("/orders/{i}"),
            latency_us: 5_000,
            ..Default::default()
        });
    }
    let r = report(&rec, &Known::default(), "node-timing");
    let all = r.limitations.join("\n");
    for needle in [
        "no timestamps",
        "no status codes",
        "no caller",
        "no trace ids",
        "no response sizes",
    ] {
        assert!(all.contains(needle), "{needle} in {all}");
    }
    // Only a timeout suggestion is possible, and only with an upstream: none here.
    assert!(r.recommendations.is_empty(), "{:?}", r.recommendations);
    assert_eq!(r.endpoints[0].path, "/orders/{id}");
    let text = crate::table::render(&r);
    assert!(text.contains("No recommendations") && text.contains("Not assessed"));
}
