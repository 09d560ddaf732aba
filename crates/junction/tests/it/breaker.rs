use super::{client, get, metric, start};
use junction_testkit::{Behavior, FakeUpstream};
use std::time::{Duration, Instant};

fn config(url: &str) -> String {
    format!(
        r#"
upstreams:
  vendor:
    url: {url}
    timeout: 1s
    breaker: {{ error_threshold_percentage: 50, min_requests: 5, window: 10s, reset_timeout: 500ms }}
routes:
  - {{ name: vendor, match: {{ method: GET, path: /v }}, upstream: vendor }}
"#
    )
}

#[tokio::test]
async fn opens_after_threshold_then_half_open_probe_closes_it() {
    let up = FakeUpstream::with(Behavior::Status(500)).await;
    let gw = start(&config(&up.url())).await;
    let url = format!("http://{}/v", gw.data);
    for _ in 0..5 {
        assert_eq!(client().get(&url).send().await.unwrap().status(), 500);
    }
    assert_eq!(up.calls(), 5);
    // Open: refused at once, upstream sees nothing.
    for _ in 0..20 {
        let t0 = Instant::now();
        let r = client().get(&url).send().await.unwrap();
        assert!(t0.elapsed() < Duration::from_millis(250));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["x-junction-breaker"], "open");
    }
    assert_eq!(up.calls(), 5, "no call reaches the upstream while open");
    assert_eq!(
        metric(gw.admin, r#"junction_breaker_state{upstream="vendor"}"#).await,
        1.0
    );
    let admin: serde_json::Value = get(gw.admin, "/admin/breakers").await.json().await.unwrap();
    assert_eq!(admin["breakers"][0]["state"], "open");
    assert!(admin["breakers"][0]["next_probe_in_ms"].as_u64().unwrap() <= 500);

    // After the reset timeout one probe goes through; success closes the breaker.
    up.set(Behavior::Ok("{}".into()));
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    assert_eq!(up.calls(), 6);
    assert_eq!(
        metric(gw.admin, r#"junction_breaker_state{upstream="vendor"}"#).await,
        0.0
    );
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn failed_probe_reopens() {
    let up = FakeUpstream::with(Behavior::Status(502)).await;
    let gw = start(&config(&up.url())).await;
    let url = format!("http://{}/v", gw.data);
    for _ in 0..5 {
        client().get(&url).send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(
        client().get(&url).send().await.unwrap().status(),
        502,
        "the probe reaches the upstream"
    );
    assert_eq!(up.calls(), 6);
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-junction-breaker"], "open");
    assert_eq!(up.calls(), 6);
}
