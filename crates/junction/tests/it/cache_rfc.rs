//! The cache as an RFC 9111 shared cache, through real sockets against a real
//! origin on loopback, on the memory and the Redis backends. The origin is in
//! charge of freshness: routes use `ttl: 0s` unless a test says otherwise.

use super::{client, start};
use junction_cache::cache_control::fmt_http_date;
use junction_testkit::{Reply, ScriptedOrigin};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The config: a cached `GET /items/{id}` and an uncached any-method route on the same paths.
fn config(backend: &str, url: &str, cache_extra: &str) -> String {
    format!(
        r#"
{backend}
upstreams:
  origin: {{ url: "{url}", timeout: 2s }}
routes:
  - name: item
    match: {{ method: GET, path: /items/{{id}} }}
    upstream: origin
    cache: {{ ttl: 0s {cache_extra} }}
  - name: write-item
    match: {{ path: /items/{{id}} }}
    upstream: origin
"#
    )
}

/// A Redis cache under a fresh prefix.
fn redis_backend() -> String {
    let prefix = format!("jt-rfc-{}", uuid::Uuid::new_v4());
    format!(
        "cache: {{ backend: redis, url: \"{}\", prefix: \"{prefix}\" }}",
        super::redis_url()
    )
}

/// What a client got back.
struct Got {
    status: u16,
    state: String,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = client().request(method.parse().unwrap(), url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().await.unwrap();
    let state = r
        .headers()
        .get("x-junction-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Got {
        status: r.status().as_u16(),
        state,
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn header<'a>(seen: &'a junction_testkit::Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Runs each test once on the memory backend and once on Redis.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name("").await })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::$name(&super::redis_backend()).await })*
        }
    };
}

on_both_backends!(
    vary_from_the_origin_selects_variants,
    variants_per_uri_are_bounded,
    authorization_responses_are_not_shared,
    age_is_counted_and_passed_through,
    expires_gives_freshness_and_a_bad_expires_none,
    must_revalidate_forbids_stale,
    no_cache_is_stored_and_revalidated,
    a_304_refreshes_the_stored_headers,
    unsafe_methods_invalidate_the_uri_and_its_location,
    set_cookie_reaches_its_client_and_is_never_stored,
    only_cacheable_statuses_are_stored,
    targeted_cache_control_takes_precedence,
    client_conditionals_and_head_are_answered_from_cache,
    request_cache_control_is_honoured_unless_ignored,
    a_stray_304_is_passed_on_not_looped,
    cookies_count_as_credentials_when_the_route_says_so,
    override_forces_the_route_ttl_over_the_origins_freshness,
);

async fn vary_from_the_origin_selects_variants(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| {
        let value = header(req, "foo").unwrap_or("none").to_owned();
        Reply::ok(
            format!("foo={value}"),
            &[("cache-control", "max-age=100"), ("vary", "Foo")],
        )
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/1", gw.data);
    let one = send("GET", &url, &[("foo", "1")]).await;
    assert_eq!((one.state.as_str(), one.body.as_str()), ("MISS", "foo=1"));
    assert_eq!(send("GET", &url, &[("foo", "1")]).await.state, "HIT");
    let two = send("GET", &url, &[("foo", "2")]).await;
    assert_eq!((two.state.as_str(), two.body.as_str()), ("MISS", "foo=2"));
    let none = send("GET", &url, &[]).await;
    assert_eq!(
        (none.state.as_str(), none.body.as_str()),
        ("MISS", "foo=none")
    );
    // Every variant is still there, selected by the request's value.
    let again = send("GET", &url, &[("foo", "1")]).await;
    assert_eq!(
        (again.state.as_str(), again.body.as_str()),
        ("HIT", "foo=1")
    );
    let again = send("GET", &url, &[("foo", " 2 ")]).await;
    assert_eq!(
        (again.state.as_str(), again.body.as_str()),
        ("HIT", "foo=2")
    );
    assert_eq!(origin.calls(), 3);
}

async fn variants_per_uri_are_bounded(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| {
        let value = header(req, "foo").unwrap_or("none").to_owned();
        Reply::ok(value, &[("cache-control", "max-age=100"), ("vary", "foo")])
    })
    .await;
    let gw = start(&config(backend, &origin.url(), ", max_variants: 2")).await;
    let url = format!("http://{}/items/1", gw.data);
    for v in ["1", "2", "3"] {
        assert_eq!(send("GET", &url, &[("foo", v)]).await.state, "MISS");
    }
    assert_eq!(send("GET", &url, &[("foo", "3")]).await.state, "HIT");
    assert_eq!(send("GET", &url, &[("foo", "2")]).await.state, "HIT");
    assert_eq!(
        send("GET", &url, &[("foo", "1")]).await.state,
        "MISS",
        "the oldest variant was dropped"
    );
}

