//! NATS JetStream on a real server: `max_depth` with `on_full:
//! dead_letter_oldest` (a subscriber nobody consumes sheds its oldest waiting
//! events into its dead letters, within a few depth refreshes, while the
//! topic's other subscriber gets every one and no publish is refused).

use std::time::{Duration, Instant};

use junction_queue::conformance::queue::unique;
use junction_queue::conformance::request;
use junction_queue::{DlqFilter, NatsBroker, NatsConfig, BACKLOG_FULL};

use crate::support::{attempt, nats_url, DeleteStreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subscriber_sheds_its_oldest_into_its_dead_letters() {
    let prefix = format!("jqt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut cfg = NatsConfig::new(nats_url(), prefix);
    cfg.max_depth = Some(3);
    let b = NatsBroker::connect(cfg).await.expect("nats running");
    let _cleanup = DeleteStreams(b.clone());
    let q = b.clone().into_queue();
    let (topic, dead, live) = (unique("t"), unique("dead"), unique("live"));
    let mut sub = q.consumer.subscribe(&topic, &live, 16).await.unwrap();
    let mut ids = Vec::new();
    let mut got = 0;
    for i in 0..10 {
        let out = q
            .publisher
            .publish(request(&topic, &[&dead, &live], &i.to_string()))
            .await
            .expect("never refused");
        ids.push(out.id().to_string());
        // The healthy one keeps up (the bound is its too).
        let end = Instant::now() + Duration::from_secs(10);
        while got <= i && Instant::now() < end {
            for d in sub.next(16).await.unwrap() {
                d.ack(attempt("status 200")).await.unwrap();
                got += 1;
            }
        }
    }
    assert_eq!(got, 10, "the healthy subscriber got every message");
    let filter = DlqFilter {
        topic: None,
        subscriber: Some(dead.clone()),
    };
    // Shed by the depth refresher (every 2 s).
    let end = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = q.ledger.dlq_list(filter.clone(), None, 50).await.unwrap();
        if page.items.len() >= 7 || Instant::now() > end {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut shed: Vec<String> = page
        .items
        .iter()
        .map(|d| d.message.id.to_string())
        .collect();
    shed.sort();
    assert_eq!(
        shed,
        ids[..7].to_vec(),
        "the 7 oldest went to its dead letters"
    );
    for d in &page.items {
        assert!(d.reason.starts_with(BACKLOG_FULL), "{}", d.reason);
        assert_eq!(d.subscriber, dead);
    }
    // What is left is its bound; the healthy subscriber's backlog is empty.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let depth = q.ledger.depth();
        let (d, l) = (
            depth.subscribers.get(&dead).copied(),
            depth.subscribers.get(&live).copied(),
        );
        if d == Some(3) && l == Some(0) {
            break;
        }
        assert!(Instant::now() < end, "backlogs: dead {d:?}, live {l:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
