//! RedisStore against a real Redis: sharing between instances, tags, expiry,
//! pub/sub invalidations, and fast failure when Redis is down or silent.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use junction_cache::entry::now_ms;
use junction_cache::{
    CacheError, CacheStore, CachedResponse, Invalidation, RedisOptions, RedisStore, Variants,
};
use redis::AsyncCommands;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn unique_prefix() -> String {
    format!("jc-test-{}", uuid::Uuid::new_v4())
}

async fn store(prefix: &str) -> RedisStore {
    let store = RedisStore::connect(&redis_url(), prefix)
        .await
        .expect("valid url");
    store
        .ping()
        .await
        .expect("redis must be running for these tests");
    store
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis must be running for these tests")
}

fn entry(body: &'static [u8], retention_ms: u64) -> Variants {
    Variants::one(CachedResponse {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: Bytes::from_static(body),
        stored_at_ms: now_ms(),
        fresh_for: Duration::from_millis(retention_ms / 2),
        stale_while_revalidate: Duration::from_millis(retention_ms / 2),
        stale_if_error: Duration::from_millis(retention_ms / 4),
        etag: "\"v1\"".into(),
        ..CachedResponse::default()
    })
}

fn tags(names: &[&str]) -> Vec<String> {
    names.iter().map(|t| (*t).to_owned()).collect()
}

#[tokio::test]
async fn two_instances_share_entries_and_key_invalidations() {
    let prefix = unique_prefix();
    let (a, b) = (store(&prefix).await, store(&prefix).await);
    let e = entry(b"{\"id\":1}", 60_000);
    a.put("GET /products/1", e.clone(), &[]).await.expect("put");
    assert_eq!(
        b.get("GET /products/1").await.expect("get").as_deref(),
        Some(&e)
    );
    assert_eq!(b.get("GET /products/2").await.expect("get"), None);

    let other = store(&unique_prefix()).await;
    assert_eq!(
        other.get("GET /products/1").await.expect("get"),
        None,
        "prefixes isolate"
    );

    assert!(b
        .invalidate_key("GET /products/1")
        .await
        .expect("invalidate"));
    assert!(!b
        .invalidate_key("GET /products/1")
        .await
        .expect("invalidate"));
    assert_eq!(a.get("GET /products/1").await.expect("get"), None);
    assert_eq!(a.stats().degraded_total, 0);
    assert_eq!(a.backend(), "redis");
}

#[tokio::test]
async fn tag_invalidation_is_shared_and_removes_the_set() {
    let prefix = unique_prefix();
    let (a, b) = (store(&prefix).await, store(&prefix).await);
    a.put("k1", entry(b"1", 60_000), &tags(&["t1", "t2"]))
        .await
        .expect("put");
    a.put("k2", entry(b"2", 60_000), &tags(&["t1"]))
        .await
        .expect("put");
    a.put("k3", entry(b"3", 60_000), &tags(&["t3"]))
        .await
        .expect("put");

    assert_eq!(b.invalidate_tag("t1").await.expect("invalidate"), 2);
    assert!(a.get("k1").await.expect("get").is_none());
    assert!(a.get("k2").await.expect("get").is_none());
    assert!(a.get("k3").await.expect("get").is_some());
    assert_eq!(b.invalidate_tag("t1").await.expect("invalidate"), 0);

    let mut conn = raw().await;
    let exists: bool = conn.exists(format!("{prefix}:t:t1")).await.expect("exists");
    assert!(!exists, "the tag set is deleted with its entries");
}