async fn authorization_responses_are_not_shared(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| {
        let who = header(req, "authorization").unwrap_or("anyone").to_owned();
        let cc = if req.uri.contains("public") {
            "public, max-age=100000"
        } else {
            "max-age=100000"
        };
        Reply::ok(format!("for {who}"), &[("cache-control", cc)])
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/private", gw.data);
    let first = send("GET", &url, &[("authorization", "FOO")]).await;
    assert_eq!(
        (first.state.as_str(), first.body.as_str()),
        ("BYPASS", "for FOO")
    );
    let anon = send("GET", &url, &[]).await;
    assert_eq!(
        (anon.state.as_str(), anon.body.as_str()),
        ("MISS", "for anyone")
    );
    assert_eq!(send("GET", &url, &[]).await.state, "HIT");
    // An anonymous entry is not served to a request with credentials either.
    let bar = send("GET", &url, &[("authorization", "BAR")]).await;
    assert_eq!(
        (bar.state.as_str(), bar.body.as_str()),
        ("BYPASS", "for BAR")
    );
    assert_eq!(origin.calls(), 3);
    // `public` lets the origin share an authorised answer.
    let url = format!("http://{}/items/public", gw.data);
    assert_eq!(
        send("GET", &url, &[("authorization", "FOO")]).await.state,
        "BYPASS"
    );
    let shared = send("GET", &url, &[]).await;
    assert_eq!(
        (shared.state.as_str(), shared.body.as_str()),
        ("HIT", "for FOO")
    );
}

async fn age_is_counted_and_passed_through(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| {
        let age = if req.uri.contains("old") {
            "7200"
        } else {
            "100"
        };
        Reply::ok("x", &[("cache-control", "max-age=3600"), ("age", age)])
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/old", gw.data);
    let miss = send("GET", &url, &[]).await;
    assert_eq!(miss.state, "MISS");
    assert_eq!(
        miss.headers["age"], "7200",
        "the origin's Age passes through on a miss"
    );
    assert_eq!(
        send("GET", &url, &[]).await.state,
        "MISS",
        "stale on arrival: not served as fresh"
    );
    let url = format!("http://{}/items/young", gw.data);
    send("GET", &url, &[]).await;
    let hit = send("GET", &url, &[]).await;
    assert_eq!(hit.state, "HIT");
    let age: u64 = hit.headers["age"].to_str().unwrap().parse().unwrap();
    assert!(
        (100..=102).contains(&age),
        "HIT Age includes the origin's: {age}"
    );
}

async fn expires_gives_freshness_and_a_bad_expires_none(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| {
        let now = now_secs();
        let expires = match req.uri.as_str() {
            "/items/later" => fmt_http_date(now + 60),
            "/items/past" => fmt_http_date(now - 60),
            _ => "0".to_owned(),
        };
        Reply::ok("x", &[("date", &fmt_http_date(now)), ("expires", &expires)])
    })
    .await;
    // A route TTL: it must not apply where the origin gave (expired) freshness.
    let gw = start(&config(backend, &origin.url(), "").replace("ttl: 0s", "ttl: 60s")).await;
    let later = format!("http://{}/items/later", gw.data);
    assert_eq!(send("GET", &later, &[]).await.state, "MISS");
    assert_eq!(send("GET", &later, &[]).await.state, "HIT");
    for path in ["past", "invalid"] {
        let url = format!("http://{}/items/{path}", gw.data);
        assert_eq!(send("GET", &url, &[]).await.state, "MISS");
        assert_eq!(send("GET", &url, &[]).await.state, "MISS", "{path}");
    }
    assert_eq!(origin.calls(), 5);
}

async fn must_revalidate_forbids_stale(backend: &str) {
    let origin = ScriptedOrigin::start(|_, n| {
        if n == 1 {
            Reply::ok("good", &[("cache-control", "max-age=1, must-revalidate")])
        } else {
            Reply::status(500, "broken", &[])
        }
    })
    .await;
    let extra = ", stale_while_revalidate: 1m, stale_if_error: 1m";
    let gw = start(&config(backend, &origin.url(), extra)).await;
    let url = format!("http://{}/items/1", gw.data);
    assert_eq!(send("GET", &url, &[]).await.state, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = send("GET", &url, &[]).await;
    assert_eq!((after.status, after.state.as_str()), (500, "MISS"));
}

async fn no_cache_is_stored_and_revalidated(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| {
        let cc = ("cache-control", "no-cache");
        if header(req, "if-none-match") == Some("\"v1\"") {
            Reply::status(304, "", &[cc, ("etag", "\"v1\"")])
        } else {
            Reply::ok("body-v1", &[cc, ("etag", "\"v1\"")])
        }
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/1", gw.data);
    assert_eq!(send("GET", &url, &[]).await.state, "MISS");
    for _ in 0..2 {
        let again = send("GET", &url, &[]).await;
        assert_eq!(
            (again.status, again.state.as_str(), again.body.as_str()),
            (200, "REVALIDATED", "body-v1")
        );
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(header(&seen[0], "if-none-match"), None);
    assert_eq!(header(&seen[1], "if-none-match"), Some("\"v1\""));
}

async fn a_304_refreshes_the_stored_headers(backend: &str) {
    let origin = ScriptedOrigin::start(|req, n| {
        let version = n.to_string();
        let last_modified = fmt_http_date(1_700_000_000);
        if header(req, "if-modified-since") == Some(last_modified.as_str()) {
            Reply::status(
                304,
                "",
                &[("cache-control", "max-age=60"), ("x-version", &version)],
            )
        } else {
            Reply::ok(
                "payload",
                &[
                    ("cache-control", "max-age=1"),
                    ("last-modified", &last_modified),
                    ("x-version", &version),
                ],
            )
        }
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/1", gw.data);
    assert_eq!(send("GET", &url, &[]).await.headers["x-version"], "1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refreshed = send("GET", &url, &[]).await;
    assert_eq!(
        (refreshed.state.as_str(), refreshed.body.as_str()),
        ("REVALIDATED", "payload")
    );
    assert_eq!(refreshed.headers["x-version"], "2");
    // The 304's max-age=60 now governs the stored response.
    let hit = send("GET", &url, &[]).await;
    assert_eq!((hit.state.as_str(), hit.body.as_str()), ("HIT", "payload"));
    assert_eq!(hit.headers["x-version"], "2");
    assert_eq!(hit.headers["cache-control"], "max-age=60");
    assert_eq!(origin.calls(), 2);
}

async fn unsafe_methods_invalidate_the_uri_and_its_location(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| match req.method.as_str() {
        "GET" => Reply::ok("item", &[("cache-control", "max-age=100")]),
        "POST" if req.uri == "/items/fail" => Reply::status(500, "", &[]),
        "POST" => Reply::status(201, "", &[("location", "/items/8")]),
        _ => Reply::status(204, "", &[]),
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let item = |id: &str| format!("http://{}/items/{id}", gw.data);
    for id in ["7", "8", "9", "fail"] {
        send("GET", &item(id), &[]).await;
        assert_eq!(send("GET", &item(id), &[]).await.state, "HIT");
    }
    assert_eq!(send("POST", &item("7"), &[]).await.status, 201);
    assert_eq!(
        send("GET", &item("7"), &[]).await.state,
        "MISS",
        "the URI written"
    );
    assert_eq!(
        send("GET", &item("8"), &[]).await.state,
        "MISS",
        "its Location"
    );
    assert_eq!(send("GET", &item("9"), &[]).await.state, "HIT", "untouched");
    assert_eq!(send("DELETE", &item("9"), &[]).await.status, 204);
    assert_eq!(send("GET", &item("9"), &[]).await.state, "MISS");
    assert_eq!(send("POST", &item("fail"), &[]).await.status, 500);
    assert_eq!(
        send("GET", &item("fail"), &[]).await.state,
        "HIT",
        "a failed write changes nothing"
    );
}

async fn set_cookie_reaches_its_client_and_is_never_stored(backend: &str) {
    let origin = ScriptedOrigin::start(|_, n| {
        let cookie = format!("sid={n}");
        Reply::ok(
            "x",
            &[("cache-control", "max-age=100"), ("set-cookie", &cookie)],
        )
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/1", gw.data);
    let first = send("GET", &url, &[]).await;
    assert_eq!(first.headers["set-cookie"], "sid=1");
    let second = send("GET", &url, &[]).await;
    assert_eq!(
        second.state, "MISS",
        "a response setting a cookie is not stored"
    );
    assert_eq!(second.headers["set-cookie"], "sid=2");
}

async fn only_cacheable_statuses_are_stored(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| match req.uri.as_str() {
        "/items/created" => Reply::status(201, "made", &[]),
        "/items/accepted" => Reply::status(202, "later", &[]),
        _ => Reply::status(201, "made", &[("cache-control", "max-age=60")]),
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "").replace("ttl: 0s", "ttl: 60s")).await;
    for path in ["created", "accepted"] {
        let url = format!("http://{}/items/{path}", gw.data);
        send("GET", &url, &[]).await;
        assert_eq!(send("GET", &url, &[]).await.state, "MISS", "{path}");
    }
    let url = format!("http://{}/items/explicit", gw.data);
    send("GET", &url, &[]).await;
    let hit = send("GET", &url, &[]).await;
    assert_eq!(
        (hit.status, hit.state.as_str()),
        (201, "HIT"),
        "explicit freshness"
    );
}

async fn targeted_cache_control_takes_precedence(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| match req.uri.as_str() {
        "/items/cdn" => Reply::ok(
            "x",
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
        ),
        _ => Reply::ok(
            "x",
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=60"),
                ("junction-cache-control", "no-store"),
            ],
        ),
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let cdn = format!("http://{}/items/cdn", gw.data);
    let first = send("GET", &cdn, &[]).await;
    assert!(
        !first.headers.contains_key("cdn-cache-control"),
        "not for clients"
    );
    assert_eq!(first.headers["cache-control"], "no-store");
    assert_eq!(send("GET", &cdn, &[]).await.state, "HIT");
    let ours = format!("http://{}/items/junction", gw.data);
    let first = send("GET", &ours, &[]).await;
    assert!(!first.headers.contains_key("junction-cache-control"));
    assert_eq!(send("GET", &ours, &[]).await.state, "MISS");
}

async fn client_conditionals_and_head_are_answered_from_cache(backend: &str) {
    let modified = fmt_http_date(1_700_000_000);
    let lm = modified.clone();
    let origin = ScriptedOrigin::start(move |_, _| {
        Reply::ok(
            "body",
            &[("cache-control", "max-age=100"), ("last-modified", &lm)],
        )
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/1", gw.data);
    send("GET", &url, &[]).await;
    let later = fmt_http_date(1_700_000_100);
    let not_modified = send("GET", &url, &[("if-modified-since", &later)]).await;
    assert_eq!(
        (not_modified.status, not_modified.state.as_str()),
        (304, "HIT")
    );
    let earlier = fmt_http_date(1_600_000_000);
    assert_eq!(
        send("GET", &url, &[("if-modified-since", &earlier)])
            .await
            .status,
        200
    );
    let head = send("HEAD", &url, &[]).await;
    assert_eq!(
        (head.status, head.state.as_str(), head.body.as_str()),
        (200, "HIT", "")
    );
    assert_eq!(
        origin.calls(),
        1,
        "conditionals and HEAD never reached the origin"
    );
    assert_eq!(header(&origin.seen()[0], "if-modified-since"), None);
}

async fn request_cache_control_is_honoured_unless_ignored(backend: &str) {
    let origin = ScriptedOrigin::start(|_, n| {
        Reply::ok(format!("v{n}"), &[("cache-control", "max-age=100")])
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/1", gw.data);
    send("GET", &url, &[]).await;
    assert_eq!(send("GET", &url, &[]).await.state, "HIT");
    let forced = send("GET", &url, &[("cache-control", "no-cache")]).await;
    assert_eq!(
        (forced.state.as_str(), forced.body.as_str()),
        ("MISS", "v2")
    );
    assert_eq!(
        send("GET", &url, &[("cache-control", "max-age=0")])
            .await
            .state,
        "MISS"
    );
    let cached_only = send(
        "GET",
        &format!("http://{}/items/never", gw.data),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(cached_only.status, 504);
    assert_eq!(origin.calls(), 3);

    let ignoring = start(&config(
        backend,
        &origin.url(),
        ", ignore_request_cache_control: true",
    ))
    .await;
    let url = format!("http://{}/items/2", ignoring.data);
    send("GET", &url, &[]).await;
    let kept = send("GET", &url, &[("cache-control", "no-cache")]).await;
    assert_eq!(
        kept.state, "HIT",
        "the route protects the origin from no-cache"
    );
}

async fn a_stray_304_is_passed_on_not_looped(backend: &str) {
    // An origin that answers 304 even to unconditional requests.
    let origin = ScriptedOrigin::start(|_, _| {
        Reply::status(
            304,
            "",
            &[("etag", "\"v1\""), ("cache-control", "max-age=60")],
        )
    })
    .await;
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/1", gw.data);
    let got = tokio::time::timeout(Duration::from_secs(5), send("GET", &url, &[]))
        .await
        .expect("answered, not looping");
    assert_eq!((got.status, got.state.as_str()), (304, "MISS"));
    assert_eq!(origin.calls(), 1);
}

async fn cookies_count_as_credentials_when_the_route_says_so(backend: &str) {
    let origin = ScriptedOrigin::start(|req, _| {
        let who = header(req, "cookie").unwrap_or("anyone").to_owned();
        Reply::ok(format!("for {who}"), &[("cache-control", "max-age=100")])
    })
    .await;
    // Default: a cookie is just a header (the origin would say `Vary: Cookie` or `private`).
    let gw = start(&config(backend, &origin.url(), "")).await;
    let url = format!("http://{}/items/1", gw.data);
    send("GET", &url, &[]).await;
    assert_eq!(send("GET", &url, &[("cookie", "sid=1")]).await.state, "HIT");
    // With cookie_is_credential, a request with a cookie never gets a shared answer.
    let strict = start(&config(
        backend,
        &origin.url(),
        ", cookie_is_credential: true",
    ))
    .await;
    let url = format!("http://{}/items/2", strict.data);
    send("GET", &url, &[]).await;
    let got = send("GET", &url, &[("cookie", "sid=1")]).await;
    assert_eq!(
        (got.state.as_str(), got.body.as_str()),
        ("BYPASS", "for sid=1")
    );
}

async fn override_forces_the_route_ttl_over_the_origins_freshness(backend: &str) {
    let origin = ScriptedOrigin::start(|_, n| {
        Reply::ok(
            format!("v{n}"),
            &[("cache-control", "max-age=0, must-revalidate")],
        )
    })
    .await;
    let plain = start(&config(backend, &origin.url(), "").replace("ttl: 0s", "ttl: 60s")).await;
    let url = format!("http://{}/items/1", plain.data);
    send("GET", &url, &[]).await;
    assert_eq!(
        send("GET", &url, &[]).await.state,
        "MISS",
        "the origin's max-age=0 rules"
    );
    let forced =
        start(&config(backend, &origin.url(), ", override: true").replace("ttl: 0s", "ttl: 60s"))
            .await;
    let url = format!("http://{}/items/2", forced.data);
    send("GET", &url, &[]).await;
    assert_eq!(
        send("GET", &url, &[]).await.state,
        "HIT",
        "override: the route ttl rules"
    );
}
