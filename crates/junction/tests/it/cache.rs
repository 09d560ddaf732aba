use super::{client, metric, start};
use junction_testkit::{Behavior, FakeUpstream};
use std::io::Read;
use std::time::Duration;

const PRODUCT: &str = r#"{"id":7,"name":"bolt","price":{"amount":3,"currency":"EUR"},"suppliers":[{"id":1,"name":"acme","lead":4},{"id":2,"name":"globex","lead":9}],"blob":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

fn config(url: &str, cache_extra: &str, cache_backend: &str) -> String {
    format!(
        r#"
{cache_backend}
upstreams:
  inv: {{ url: "{url}", timeout: 1s, breaker: {{ min_requests: 3, reset_timeout: 30s }} }}
routes:
  - name: product
    match: {{ method: GET, path: /products/{{id}} }}
    upstream: inv
    cache: {{ ttl: 1s, tags: ["product:{{id}}"] {cache_extra} }}
  - name: update-product
    match: {{ method: PUT, path: /products/{{id}} }}
    upstream: inv
    invalidate: ["product:{{id}}"]
  - name: plain
    match: {{ method: GET, path: /plain }}
    upstream: inv
    fields: [id, name]
"#
    )
}

async fn get(url: &str) -> (u16, String, String) {
    let r = client().get(url).send().await.unwrap();
    let state = r
        .headers()
        .get("x-junction-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), state, r.text().await.unwrap())
}

#[tokio::test]
async fn hit_skips_the_upstream_and_ttl_expiry_refetches() {
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    let gw = start(&config(&up.url(), "", "")).await;
    let url = format!("http://{}/products/7", gw.data);
    assert_eq!(get(&url).await, (200, "MISS".into(), PRODUCT.into()));
    assert_eq!(get(&url).await, (200, "HIT".into(), PRODUCT.into()));
    assert_eq!(up.calls(), 1);
    // The query is part of the key; `fields` is not (projection happens after the cache).
    assert_eq!(get(&format!("{url}?v=2")).await.1, "MISS");
    assert_eq!(get(&format!("{url}?fields=id")).await.1, "HIT");
    assert_eq!(up.calls(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&url).await.1, "MISS");
    assert_eq!(up.calls(), 3);
    assert_eq!(
        metric(gw.admin, r#"junction_cache_hits_total{route="product"}"#).await,
        2.0
    );
    assert_eq!(
        metric(gw.admin, r#"junction_cache_misses_total{route="product"}"#).await,
        3.0
    );
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_call() {
    let up = FakeUpstream::with(Behavior::Slow(Duration::from_millis(300))).await;
    let gw = start(&config(&up.url(), "", "")).await;
    let url = format!("http://{}/products/1", gw.data);
    let c = client();
    let tasks: Vec<_> = (0..100).map(|_| tokio::spawn(c.get(&url).send())).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn write_route_invalidates_its_tag_and_admin_can_too() {
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    let gw = start(&config(&up.url(), "", "")).await;
    let url = format!("http://{}/products/7", gw.data);
    get(&url).await;
    get(&format!("http://{}/products/8", gw.data)).await;
    assert_eq!(get(&url).await.1, "HIT");
    let put = client().put(&url).body("{}").send().await.unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(get(&url).await.1, "MISS", "PUT dropped product:7");
    assert_eq!(
        get(&format!("http://{}/products/8", gw.data)).await.1,
        "HIT",
        "product:8 untouched"
    );
    let del = client()
        .delete(format!("http://{}/admin/cache?tag=product:8", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(
        get(&format!("http://{}/products/8", gw.data)).await.1,
        "MISS"
    );
}

#[tokio::test]
async fn no_store_and_errors_are_not_cached() {
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    up.add_response_header("cache-control", "no-store");
    let gw = start(&config(&up.url(), "", "")).await;
    let url = format!("http://{}/products/7", gw.data);
    get(&url).await;
    assert_eq!(get(&url).await.1, "MISS");
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn stale_if_error_serves_old_data_when_the_upstream_fails_or_its_breaker_is_open() {
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    let gw = start(&config(&up.url(), ", stale_if_error: 1m", "")).await;
    let url = format!("http://{}/products/7", gw.data);
    assert_eq!(get(&url).await.1, "MISS");
    up.set(Behavior::Status(500));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..5 {
        let (status, state, body) = get(&url).await;
        assert_eq!(
            (status, state.as_str(), body.as_str()),
            (200, "STALE", PRODUCT)
        );
    }
    // After 3 failures the breaker is open: stale is still served, and nothing reaches the upstream.
    let calls = up.calls();
    assert_eq!(get(&url).await.1, "STALE");
    assert_eq!(up.calls(), calls);
    // A key never seen before has nothing stale: 503 with the breaker header.
    let r = super::get(gw.data, "/products/99").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-junction-breaker"], "open");
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes() {
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    let gw = start(&config(&up.url(), ", stale_while_revalidate: 1m", "")).await;
    let url = format!("http://{}/products/7", gw.data);
    get(&url).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&url).await.1, "STALE");
    super::pipeline::eventually("background refresh", Duration::from_secs(3), || {
        up.calls() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get(&url).await.1, "HIT");
}

#[tokio::test]
async fn projection_of_nested_objects_and_arrays() {
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    let gw = start(&config(&up.url(), "", "")).await;
    let (status, _, body) = get(&format!(
        "http://{}/products/7?fields=id,price.currency,suppliers.name",
        gw.data
    ))
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id":7,"price":{"currency":"EUR"},"suppliers":[{"name":"acme"},{"name":"globex"}]})
    );
    // The upstream never sees `fields`.
    assert_eq!(up.seen()[0].uri, "/products/7");
    // A route's default projection applies to uncached routes too.
    let (_, _, body) = get(&format!("http://{}/plain", gw.data)).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"id":7,"name":"bolt"})
    );
    // Bad syntax is a 400 naming the problem.
    let r = super::get(gw.data, "/products/7?fields=a,,b").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("a,,b"), "{v}");
    let saved_in = metric(
        gw.admin,
        r#"junction_upstream_received_bytes_total{route="plain"}"#,
    )
    .await;
    let saved_out = metric(
        gw.admin,
        r#"junction_client_sent_bytes_total{route="plain"}"#,
    )
    .await;
    assert!(saved_out < saved_in, "{saved_out} < {saved_in}");
    // The names before the units-last rename stay one release, same values.
    let old_in = metric(
        gw.admin,
        r#"junction_upstream_bytes_in_total{route="plain"}"#,
    )
    .await;
    let old_out = metric(
        gw.admin,
        r#"junction_client_bytes_out_total{route="plain"}"#,
    )
    .await;
    assert_eq!((old_in, old_out), (saved_in, saved_out));
}

#[tokio::test]
async fn etag_and_if_none_match_give_304() {
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    let gw = start(&config(&up.url(), "", "")).await;
    let url = format!("http://{}/products/7", gw.data);
    let r = client().get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = client()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn compression_is_negotiated_and_decodable() {
    let big = format!(
        r#"{{"items":[{}]}}"#,
        (0..200)
            .map(|i| format!(r#"{{"id":{i},"name":"item"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let up = FakeUpstream::with(Behavior::Ok(big.clone())).await;
    let gw = start(&config(&up.url(), "", "")).await;
    let url = format!("http://{}/products/1", gw.data);
    let r = client()
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let compressed = r.bytes().await.unwrap();
    assert!(
        compressed.len() < big.len() / 3,
        "{} vs {}",
        compressed.len(),
        big.len()
    );
    let mut out = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, big);
    let r = client().get(&url).send().await.unwrap();
    assert!(
        r.headers().get("content-encoding").is_none(),
        "no Accept-Encoding, no compression"
    );
}

#[tokio::test]
async fn two_instances_on_one_redis_share_entries_and_invalidations() {
    let redis = super::redis_url();
    let prefix = format!("jt-{}", uuid::Uuid::new_v4());
    let backend = format!("cache: {{ backend: redis, url: \"{redis}\", prefix: \"{prefix}\" }}");
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    let cfg = config(&up.url(), "", &backend).replace("ttl: 1s", "ttl: 60s");
    let (one, two) = (start(&cfg).await, start(&cfg).await);
    assert_eq!(
        get(&format!("http://{}/products/7", one.data)).await.1,
        "MISS"
    );
    assert_eq!(
        get(&format!("http://{}/products/7", two.data)).await.1,
        "HIT",
        "instance two sees instance one's entry"
    );
    assert_eq!(up.calls(), 1);
    client()
        .put(format!("http://{}/products/7", two.data))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get(&format!("http://{}/products/7", one.data)).await.1,
        "MISS",
        "instance one sees instance two's invalidation"
    );
}

#[tokio::test]
async fn a_redis_outage_degrades_to_pass_through() {
    let down = junction_testkit::closed_port().await;
    let backend = format!("cache: {{ backend: redis, url: \"redis://{down}\", prefix: x }}");
    let up = FakeUpstream::with(Behavior::Ok(PRODUCT.into())).await;
    let gw = start(&config(&up.url(), "", &backend)).await;
    for _ in 0..3 {
        let (status, state, body) = get(&format!("http://{}/products/7", gw.data)).await;
        assert_eq!(
            (status, state.as_str(), body.as_str()),
            (200, "MISS", PRODUCT)
        );
    }
    assert_eq!(up.calls(), 3);
    assert!(metric(gw.admin, "junction_cache_degraded_total").await >= 3.0);
}
