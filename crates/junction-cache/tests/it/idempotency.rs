//! The idempotency store contract, run against every backend: memory (one
//! store seen twice) and Redis (two stores on one prefix, as two instances).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use junction_cache::{CachedResponse, Claim, IdempotencyStore, MemoryIdempotency, RedisStore};

use crate::redis_store::{redis_url, unique_prefix};

fn answer(body: &'static [u8]) -> CachedResponse {
    CachedResponse {
        status: 201,
        headers: vec![("location".into(), b"/payments/1".to_vec())],
        body: Bytes::from_static(body),
        stored_at_ms: 1,
        fresh_for: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        etag: "\"p1\"".into(),
        ..CachedResponse::default()
    }
}

const LOCK: Duration = Duration::from_secs(30);
const KEEP: Duration = Duration::from_secs(300);

/// Every promise of the trait, with `a` and `b` two views of one store.
async fn conformance(a: Arc<dyn IdempotencyStore>, b: Arc<dyn IdempotencyStore>) {
    // One owner among concurrent claims, the rest see it in flight.
    let claims = futures::future::join_all((0..20u128).map(|t| {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        async move { store.claim("pay-1", 42, t, LOCK).await.expect("claim") }
    }))
    .await;
    let owners: Vec<u128> = (0..20u128)
        .filter(|t| claims[*t as usize] == Claim::Owner)
        .collect();
    assert_eq!(owners.len(), 1, "{claims:?}");
    assert!(claims.iter().filter(|c| **c == Claim::InFlight).count() == 19);
    let owner = owners[0];

    // Another request under the same key is a mismatch, in flight or done.
    assert_eq!(
        b.claim("pay-1", 43, 99, LOCK).await.unwrap(),
        Claim::Mismatch
    );
    // Only the owner settles.
    assert!(!b
        .complete("pay-1", 42, 999, &answer(b"x"), KEEP)
        .await
        .unwrap());
    assert!(a
        .complete("pay-1", 42, owner, &answer(b"{\"id\":1}"), KEEP)
        .await
        .unwrap());
    assert_eq!(
        b.claim("pay-1", 42, 100, LOCK).await.unwrap(),
        Claim::Replay(answer(b"{\"id\":1}"))
    );
    assert_eq!(
        a.claim("pay-1", 43, 101, LOCK).await.unwrap(),
        Claim::Mismatch
    );
    // A completed key is not released by a stale owner.
    a.release("pay-1", 42, owner).await.unwrap();
    assert!(matches!(
        b.claim("pay-1", 42, 102, LOCK).await.unwrap(),
        Claim::Replay(_)
    ));

    // Released keys can be claimed again (the request failed; a retry may run it).
    assert_eq!(a.claim("pay-2", 1, 1, LOCK).await.unwrap(), Claim::Owner);
    a.release("pay-2", 1, 1).await.unwrap();
    assert_eq!(b.claim("pay-2", 1, 2, LOCK).await.unwrap(), Claim::Owner);
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryIdempotency::default());
    conformance(store.clone(), store).await;
}

#[tokio::test]
async fn two_redis_stores_on_one_prefix_keep_the_contract() {
    let prefix = unique_prefix();
    let a = RedisStore::connect(&redis_url(), &prefix)
        .await
        .expect("url");
    let b = RedisStore::connect(&redis_url(), &prefix)
        .await
        .expect("url");
    conformance(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test]
async fn a_redis_lock_expires_by_itself() {
    let store = RedisStore::connect(&redis_url(), &unique_prefix())
        .await
        .expect("url");
    let short = Duration::from_millis(50);
    assert_eq!(store.claim("k", 1, 1, short).await.unwrap(), Claim::Owner);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.claim("k", 1, 2, LOCK).await.unwrap(), Claim::Owner);
    assert!(!store
        .complete("k", 1, 1, &answer(b"late"), KEEP)
        .await
        .unwrap());
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_claim() {
    let store = RedisStore::connect("redis://127.0.0.1:1", &unique_prefix())
        .await
        .expect("url");
    assert!(store.claim("k", 1, 1, LOCK).await.is_err());
}
