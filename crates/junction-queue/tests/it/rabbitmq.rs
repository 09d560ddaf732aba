//! RabbitMQ's per-subscriber bound on a real broker: with
//! `on_full: dead_letter_oldest` a subscriber nobody consumes sheds its oldest
//! messages into its dead letters and never refuses a publish, while the
//! topic's other subscriber gets every one.

use std::time::{Duration, Instant};

use junction_queue::conformance::queue::unique;
use junction_queue::conformance::request;
use junction_queue::{DlqFilter, OnFull, RabbitBroker, RabbitConfig, BACKLOG_FULL};

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
