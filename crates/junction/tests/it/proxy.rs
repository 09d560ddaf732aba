use super::{client, get, metric, start};
use junction_testkit::{closed_port, Behavior, FakeUpstream};
use std::time::{Duration, Instant};

fn config(url: &str, extra_upstream: &str, extra_route: &str) -> String {
    format!(
        r#"
limits: {{ max_body: 1KiB }}
upstreams:
  inv:
    url: {url}
    timeout: 300ms
{extra_upstream}
routes:
  - name: product
    match: {{ method: GET, path: /products/{{id}} }}
    upstream: inv
  - name: rewrite
    match: {{ method: GET, path: /v1/items/{{id}} }}
    upstream: inv
    path: /internal/items/{{id}}
  - name: create
    match: {{ method: POST, path: /products }}
    upstream: inv
{extra_route}
"#
    )
}

#[tokio::test]
async fn proxies_with_path_query_headers_and_trace() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), "", "")).await;
    let resp = client()
        .get(format!("http://{}/products/42?x=1", gw.data))
        .header("x-custom", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), r#"{"ok":true}"#);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/products/42?x=1");
    assert_eq!(seen[0].headers["x-custom"], "yes");
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    assert!(seen[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .starts_with("00-"));

    get(gw.data, "/v1/items/7").await;
    assert_eq!(up.seen()[1].uri, "/internal/items/7");
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_requests_total{route="product",status="200"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn no_route_is_404_problem_json() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), "", "")).await;
    let resp = get(gw.data, "/nope").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["status"], 404);
    assert!(v["detail"].as_str().unwrap().contains("/nope"));
    assert_eq!(up.calls(), 0);
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_requests_total{route="unmatched",status="404"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn metrics_carry_upstream_latency_and_the_process() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), "", "")).await;
    for _ in 0..3 {
        assert_eq!(get(gw.data, "/products/1").await.status(), 200);
    }
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_upstream_request_duration_seconds_count{upstream="inv"}"#
        )
        .await,
        3.0
    );
    let text = super::metrics_text(gw.admin).await;
    for name in [
        "# TYPE process_cpu_seconds counter",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "# TYPE junction_cache_evictions counter",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    // The gateway's own process (the test binary here, which may have run
    // other tests first): it started before now, and not long ago.
    let started = metric(gw.admin, "process_start_time_seconds").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && now - started < 3600.0,
        "started {started}, now {now}"
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_not_sent() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), "", "")).await;
    let resp = client()
        .post(format!("http://{}/products", gw.data))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    // A chunked body without a length is cut at the limit too.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let resp = client()
        .post(format!("http://{}/products", gw.data))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let small = client()
        .post(format!("http://{}/products", gw.data))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(up.seen().last().unwrap().body.as_ref(), b"{}");
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let down = closed_port().await;
    let gw = start(&config(&format!("http://{down}"), "", "")).await;
    let resp = get(gw.data, "/products/1").await;
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("unreachable"), "{v}");
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_upstream_requests_total{upstream="inv",outcome="connect_error"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn timeout_is_504_within_timeout_plus_margin() {
    let up = FakeUpstream::with(Behavior::Hang).await;
    let gw = start(&config(&up.url(), "", "")).await;
    let t0 = Instant::now();
    let resp = get(gw.data, "/products/1").await;
    let took = t0.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(800), "{took:?}");
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_upstream_requests_total{upstream="inv",outcome="timeout"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn bulkhead_refuses_past_max_concurrency() {
    let up = FakeUpstream::with(Behavior::Slow(Duration::from_millis(250))).await;
    let gw = start(&config(&up.url(), "    max_concurrency: 2", "")).await;
    let url = format!("http://{}/products/1", gw.data);
    let c = client();
    let slow: Vec<_> = (0..2).map(|_| tokio::spawn(c.get(&url).send())).collect();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(up.calls(), 2);
}

/// With `adaptive_concurrency` the bulkhead refuses past the limit it has
/// learned (here still its start, 2) at once, and learns a higher one from an
/// upstream that answers fast while kept busy.
#[tokio::test]
async fn adaptive_concurrency_sheds_past_the_learned_limit_and_learns() {
    let up = FakeUpstream::with(Behavior::Slow(Duration::from_millis(250))).await;
    let extra = "    max_concurrency: 100\n    adaptive_concurrency: { min: 2, initial: 2 }";
    let gw = start(&config(&up.url(), extra, "")).await;
    let series = r#"junction_upstream_concurrency_limit{upstream="inv"}"#;
    assert_eq!(metric(gw.admin, series).await, 2.0);
    let url = format!("http://{}/products/1", gw.data);
    let c = client();
    let slow: Vec<_> = (0..2).map(|_| tokio::spawn(c.get(&url).send())).collect();
    // Both slow calls hold their slots (bounded wait).
    let breakers = format!("http://{}/admin/breakers", gw.admin);
    let t0 = Instant::now();
    loop {
        let b: serde_json::Value = c.get(&breakers).send().await.unwrap().json().await.unwrap();
        let in_flight = b["breakers"]
            .as_array()
            .and_then(|a| a.first())
            .map(|u| u["in_flight"].clone());
        if in_flight == Some(serde_json::json!(2)) || t0.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Refused, not queued behind the two (which would end in a 200).
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(resp.text().await.unwrap().contains("upstream-overloaded"));
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().status(), 200);
    }
    // Steady 5 ms answers to 16 callers keeping the limit in use: it grows
    // (one caller at a time would not: that says nothing about more).
    up.set(Behavior::Slow(Duration::from_millis(5)));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                // 20 answers each (refusals are instant and teach nothing), bounded.
                let (mut answered, t0) = (0, Instant::now());
                while answered < 20 && t0.elapsed() < Duration::from_secs(10) {
                    let status = c.get(&url).send().await.unwrap().status();
                    assert!(status == 200 || status == 503, "{status}");
                    answered += usize::from(status == 200);
                    if status == 503 {
                        // A refusal is instant: do not spin.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let learned = metric(gw.admin, series).await;
    assert!(learned > 8.0, "learned {learned}");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let up = FakeUpstream::start().await;
    let route = "  - name: search\n    match: { method: GET, path: /search }\n    upstream: inv\n    rate_limit: { requests: 3, per: 10s }";
    let gw = start(&config(&up.url(), "", route)).await;
    let url = format!("http://{}/search", gw.data);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = client().get(&url).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    assert_eq!(up.calls(), 3);
}

#[tokio::test]
async fn http2_upstreams_get_http2_without_tls_and_others_http1() {
    let up = FakeUpstream::start().await;
    let h2 = start(&config(&up.url(), "    http2: true", "")).await;
    let h1 = start(&config(&up.url(), "", "")).await;
    for i in 0..3 {
        let resp = get(h2.data, &format!("/products/{i}?x=1")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), r#"{"ok":true}"#);
    }
    assert_eq!(get(h1.data, "/products/9").await.status(), 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 4);
    for s in &seen[..3] {
        assert_eq!(s.version, http::Version::HTTP_2);
        assert!(
            s.uri.starts_with("/products/") && s.uri.ends_with("?x=1"),
            "{}",
            s.uri
        );
    }
    assert_eq!(seen[3].version, http::Version::HTTP_11);
    // A POST body reaches an HTTP/2 upstream whole.
    let resp = client()
        .post(format!("http://{}/products", h2.data))
        .body("{\"name\":\"bolt\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.seen()[4].body.as_ref(), b"{\"name\":\"bolt\"}");
    // An HTTP/2 upstream that is down is a 502 like any other.
    let down = start(&config(
        &format!("http://{}", closed_port().await),
        "    http2: true",
        "",
    ))
    .await;
    assert_eq!(get(down.data, "/products/1").await.status(), 502);
}

#[tokio::test]
async fn the_access_line_names_trace_client_and_caller() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let gw = super::process::spawn(dir.path(), "access", &config(&up.url(), "", "")).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client()
        .get(format!("http://{}/products/1", gw.data))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("x-junction-caller", "erp")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without a traceparent, the line names the trace the upstream was sent.
    assert_eq!(get_raw(&gw.data, "/products/2").await, 200);
    let sent = up.seen()[1].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let new_trace = &sent[3..35];
    let deadline = Instant::now() + Duration::from_secs(5);
    let (first, second) = loop {
        let log = gw.stderr();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("junction::access"))
            .map(str::to_owned)
            .collect();
        if lines.len() >= 2 {
            break (lines[0].clone(), lines[1].clone());
        }
        assert!(Instant::now() < deadline, "two access lines: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(first.contains(&format!("trace_id={trace}")), "{first}");
    assert!(first.contains("client=127.0.0.1:"), "{first}");
    assert!(first.contains("caller=\"erp\""), "{first}");
    let us: u64 = first
        .split("duration_us=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("integer microseconds: {first}"));
    assert!(us > 0, "{first}");
    assert!(
        second.contains(&format!("trace_id={new_trace}")),
        "{second} vs {sent}"
    );
    assert!(second.contains("caller=\"-\""), "{second}");
}

async fn get_raw(addr: &str, path: &str) -> u16 {
    client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
