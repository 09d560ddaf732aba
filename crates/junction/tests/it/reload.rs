//! Hot reload through the real binary: `SIGHUP` and `POST /admin/reload`.

use super::client;
use super::process::{signal, spawn, Proc};
use junction_testkit::{Behavior, FakeUpstream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sync_routes(url: &str, extra_route: &str, timeout: &str) -> String {
    format!(
        r#"upstreams:
  backend: {{ url: "{url}", timeout: {timeout}, breaker: {{ min_requests: 3, reset_timeout: 60s }} }}
routes:
  - {{ name: items, match: {{ method: GET, path: /items }}, upstream: backend }}
{extra_route}"#
    )
}

async fn status(url: String) -> u16 {
    client()
        .get(url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Polls `f` every 20 ms for at most `timeout`.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    gw: &Proc,
    mut f: impl FnMut() -> F,
) {
    let t0 = Instant::now();
    while !f().await {
        assert!(
            t0.elapsed() < timeout,
            "{what} not seen in {timeout:?}\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /admin/reload` without a token.
async fn post_reload(admin: &str) -> reqwest::Response {
    client()
        .post(format!("http://{admin}/admin/reload"))
        .send()
        .await
        .unwrap()
}

async fn reload_metric(gw: &Proc, outcome: &str) -> f64 {
    super::metric(
        gw.admin.parse().unwrap(),
        &format!(r#"junction_config_reloads_total{{outcome="{outcome}"}}"#),
    )
    .await
}

#[tokio::test]
async fn sighup_adds_a_route_and_changes_a_policy_under_keep_alive_load_with_zero_errors() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let mut gw = spawn(dir.path(), "hup", &sync_routes(&up.url(), "", "5s")).await;
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        let url = format!("http://{}/items", gw.data);
        load.push(tokio::spawn(async move {
            let c = client(); // one keep-alive connection pool per task
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new_route =
        "  - { name: extra, match: { method: GET, path: /extra }, upstream: backend }\n";
    gw.rewrite_config(&sync_routes(&up.url(), new_route, "4s"));
    signal(&gw, "HUP");
    let extra = format!("http://{}/extra", gw.data);
    until("the new route", Duration::from_secs(5), &gw, || async {
        status(extra.clone()).await == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed across the reload\n{}",
        gw.stderr()
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    assert_eq!(reload_metric(&gw, "success").await, 1.0);
    let overview: serde_json::Value = client()
        .get(format!("http://{}/admin/overview", gw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(overview["config_sha256"].as_str().unwrap().len(), 64);
    assert!(gw.stderr().contains("config reloaded"), "{}", gw.stderr());
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "SIGHUP must not end the process"
    );
}

#[tokio::test]
async fn an_invalid_config_is_refused_with_its_errors_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let gw = spawn(dir.path(), "bad", &sync_routes(&up.url(), "", "5s")).await;
    gw.rewrite_config(&sync_routes(&up.url(), "", "soon"));
    signal(&gw, "HUP");
    until("the refusal", Duration::from_secs(5), &gw, || async {
        reload_metric(&gw, "failure").await >= 1.0
    })
    .await;
    assert_eq!(status(format!("http://{}/items", gw.data)).await, 200);
    let log = gw.stderr();
    assert!(
        log.contains("config reload refused") && log.contains("upstreams.backend.timeout"),
        "{log}"
    );
    // The admin endpoint answers the same errors as problem+json.
    let r = post_reload(&gw.admin).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    let first = body["errors"][0].as_str().unwrap();
    assert!(
        first.contains(&format!("{}:", gw.config.display())) && first.contains("timeout"),
        "{body}"
    );
    // A change only a restart can apply is refused, naming it.
    let moved = format!("listen: 127.0.0.1:1\n{}", sync_routes(&up.url(), "", "5s"));
    std::fs::write(&gw.config, moved).unwrap();
    let r = post_reload(&gw.admin).await;
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("listen"),
        "{body}"
    );
    assert_eq!(status(format!("http://{}/items", gw.data)).await, 200);
}

#[tokio::test]
async fn a_reload_keeps_an_open_breaker_open() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::with(Behavior::Status(500)).await;
    let gw = spawn(dir.path(), "breaker", &sync_routes(&up.url(), "", "5s")).await;
    let items = format!("http://{}/items", gw.data);
    for _ in 0..3 {
        status(items.clone()).await;
    }
    let r = client().get(&items).send().await.unwrap();
    assert_eq!(r.headers()["x-junction-breaker"], "open");
    let calls = up.calls();
    let new_route =
        "  - { name: extra, match: { method: GET, path: /extra }, upstream: backend }\n";
    gw.rewrite_config(&sync_routes(&up.url(), new_route, "5s"));
    let r = post_reload(&gw.admin).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client().get(&items).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["x-junction-breaker"],
        "open",
        "the breaker survived the reload"
    );
    assert_eq!(
        up.calls(),
        calls,
        "the open breaker still shields the upstream"
    );
}

fn async_routes(a: &str, b: &str, with_a: bool) -> String {
    let sub_a = if with_a {
        "        - { name: sub-a, upstream: a, path: /hook, retry: { backoff: 50ms, max_backoff: 100ms }, max_attempts: 1000 }\n".to_owned()
    } else {
        String::new()
    };
    format!(
        r#"upstreams:
  a: {{ url: "{a}", timeout: 1s, breaker: {{ min_requests: 1000 }} }}
  b: {{ url: "{b}", timeout: 1s }}
routes:
  - name: orders
    match: {{ method: POST, path: /orders }}
    async:
      topic: orders
      subscribers:
{sub_a}        - {{ name: sub-b, upstream: b, path: /hook }}
"#
    )
}

#[tokio::test]
async fn removing_a_subscriber_stops_its_dispatcher_and_keeps_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let a = FakeUpstream::with(Behavior::Status(500)).await;
    let b = FakeUpstream::start().await;
    let gw = spawn(dir.path(), "subs", &async_routes(&a.url(), &b.url(), true)).await;
    let r = client()
        .post(format!("http://{}/orders", gw.data))
        .body("e1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    until("sub-a retrying", Duration::from_secs(5), &gw, || async {
        a.calls() >= 2
    })
    .await;
    gw.rewrite_config(&async_routes(&a.url(), &b.url(), false));
    let r = post_reload(&gw.admin).await;
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        report["report"]["dispatchers"]["stopped"][0], "orders/sub-a",
        "{report}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = a.calls();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        a.calls(),
        calls,
        "the removed subscriber's dispatcher stopped"
    );
    // Its message is still there, pending for it.
    let status: serde_json::Value = client()
        .get(format!("http://{}/admin/messages/{id}", gw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = status.to_string();
    assert!(text.contains("sub-a"), "{text}");
    assert!(
        gw.stderr().contains("subscriber removed"),
        "{}",
        gw.stderr()
    );
}

#[tokio::test]
async fn the_reload_endpoint_needs_the_admin_token() {
    let up = FakeUpstream::start().await;
    std::env::set_var("JUNCTION_TEST_RELOAD_TOKEN", "t0ken");
    let gw = super::start(&format!(
        "admin: {{ token_env: JUNCTION_TEST_RELOAD_TOKEN }}\n{}",
        sync_routes(&up.url(), "", "5s")
    ))
    .await;
    let r = post_reload(&gw.admin.to_string()).await;
    assert_eq!(r.status(), 401);
    let r = client()
        .post(format!("http://{}/admin/reload", gw.admin))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    // In-process (config text, no file): authorised, then refused for having nothing to re-read.
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn a_reload_keeps_a_rate_limit_window_while_the_limit_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let limited = |extra: &str| {
        format!(
            "upstreams:\n  backend: {{ url: \"{}\" }}\nroutes:\n  - {{ name: items, match: {{ method: GET, path: /items }}, upstream: backend, rate_limit: {{ requests: 2, per: 60s }} }}\n{extra}",
            up.url()
        )
    };
    let gw = spawn(dir.path(), "rate", &limited("")).await;
    let items = format!("http://{}/items", gw.data);
    assert_eq!(status(items.clone()).await, 200);
    assert_eq!(status(items.clone()).await, 200);
    assert_eq!(status(items.clone()).await, 429);
    gw.rewrite_config(&limited(
        "  - { name: extra, match: { method: GET, path: /extra }, upstream: backend }\n",
    ));
    let r = post_reload(&gw.admin).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        status(items).await,
        429,
        "the spent window survived the reload"
    );
}

#[tokio::test]
async fn a_reload_changes_the_log_level_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let with_level = |level: &str| {
        format!(
            "telemetry: {{ log_level: \"{level}\" }}\n{}",
            sync_routes(&up.url(), "", "5s")
        )
    };
    // RUST_LOG empty: the config decides the filter.
    let gw = super::process::spawn_with_env(
        dir.path(),
        "loglevel",
        &with_level("warn"),
        &[("RUST_LOG", "")],
    )
    .await;
    let items = format!("http://{}/items", gw.data);
    assert_eq!(status(items.clone()).await, 200);
    assert!(
        !gw.stderr().contains("junction::access"),
        "no access line at warn: {}",
        gw.stderr()
    );
    gw.rewrite_config(&with_level("warn,junction::access=info"));
    signal(&gw, "HUP");
    until("the reload", Duration::from_secs(5), &gw, || async {
        reload_metric(&gw, "success").await >= 1.0
    })
    .await;
    assert_eq!(status(items.clone()).await, 200);
    until("an access line", Duration::from_secs(5), &gw, || async {
        gw.stderr().contains("junction::access")
    })
    .await;
    // A filter that does not parse is refused like any invalid key.
    gw.rewrite_config(&with_level("junction=loud"));
    let r = post_reload(&gw.admin).await;
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("telemetry.log_level"),
        "{body}"
    );
}
