//! Kafka consumer groups on a real Kafka-protocol broker: instances joining
//! and leaving a subscriber's group share its partitions without losing a
//! record, and committed offsets never pass an unsettled one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_queue::conformance::queue::{take, unique};
use junction_queue::conformance::request;
use junction_queue::{
    Consumer as _, Delivery, EnqueueOutcome, KafkaBroker, MessageId, Publisher as _, Subscription,
};
use junction_testkit::{PrivateKafka, TcpGate};
use parking_lot::Mutex;

use crate::support::{attempt, kafka_config, DeleteKafka};

async fn publish(b: &KafkaBroker, topic: &str, sub: &str, n: usize, tag: &str) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut req = request(topic, &[sub], &format!("{tag}-{i}"));
        // Distinct keys spread the records over every partition.
        req.ordering_key = Some(format!("{tag}-{i}"));
        match b.publish(req).await.expect("publish") {
            EnqueueOutcome::Accepted(id) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    ids
}

/// Acks whatever `sub` gets into `seen` until `stop`.
fn drain(
    mut sub: Box<dyn Subscription>,
    seen: Arc<Mutex<Vec<MessageId>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            // Err once its instance closed.
            let Ok(batch) = sub.next(16).await else {
                return;
            };
            for d in batch {
                seen.lock().push(d.message.id.clone());
                d.ack(attempt("status 200")).await.unwrap();
            }
        }
    })
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < end, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A second instance joining a subscriber's group takes over part of its
/// partitions; when the first leaves, the second gets them all. Every record
/// published before, during and after is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_share_the_partitions_and_lose_nothing() {
    let cfg = kafka_config();
    let a = KafkaBroker::connect(cfg.clone()).await.expect("kafka");
    let b = KafkaBroker::connect(cfg).await.expect("kafka");
    let _cleanup = DeleteKafka(b.clone());
    let (topic, sub) = (unique("orders"), unique("inventory"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen_a, seen_b) = (Arc::default(), Arc::default());

    let mut sent: HashSet<MessageId> = HashSet::new();
    let lane_a = a.subscribe(&topic, &sub, 16).await.unwrap();
    let task_a = drain(lane_a, Arc::clone(&seen_a), stop.clone());
    sent.extend(publish(&a, &topic, &sub, 30, "alone").await);
    until(
        "the first instance delivers",
        Duration::from_secs(20),
        || seen_a.lock().len() >= 30,
    )
    .await;

    // B joins: the group rebalances; both deliver what comes next.
    let lane_b = b.subscribe(&topic, &sub, 16).await.unwrap();
    let task_b = drain(lane_b, Arc::clone(&seen_b), stop.clone());
    let all = |sent: &HashSet<MessageId>| {
        let got: HashSet<MessageId> = seen_a
            .lock()
            .iter()
            .chain(seen_b.lock().iter())
            .cloned()
            .collect();
        sent.is_subset(&got)
    };
    let end = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    while seen_b.lock().is_empty() {
        assert!(
            Instant::now() < end,
            "the joining instance got no partition within 30 s"
        );
        sent.extend(publish(&a, &topic, &sub, 6, &format!("shared{round}")).await);
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    until(
        "every record so far delivered",
        Duration::from_secs(30),
        || all(&sent),
    )
    .await;

    // A leaves: B takes every partition, and records to all of them arrive.
    a.close().await.unwrap();
    let before = seen_b.lock().len();
    let after = publish(&b, &topic, &sub, 30, "after").await;
    sent.extend(after.iter().cloned());
    until(
        "the remaining instance delivers every record after the other left",
        Duration::from_secs(40),
        || {
            let got: HashSet<MessageId> = seen_b.lock()[before..].iter().cloned().collect();
            after.iter().all(|id| got.contains(id))
        },
    )
    .await;
    assert!(all(&sent));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = tokio::join!(task_a, task_b);
}

/// Offsets are committed only up to the oldest unsettled record: an instance
/// that acked every record but the first and then left hands that first one
/// to the next member of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_record_holds_the_committed_offset_back() {
    let mut cfg = kafka_config();
    cfg.partitions = 1;
    let a = KafkaBroker::connect(cfg.clone()).await.expect("kafka");
    let b = KafkaBroker::connect(cfg).await.expect("kafka");
    let _cleanup = DeleteKafka(b.clone());
    let (topic, sub) = (unique("orders"), unique("inventory"));
    let mut lane = a.subscribe(&topic, &sub, 16).await.unwrap();
    let ids = publish(&a, &topic, &sub, 5, "m").await;
    let mut got: Vec<Delivery> = take(lane.as_mut(), 5, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 5, "every key is free, so all five come at once");
    got.sort_by_key(|d| ids.iter().position(|i| *i == d.message.id));
    let first = got.remove(0);
    assert_eq!(first.message.id, ids[0]);
    for d in got {
        d.ack(attempt("status 200")).await.unwrap();
    }
    // Give auto-commit (every second) a chance to run past the first, were it wrong.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(first); // never settled: the instance stops with it in flight
    drop(lane);
    a.close().await.unwrap();
    let mut lane = b.subscribe(&topic, &sub, 16).await.unwrap();
    let again = take(lane.as_mut(), 1, Duration::from_secs(30)).await;
    assert_eq!(
        again.first().map(|d| d.message.id.clone()),
        Some(ids[0].clone()),
        "the next member starts at the unsettled record"
    );
    for d in again {
        d.ack(attempt("status 200")).await.unwrap();
    }
    b.close().await.unwrap();
}