#[tokio::test]
async fn entries_expire_and_tag_sets_outlive_them() {
    let prefix = unique_prefix();
    let a = store(&prefix).await;
    a.put("long", entry(b"l", 60_000), &tags(&["t"]))
        .await
        .expect("put");
    a.put("short", entry(b"s", 300), &tags(&["t"]))
        .await
        .expect("put");

    let mut conn = raw().await;
    let entry_ttl: i64 = conn.pttl(format!("{prefix}:e:long")).await.expect("pttl");
    let short_ttl: i64 = conn.pttl(format!("{prefix}:e:short")).await.expect("pttl");
    let set_ttl: i64 = conn.pttl(format!("{prefix}:t:t")).await.expect("pttl");
    assert!(entry_ttl > 50_000 && entry_ttl <= 60_000, "{entry_ttl}");
    assert!(short_ttl > 0 && short_ttl <= 300, "{short_ttl}");
    assert!(
        set_ttl >= entry_ttl,
        "set {set_ttl} must outlive entry {entry_ttl}"
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(a.get("short").await.expect("get").is_none());
    assert!(a.get("long").await.expect("get").is_some());

    let mut past = (**entry(b"p", 1_000).iter().next().expect("one")).clone();
    past.stored_at_ms -= 10_000;
    a.put("past", Variants::one(past), &[]).await.expect("put");
    assert!(
        a.get("past").await.expect("get").is_none(),
        "past retention is not stored"
    );
}

#[tokio::test]
async fn unreadable_entries_are_misses() {
    let prefix = unique_prefix();
    let a = store(&prefix).await;
    let mut conn = raw().await;
    let _: () = conn
        .set_ex(format!("{prefix}:e:bad"), b"garbage".as_slice(), 60)
        .await
        .expect("set");
    assert_eq!(a.get("bad").await.expect("get"), None);
}

#[tokio::test]
async fn invalidations_are_published_to_subscribers() {
    let prefix = unique_prefix();
    let (a, b) = (store(&prefix).await, store(&prefix).await);
    let mut events = a.subscribe_invalidations().await.expect("subscribe");
    b.put("k", entry(b"x", 60_000), &tags(&["product:1"]))
        .await
        .expect("put");
    b.invalidate_tag("product:1").await.expect("invalidate");
    b.invalidate_key("GET /a:b").await.expect("invalidate");

    for expected in [
        Invalidation::Tag("product:1".into()),
        Invalidation::Key("GET /a:b".into()),
    ] {
        let got = tokio::time::timeout(Duration::from_secs(2), events.next())
            .await
            .expect("announcement within 2s")
            .expect("stream open");
        assert_eq!(got, expected);
    }
}

/// Every operation must fail as Unavailable, promptly.
async fn assert_fails_fast(store: &RedisStore, timeout: Duration) {
    let limit = timeout + Duration::from_millis(400);
    let started = Instant::now();
    let get = store.get("k").await;
    let put = store.put("k", entry(b"x", 60_000), &tags(&["t"])).await;
    let tag = store.invalidate_tag("t").await;
    let key = store.invalidate_key("k").await;
    let elapsed = started.elapsed();
    assert!(
        matches!(get, Err(CacheError::Unavailable { .. })),
        "{get:?}"
    );
    assert!(
        matches!(put, Err(CacheError::Unavailable { .. })),
        "{put:?}"
    );
    assert!(
        matches!(tag, Err(CacheError::Unavailable { .. })),
        "{tag:?}"
    );
    assert!(
        matches!(key, Err(CacheError::Unavailable { .. })),
        "{key:?}"
    );
    assert!(elapsed < limit * 4, "four calls took {elapsed:?}");
    assert!(store.stats().degraded_total >= 4, "{:?}", store.stats());
    let sub = store.subscribe_invalidations().await;
    assert!(matches!(sub, Err(CacheError::Unavailable { .. })));
}

#[tokio::test]
async fn closed_port_answers_unavailable_within_the_timeout() {
    let timeout = Duration::from_millis(250);
    let mut opts = RedisOptions::new("redis://127.0.0.1:1", unique_prefix());
    opts.timeout = timeout;
    let started = Instant::now();
    let store = RedisStore::connect_with(opts)
        .await
        .expect("starts degraded");
    assert!(started.elapsed() < timeout + Duration::from_millis(400));
    assert_fails_fast(&store, timeout).await;
}

#[tokio::test]
async fn silent_server_answers_unavailable_within_the_timeout() {
    // Accepts connections and never answers: the case where only timeouts help.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(200);
    let mut opts = RedisOptions::new(format!("redis://{addr}"), unique_prefix());
    opts.timeout = timeout;
    opts.reconnect_interval = Duration::ZERO;
    let started = Instant::now();
    let store = RedisStore::connect_with(opts)
        .await
        .expect("starts degraded");
    assert!(started.elapsed() < timeout + Duration::from_millis(400));
    let single = Instant::now();
    assert!(matches!(
        store.get("k").await,
        Err(CacheError::Unavailable { .. })
    ));
    assert!(
        single.elapsed() < timeout + Duration::from_millis(400),
        "{:?}",
        single.elapsed()
    );
    assert_fails_fast(&store, timeout).await;
    holder.abort();
}

#[tokio::test]
async fn invalid_url_is_a_config_error() {
    let result = RedisStore::connect("not a url", "p").await;
    assert!(
        matches!(result, Err(CacheError::Config { .. })),
        "{result:?}"
    );
}
