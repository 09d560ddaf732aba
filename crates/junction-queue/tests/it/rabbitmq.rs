//! RabbitMQ on a real broker: the per-subscriber bound with
//! `on_full: dead_letter_oldest` (a subscriber nobody consumes sheds its oldest
//! messages into its dead letters and never refuses a publish, while the
//! topic's other subscriber gets every one), and idempotency keys shared by
//! instances through Redis.

use std::time::{Duration, Instant};

use junction_queue::conformance::queue::unique;
use junction_queue::conformance::request;
use junction_queue::{DlqFilter, EnqueueOutcome, OnFull, RabbitBroker, RabbitConfig, BACKLOG_FULL};

use crate::support::{attempt, rabbitmq_url, unique_prefix, DeleteTopology};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subscriber_queue_sheds_its_oldest_without_refusing_a_publish() {
    let mut cfg = RabbitConfig::new(rabbitmq_url(), unique_prefix());
    cfg.max_depth = Some(3);
    cfg.on_full = OnFull::DeadLetterOldest;
    let b = RabbitBroker::connect(cfg).await.expect("rabbitmq running");
    let _cleanup = DeleteTopology(b.clone());
    let q = b.clone().into_queue();
    let (topic, dead, live) = (unique("t"), unique("dead"), unique("live"));
    let mut sub = q.consumer.subscribe(&topic, &live, 16).await.unwrap();
    let mut ids = Vec::new();
    let mut got = 0;
    for i in 0..7 {
        let out = q
            .publisher
            .publish(request(&topic, &[&dead, &live], &i.to_string()))
            .await
            .expect("never refused");
        ids.push(out.id().to_string());
        // The healthy one keeps up (its own queue has the same bound).
        let end = Instant::now() + Duration::from_secs(10);
        while got <= i && Instant::now() < end {
            for d in sub.next(16).await.unwrap() {
                d.ack(attempt("status 200")).await.unwrap();
                got += 1;
            }
        }
    }
    assert_eq!(got, 7, "the healthy subscriber got every message");
    let filter = DlqFilter {
        topic: None,
        subscriber: Some(dead.clone()),
    };
    let page = q.ledger.dlq_list(filter, None, 50).await.unwrap();
    let mut shed: Vec<String> = page
        .items
        .iter()
        .map(|d| d.message.id.to_string())
        .collect();
    shed.sort();
    assert_eq!(
        shed,
        ids[..4].to_vec(),
        "the 4 oldest went to its dead letters"
    );
    for d in &page.items {
        assert!(d.reason.starts_with(BACKLOG_FULL), "{}", d.reason);
        assert!(d.dead_at_ms > 0);
    }
}

/// With `idempotency_redis`, a repeat reaching another instance of the same
/// queue gets the first event's id (and is not published again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_in_redis_are_shared_by_instances() {
    let prefix = unique_prefix();
    let mut cfg = RabbitConfig::new(rabbitmq_url(), prefix.clone());
    cfg.idempotency_redis = Some(crate::support::redis_url());
    let a = RabbitBroker::connect(cfg.clone()).await.expect("rabbitmq");
    let b = RabbitBroker::connect(cfg).await.expect("rabbitmq");
    let _cleanup = (DeleteTopology(a.clone()), DeleteTopology(b.clone()));
    let (qa, qb) = (a.clone().into_queue(), b.clone().into_queue());
    let (topic, sub) = (unique("t"), unique("s"));
    let mut req = request(&topic, &[&sub], "once");
    req.idempotency_key = Some(unique("key"));
    let first = qa.publisher.publish(req.clone()).await.unwrap();
    let EnqueueOutcome::Accepted(id) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        qb.publisher.publish(req.clone()).await.unwrap(),
        EnqueueOutcome::Duplicate(id.clone()),
        "the other instance knows the key"
    );
    let mut s = qa.consumer.subscribe(&topic, &sub, 8).await.unwrap();
    let got = junction_queue::conformance::queue::take(s.as_mut(), 2, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "published once");
    // Without a key the instances are independent as before.
    let plain = request(&topic, &[&sub], "again");
    assert!(matches!(
        qb.publisher.publish(plain).await.unwrap(),
        EnqueueOutcome::Accepted(_)
    ));
}
