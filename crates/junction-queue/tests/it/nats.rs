//! NATS JetStream on a real server: `max_depth` with `on_full:
//! dead_letter_oldest` (a subscriber nobody consumes sheds its oldest waiting
//! events into its dead letters, within a few depth refreshes, while the
//! topic's other subscriber gets every one and no publish is refused); a data
//! thread's publishes going through its own connection, one per runtime, and
//! through the shared one while the server refuses the thread its own.

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

/// A data thread (a current-thread runtime) publishes through a connection of
/// its own once connected, not the broker's shared one; when its runtime is
/// gone, the next runtime on that thread gets a new connection (the old one's
/// tasks died with the runtime) and nothing published is lost.
#[test]
fn a_data_thread_publishes_through_its_own_connection_one_per_runtime() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("jqt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let b = main
        .block_on(NatsBroker::connect(NatsConfig::new(nats_url(), prefix)))
        .expect("nats running");
    let cleanup = DeleteStreams(b.clone());
    let q = b.clone().into_queue();
    let (topic, sub) = (unique("t"), unique("s"));
    let mut published = 0;
    for round in 0..2 {
        let data_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        data_thread.block_on(async {
            let publish = |i: usize| {
                let q = q.clone();
                let req = request(&topic, &[&sub], &i.to_string());
                async move {
                    tokio::time::timeout(Duration::from_secs(5), q.publisher.publish(req))
                        .await
                        .expect("a publish answers")
                        .expect("accepted")
                }
            };
            // The first one goes through the shared connection while this
            // thread's own connects.
            publish(published).await;
            published += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = b.sent_through_shared_connection();
            for _ in 0..20 {
                publish(published).await;
                published += 1;
            }
            let shared = b.sent_through_shared_connection() - before;
            // The depth refresher's few requests may fall in between; 20
            // publishes through it would not.
            assert!(
                shared < 10,
                "round {round}: {shared} messages went through the shared connection"
            );
        });
        drop(data_thread);
    }
    main.block_on(async {
        let mut s = q.consumer.subscribe(&topic, &sub, 64).await.unwrap();
        let mut got = std::collections::BTreeSet::new();
        let end = Instant::now() + Duration::from_secs(10);
        while got.len() < published && Instant::now() < end {
            for d in s.next(64).await.unwrap() {
                got.insert(String::from_utf8(d.message.body.to_vec()).unwrap());
                d.ack(attempt("status 200")).await.unwrap();
            }
        }
        assert_eq!(got.len(), published, "every published event is delivered");
    });
    drop(cleanup);
}

/// A server that refuses a data thread its own connection (at its connection
/// limit) costs no publish: they go through the shared connection, and the
/// thread's own is tried again later and used once the server takes it.
#[test]
fn a_data_thread_refused_its_own_connection_publishes_through_the_shared_one() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let gate = main.block_on(junction_testkit::TcpGate::in_front_of(&nats_url()));
    let prefix = format!("jqt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let url = format!("nats://{}", gate.addr());
    let b = main
        .block_on(NatsBroker::connect(NatsConfig::new(url, prefix)))
        .expect("nats running");
    let cleanup = DeleteStreams(b.clone());
    let q = b.clone().into_queue();
    let (topic, sub) = (unique("t"), unique("s"));
    let data_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let publish = |i: usize| {
        let q = q.clone();
        let req = request(&topic, &[&sub], &i.to_string());
        async move {
            tokio::time::timeout(Duration::from_secs(5), q.publisher.publish(req))
                .await
                .expect("a publish answers")
                .expect("accepted")
        }
    };
    gate.refuse_new();
    data_thread.block_on(async {
        publish(0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = b.sent_through_shared_connection();
        for i in 1..=20 {
            publish(i).await;
        }
        let shared = b.sent_through_shared_connection() - before;
        assert!(
            shared >= 20,
            "only {shared} of 20 went through the shared connection"
        );
    });
    gate.restore();
    data_thread.block_on(async {
        // The refused connect is tried again after 5 s.
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        publish(21).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = b.sent_through_shared_connection();
        for i in 22..42 {
            publish(i).await;
        }
        let shared = b.sent_through_shared_connection() - before;
        assert!(
            shared < 10,
            "{shared} of 20 went through the shared connection after the restore"
        );
    });
    drop(data_thread);
    main.block_on(async {
        let mut s = q.consumer.subscribe(&topic, &sub, 64).await.unwrap();
        let mut got = std::collections::BTreeSet::new();
        let end = Instant::now() + Duration::from_secs(10);
        while got.len() < 42 && Instant::now() < end {
            for d in s.next(64).await.unwrap() {
                got.insert(String::from_utf8(d.message.body.to_vec()).unwrap());
                d.ack(attempt("status 200")).await.unwrap();
            }
        }
        assert_eq!(got.len(), 42, "every published event is delivered");
    });
    drop(cleanup);
    main.block_on(async { drop(gate) });
}