/// With the broker unreachable a publish fails (bounded) instead of hanging
/// or being dropped; once it is back, publishing works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_fails_publishes_until_the_broker_is_back() {
    let port = PrivateKafka::free_port();
    let gate = TcpGate::start(([127, 0, 0, 1], port).into()).await;
    let _broker = PrivateKafka::start(port, gate.addr());
    let mut cfg = kafka_config();
    cfg.brokers = gate.addr().to_string();
    let b = KafkaBroker::connect(cfg).await.expect("kafka");
    let (topic, sub) = (unique("orders"), unique("inventory"));
    publish(&b, &topic, &sub, 3, "before").await;
    gate.cut();
    let t0 = Instant::now();
    let failed = b.publish(request(&topic, &[&sub], "during")).await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        t0.elapsed()
    );
    assert!(b.health().await.is_err());
    gate.restore();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match b.publish(request(&topic, &[&sub], "after")).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < end, "publishing again within 20 s: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.close().await.unwrap();
}

/// Records an instance was still retrying when it left are read again by the
/// instance that takes over its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_retry_at_a_leaving_instance_reach_the_remaining_one() {
    let cfg = kafka_config();
    let a = KafkaBroker::connect(cfg.clone()).await.expect("kafka");
    let b = KafkaBroker::connect(cfg).await.expect("kafka");
    let _cleanup = DeleteKafka(b.clone());
    let (topic, sub) = (unique("orders"), unique("inventory"));
    let mut lane_a = a.subscribe(&topic, &sub, 16).await.unwrap();
    let mut lane_b = b.subscribe(&topic, &sub, 16).await.unwrap();
    let ids: HashSet<MessageId> = publish(&a, &topic, &sub, 30, "r")
        .await
        .into_iter()
        .collect();
    // Both fail every delivery for a while (the subscriber is down).
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        for lane in [&mut lane_a, &mut lane_b] {
            for d in lane.next(16).await.unwrap() {
                d.retry(attempt("status 503"), Duration::from_millis(50))
                    .await
                    .unwrap();
            }
        }
    }
    drop(lane_a);
    a.close().await.unwrap();
    let left = Instant::now();
    let mut got = HashSet::new();
    while !ids.is_subset(&got) {
        assert!(
            left.elapsed() < Duration::from_secs(30),
            "{} of 30 reached the remaining instance",
            got.len()
        );
        for d in lane_b.next(16).await.unwrap() {
            got.insert(d.message.id.clone());
            d.ack(attempt("status 200")).await.unwrap();
        }
    }
    eprintln!("taken over in {:?}", left.elapsed());
    b.close().await.unwrap();
}

/// A delivery dropped without settling (its task died) goes out again at once,
/// and does not hold its ordering key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_goes_out_again() {
    let cfg = kafka_config();
    let b = KafkaBroker::connect(cfg).await.expect("kafka");
    let _cleanup = DeleteKafka(b.clone());
    let (topic, sub) = (unique("orders"), unique("inventory"));
    let mut lane = b.subscribe(&topic, &sub, 16).await.unwrap();
    let ids = publish(&b, &topic, &sub, 1, "k").await;
    let first = take(lane.as_mut(), 1, Duration::from_secs(20)).await;
    assert_eq!(first.len(), 1);
    drop(first);
    let again = take(lane.as_mut(), 1, Duration::from_secs(5)).await;
    assert_eq!(
        again.first().map(|d| (d.message.id.clone(), d.attempts)),
        Some((ids[0].clone(), 0))
    );
    for d in again {
        d.ack(attempt("status 200")).await.unwrap();
    }
    b.close().await.unwrap();
}
