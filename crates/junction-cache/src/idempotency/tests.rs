use std::time::Duration;

use bytes::Bytes;

use super::*;

fn answer(body: &'static [u8]) -> CachedResponse {
    CachedResponse {
        status: 201,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: Bytes::from_static(body),
        stored_at_ms: 1,
        fresh_for: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        etag: "\"e\"".into(),
        ..CachedResponse::default()
    }
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn records_round_trip_and_reject_garbage() {
    let pending = Record::Pending {
        fingerprint: 7,
        token: u128::MAX - 3,
    };
    assert_eq!(Record::decode(pending.encode()), Ok(pending));
    let done = Record::Done {
        fingerprint: 9,
        response: answer(b"{\"id\":1}"),
    };
    assert_eq!(Record::decode(done.encode()), Ok(done.clone()));
    assert!(Record::decode(Bytes::from_static(b"JCE1xxxxxxxxxxxxxxxxxxxx")).is_err());
    let mut truncated = done.encode().to_vec();
    truncated.truncate(30);
    assert!(Record::decode(Bytes::from(truncated)).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_lock_expires_but_a_completed_answer_stays_for_its_retention() {
    let store = MemoryIdempotency::default();
    assert_eq!(store.claim("k", 1, 10, SEC).await.unwrap(), Claim::Owner);
    tokio::time::advance(2 * SEC).await;
    // The first owner died: its lock ran out, so the key can be claimed again.
    assert_eq!(store.claim("k", 1, 11, SEC).await.unwrap(), Claim::Owner);
    // The first owner's late answer must not overwrite the second claim.
    assert!(!store
        .complete("k", 1, 10, &answer(b"old"), 60 * SEC)
        .await
        .unwrap());
    assert!(store
        .complete("k", 1, 11, &answer(b"new"), 60 * SEC)
        .await
        .unwrap());
    tokio::time::advance(59 * SEC).await;
    assert_eq!(
        store.claim("k", 1, 12, SEC).await.unwrap(),
        Claim::Replay(answer(b"new"))
    );
    tokio::time::advance(2 * SEC).await;
    assert_eq!(store.claim("k", 1, 13, SEC).await.unwrap(), Claim::Owner);
}

#[tokio::test(start_paused = true)]
async fn a_full_store_refuses_new_keys_until_records_expire() {
    let store = MemoryIdempotency::new(2, u64::MAX);
    store.claim("a", 1, 1, SEC).await.unwrap();
    store.claim("b", 1, 2, 10 * SEC).await.unwrap();
    let refused = store.claim("c", 1, 3, SEC).await;
    assert!(
        matches!(refused, Err(CacheError::Unavailable { .. })),
        "{refused:?}"
    );
    // Keys already held still answer.
    assert_eq!(store.claim("b", 1, 4, SEC).await.unwrap(), Claim::InFlight);
    tokio::time::advance(2 * SEC).await;
    assert_eq!(store.claim("c", 1, 3, SEC).await.unwrap(), Claim::Owner);
    assert_eq!(store.len(), 2, "the expired record was swept");
}

#[tokio::test(start_paused = true)]
async fn release_by_someone_else_keeps_the_claim() {
    let store = MemoryIdempotency::default();
    store.claim("k", 1, 10, SEC).await.unwrap();
    store.release("k", 1, 99).await.unwrap();
    assert_eq!(store.claim("k", 1, 11, SEC).await.unwrap(), Claim::InFlight);
    store.release("k", 1, 10).await.unwrap();
    assert_eq!(store.claim("k", 1, 11, SEC).await.unwrap(), Claim::Owner);
    assert!(store.len() == 1);
}
