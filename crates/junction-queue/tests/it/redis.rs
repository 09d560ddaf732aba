//! What the Redis backend adds to the shared contract: instances sharing one
//! queue, leases of a dead instance expiring, completed records expiring.

use std::sync::Arc;
use std::time::Duration;

use junction_queue::conformance::{now_ms, request};
use junction_queue::{AttemptRecord, EnqueueOutcome, IndexedStore, RedisBroker, RedisConfig};

use crate::support::{redis_url, unique_prefix};

fn attempt(outcome: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: 0,
        at_ms: now_ms(),
        outcome: outcome.to_owned(),
        duration_ms: 2,
        response: None,
    }
}

async fn broker(cfg: RedisConfig) -> Arc<RedisBroker> {
    RedisBroker::connect(cfg)
        .await
        .expect("redis must be running")
}

#[tokio::test]
async fn two_instances_share_one_queue() {
    let prefix = unique_prefix();
    let a = broker(RedisConfig::new(redis_url(), &prefix)).await;
    let b = broker(RedisConfig::new(redis_url(), &prefix)).await;
    let woken = b.notifier("s");
    let waiter = tokio::spawn(async move { woken.notified().await });
    tokio::time::sleep(Duration::from_millis(100)).await; // b's wake-up channel is subscribed
    let EnqueueOutcome::Accepted(id) = a.enqueue(request("t", &["s"], "x")).await.unwrap() else {
        panic!("accepted expected")
    };
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the other instance is woken")
        .unwrap();
    // Exactly one of two instances leasing at once gets the delivery.
    let (from_a, from_b) = tokio::join!(
        a.lease_due("s", now_ms(), 10),
        b.lease_due("s", now_ms(), 10)
    );
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    assert_eq!(from_a.len() + from_b.len(), 1);
    let d = from_a.into_iter().chain(from_b).next().unwrap();
    assert_eq!(d.message.id, id);
    b.ack(&d, attempt("status 200")).await.unwrap();
    assert_eq!(b.depth().total, 0);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(a.depth().total, 0, "the other instance's depth follows");
    let status = a.message_status(id.as_str()).await.unwrap().unwrap();
    assert!(status.completed_at_ms.is_some());
}

#[tokio::test]
async fn a_lease_held_by_a_dead_instance_is_due_again_after_its_ttl() {
    let mut cfg = RedisConfig::new(redis_url(), unique_prefix());
    cfg.lease_ttl = Duration::from_millis(200);
    let dead = broker(cfg.clone()).await;
    let alive = broker(cfg).await;
    dead.enqueue(request("t", &["s"], "x")).await.unwrap();
    let held = dead.lease_due("s", now_ms(), 10).await.unwrap();
    assert_eq!(held.len(), 1);
    drop(dead); // never acks
    assert!(alive.lease_due("s", now_ms(), 10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = alive.lease_due("s", now_ms(), 10).await.unwrap();
    assert_eq!(again.len(), 1, "delivered again by the living instance");
    assert_eq!(again[0].message.id, held[0].message.id);
    assert_eq!(again[0].attempts, 0, "an expired lease records no attempt");
}

#[tokio::test]
async fn completed_records_expire_after_their_retention() {
    let mut cfg = RedisConfig::new(redis_url(), unique_prefix());
    cfg.completed_retention = Duration::from_millis(200);
    let b = broker(cfg).await;
    let EnqueueOutcome::Accepted(id) = b.enqueue(request("t", &["s"], "x")).await.unwrap() else {
        panic!("accepted expected")
    };
    let d = b.lease_due("s", now_ms(), 1).await.unwrap().pop().unwrap();
    b.ack(&d, attempt("status 200")).await.unwrap();
    assert!(b.message_status(id.as_str()).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.message_status(id.as_str()).await.unwrap().is_none());
}

#[tokio::test]
async fn an_unreachable_redis_is_a_start_up_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = RedisBroker::connect(RedisConfig::new(format!("redis://127.0.0.1:{port}"), "x"))
        .await
        .err()
        .expect("no Redis there");
    assert!(err.to_string().contains("queue storage failed"), "{err}");
}

#[tokio::test]
async fn outcomes_made_while_redis_is_unreachable_are_recorded_when_it_is_back() {
    let gate = junction_testkit::TcpGate::in_front_of(&redis_url()).await;
    let b = broker(RedisConfig::new(
        format!("redis://{}", gate.addr()),
        unique_prefix(),
    ))
    .await;
    for body in ["1", "2"] {
        b.enqueue(request("t", &["s"], body)).await.unwrap();
    }
    let leased = b.lease_due("s", now_ms(), 10).await.unwrap();
    assert_eq!(leased.len(), 2);
    assert_eq!(b.held(), (2, 0));
    gate.cut();
    // Redis is unreachable: the outcomes are kept, in order, not lost.
    b.ack(&leased[0], attempt("status 200")).await.unwrap();
    b.retry_later(&leased[1], attempt("status 503"), now_ms())
        .await
        .unwrap();
    assert_eq!(b.held(), (2, 2), "leases still held and renewed meanwhile");
    assert!(
        b.enqueue(request("t", &["s"], "3")).await.is_err(),
        "enqueues fail"
    );
    gate.restore();
    for _ in 0..100 {
        if b.held() == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.held(), (0, 0));
    let first = b
        .message_status(leased[0].message.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(first.completed_at_ms.is_some(), "{first:?}");
    let again = b.lease_due("s", now_ms(), 10).await.unwrap();
    assert_eq!(again.len(), 1, "the retried one is due again");
    assert_eq!(
        (again[0].message.id.clone(), again[0].attempts),
        (leased[1].message.id.clone(), 1)
    );
}

#[tokio::test]
async fn the_status_of_a_message_with_a_binary_body_is_readable() {
    let b = broker(RedisConfig::new(redis_url(), unique_prefix())).await;
    let mut req = request("t", &["s"], "");
    req.body = bytes::Bytes::from_static(&[0xff, 0xfe, 0x00, 0x80]);
    let EnqueueOutcome::Accepted(id) = b.enqueue(req).await.unwrap() else {
        panic!("accepted expected")
    };
    let status = b.message_status(id.as_str()).await.unwrap();
    assert!(status.is_some_and(|s| s.subscribers.len() == 1));
    let d = b.lease_due("s", now_ms(), 1).await.unwrap().pop().unwrap();
    assert_eq!(d.message.body.as_ref(), &[0xff, 0xfe, 0x00, 0x80]);
}
