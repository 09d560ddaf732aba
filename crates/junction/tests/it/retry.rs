use super::{client, get, metric, start};
use junction_testkit::{Behavior, FakeUpstream};
use std::time::Duration;

fn config(url: &str, retry: &str) -> String {
    format!(
        r#"
upstreams:
  inv:
    url: {url}
    timeout: 1s
    retry: {retry}
    breaker: {{ min_requests: 1000 }}
routes:
  - {{ name: get, match: {{ method: GET, path: /p }}, upstream: inv }}
  - {{ name: post, match: {{ method: POST, path: /p }}, upstream: inv }}
  - {{ name: post-opt-in, match: {{ method: POST, path: /q }}, upstream: inv, retry_non_idempotent: true }}
"#
    )
}

#[tokio::test]
async fn retries_idempotent_requests_with_growing_gaps() {
    let up = FakeUpstream::with(Behavior::FailTimes {
        status: 503,
        times: 3,
        retry_after: None,
    })
    .await;
    let gw = start(&config(
        &up.url(),
        "{ attempts: 4, backoff: 40ms, max_backoff: 1s, budget_min_per_sec: 100 }",
    ))
    .await;
    let resp = get(gw.data, "/p").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.calls(), 4);
    let at: Vec<_> = up.seen().iter().map(|s| s.at).collect();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Full jitter: each gap is at most its ceiling (40, 80, 160 ms) plus scheduling slack
    // (generous: CI shares two cores with the build).
    for (gap, ceiling) in gaps.iter().zip([40u64, 80, 160]) {
        assert!(*gap <= Duration::from_millis(ceiling + 100), "{gaps:?}");
    }
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_upstream_retries_total{upstream="inv"}"#
        )
        .await,
        3.0
    );
}

#[tokio::test]
async fn post_is_not_retried_unless_the_route_opts_in() {
    let up = FakeUpstream::with(Behavior::FailTimes {
        status: 503,
        times: 1,
        retry_after: None,
    })
    .await;
    let gw = start(&config(&up.url(), "{ attempts: 3, backoff: 10ms }")).await;
    let resp = client()
        .post(format!("http://{}/p", gw.data))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(up.calls(), 1);

    up.set(Behavior::FailTimes {
        status: 503,
        times: 1,
        retry_after: None,
    });
    let resp = client()
        .post(format!("http://{}/q", gw.data))
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.calls(), 3);
    let seen = up.seen();
    assert_eq!(seen[1].body, seen[2].body, "the replayed body is identical");
}

#[tokio::test]
async fn retries_stop_at_the_budget() {
    let up = FakeUpstream::with(Behavior::Status(503)).await;
    // 10% of requests and no floor: 20 requests earn 2 retries.
    let gw = start(&config(
        &up.url(),
        "{ attempts: 3, backoff: 1ms, budget_percent: 10, budget_min_per_sec: 0 }",
    ))
    .await;
    for _ in 0..20 {
        let r = get(gw.data, "/p").await;
        assert_eq!(r.status(), 503);
    }
    let retries = metric(
        gw.admin,
        r#"junction_upstream_retries_total{upstream="inv"}"#,
    )
    .await;
    assert!(retries <= 2.0, "retries {retries}");
    assert!(up.calls() <= 22, "calls {}", up.calls());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let up = FakeUpstream::with(Behavior::FailTimes {
        status: 503,
        times: 1,
        retry_after: Some(1),
    })
    .await;
    let gw = start(&config(
        &up.url(),
        "{ attempts: 2, backoff: 1ms, max_backoff: 3s }",
    ))
    .await;
    let resp = get(gw.data, "/p").await;
    assert_eq!(resp.status(), 200);
    let seen = up.seen();
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(990),
        "{:?}",
        seen[1].at - seen[0].at
    );
}
