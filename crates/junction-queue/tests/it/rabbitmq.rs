//! RabbitMQ on a real broker: the per-subscriber bound with
//! `on_full: dead_letter_oldest` (a subscriber nobody consumes sheds its oldest
//! messages into its dead letters and never refuses a publish, while the
//! topic's other subscriber gets every one) and with `reject` (the full one
//! sheds the new event alone), idempotency keys shared by
//! instances through Redis, and ordering partitions (declared only for keyed
//! topics, counted in the backlog, and a key moving to another instance in
//! order when the one holding it goes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use junction_queue::conformance::queue::{take, unique};
use junction_queue::conformance::request;
use junction_queue::{
    DlqFilter, EnqueueOutcome, EnqueueRequest, MessageId, OnFull, QueueError, RabbitBroker,
    RabbitConfig, BACKLOG_FULL,
};

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

/// With `on_full: reject` a full subscriber sheds the new event into its own
/// dead letters while the topic's healthy subscriber gets it (RabbitMQ's own
/// `reject-publish` would refuse the whole publish); keyed events too (their
/// partition queues are bounded alike); only an event for full subscribers
/// alone is refused. Another instance whose count is behind publishes once
/// more through the broker's own bound, then routes on a fresh count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subscriber_under_reject_sheds_only_its_own_copy() {
    let mut cfg = RabbitConfig::new(rabbitmq_url(), unique_prefix());
    cfg.max_depth = Some(2);
    cfg.on_full = OnFull::Reject;
    let b = RabbitBroker::connect(cfg.clone())
        .await
        .expect("rabbitmq running");
    let other = RabbitBroker::connect(cfg).await.expect("rabbitmq running");
    let _cleanup = (DeleteTopology(b.clone()), DeleteTopology(other.clone()));
    let (q, q2) = (b.clone().into_queue(), other.clone().into_queue());
    let (topic, dead, live) = (unique("t"), unique("dead"), unique("live"));
    let live2 = unique("live2");
    let mut sub = q.consumer.subscribe(&topic, &live, 16).await.unwrap();
    let mut sub2 = q.consumer.subscribe(&topic, &live2, 16).await.unwrap();
    // The other instance publishes first: it reads the dead queue's count (0).
    let all = [dead.as_str(), live.as_str(), live2.as_str()];
    let warm = request(&topic, &all, "warm");
    let mut ids = vec![q2.publisher.publish(warm).await.unwrap().id().to_string()];
    for i in 0..5 {
        let mut r = request(&topic, &all, &i.to_string());
        if i >= 3 {
            r.ordering_key = Some("k".into());
        }
        let out = q.publisher.publish(r).await.expect("never refused");
        ids.push(out.id().to_string());
    }
    // Both healthy ones get every event (around the full one: one publish,
    // the second queue named in `BCC`), acked as they come: the keyed ones
    // arrive one at a time.
    for (s, name) in [(&mut sub, "live"), (&mut sub2, "live2")] {
        let mut got_ids = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while got_ids.len() < ids.len() && Instant::now() < end {
            for d in take(s.as_mut(), 1, Duration::from_secs(1)).await {
                got_ids.push(d.message.id.to_string());
                d.ack(attempt("status 200")).await.unwrap();
            }
        }
        got_ids.sort();
        assert_eq!(got_ids, ids, "{name} got every event");
    }
    let filter = DlqFilter {
        topic: None,
        subscriber: Some(dead.clone()),
    };
    let page = q.ledger.dlq_list(filter.clone(), None, 50).await.unwrap();
    let mut shed: Vec<String> = page
        .items
        .iter()
        .map(|d| d.message.id.to_string())
        .collect();
    shed.sort();
    // "warm" and event 0 fill its queue, 1 and 2 are shed; keyed 3 and 4 fill
    // its partition queue (bounded alike), none shed.
    assert_eq!(shed, ids[2..4].to_vec(), "only events 1 and 2 are shed");
    for letter in &page.items {
        assert!(letter.reason.starts_with(BACKLOG_FULL), "{}", letter.reason);
        assert!(letter.reason.contains("refused"), "{}", letter.reason);
        assert_eq!(letter.attempts.len(), 1, "one 'not attempted' record");
        assert!(letter.dead_at_ms > 0);
    }
    match q
        .publisher
        .publish(request(&topic, &[&dead], "alone"))
        .await
    {
        Err(QueueError::Full { depth, max }) => assert_eq!((depth, max), (2, 2)),
        other => panic!("expected Full, got {other:?}"),
    }
    // The other instance still counts 1 in the dead queue (unless its depth
    // refresher, every 2 s, read it meanwhile), so it publishes through the
    // exchange: the broker's own bound decides (a quorum queue was seen to
    // take one past it; a refusal would be a 503). Either way the count is
    // read again, and the next is routed around the full queue.
    let racing = request(&topic, &[&dead, &live], "racing");
    let racing = q2.publisher.publish(racing).await;
    assert!(
        matches!(racing, Ok(_) | Err(QueueError::Full { .. })),
        "{racing:?}"
    );
    let after = request(&topic, &[&dead, &live], "after");
    let after = q2.publisher.publish(after).await.expect("routed around");
    let page = q.ledger.dlq_list(filter, None, 50).await.unwrap();
    assert!(
        page.items.iter().any(|d| d.message.id == *after.id()),
        "shed for the full one"
    );
    let got = take(sub.as_mut(), 2, Duration::from_secs(10)).await;
    assert!(
        got.iter().any(|d| d.message.id == *after.id()),
        "and delivered to the healthy one"
    );
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

fn keyed(topic: &str, sub: &str, key: &str, body: &str) -> EnqueueRequest {
    let mut r = request(topic, &[sub], body);
    r.ordering_key = Some(key.to_owned());
    r
}

/// Partition queues exist only for topics that got a keyed event, and what
/// waits in them counts toward their subscriber's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_only_for_keyed_topics_and_counted_in_the_backlog() {
    let cfg = RabbitConfig::new(rabbitmq_url(), unique_prefix());
    let b = RabbitBroker::connect(cfg).await.expect("rabbitmq running");
    let _cleanup = DeleteTopology(b.clone());
    let q = b.clone().into_queue();
    let (topic, sub) = (unique("t"), unique("s"));
    for i in 0..2 {
        let r = request(&topic, &[&sub], &format!("plain/{i}"));
        q.publisher.publish(r).await.unwrap();
    }
    let ordered = |b: &RabbitBroker| {
        b.declared()
            .into_iter()
            .filter(|n| n.contains('#'))
            .collect::<Vec<_>>()
    };
    assert!(ordered(&b).is_empty(), "{:?}", ordered(&b));
    for i in 0..3 {
        let r = keyed(&topic, &sub, &format!("k{i}"), &i.to_string());
        q.publisher.publish(r).await.unwrap();
    }
    let names = ordered(&b);
    assert_eq!(
        names.len(),
        1 + 8 + 1,
        "the ordered exchange, 8 partitions and the marker: {names:?}"
    );
    let end = Instant::now() + Duration::from_secs(10);
    let mut backlog = 0;
    while backlog != 5 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        backlog = q.ledger.depth().subscribers.get(&sub).copied().unwrap_or(0);
    }
    assert_eq!(backlog, 5, "2 in the main queue, 3 in the partitions");
}

/// Two instances (two connections) consume one subscriber's partitions; the
/// one holding a key's delivery goes away without settling it, and the other
/// gets that delivery and the rest of the key, in publish order, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_by_an_instance_that_goes_continues_in_order_on_another() {
    let cfg = RabbitConfig::new(rabbitmq_url(), unique_prefix());
    let a = RabbitBroker::connect(cfg.clone()).await.expect("rabbitmq");
    let b = RabbitBroker::connect(cfg).await.expect("rabbitmq");
    let _cleanup = (DeleteTopology(a.clone()), DeleteTopology(b.clone()));
    let (qa, qb) = (a.clone().into_queue(), b.clone().into_queue());
    let (topic, sub) = (unique("t"), unique("s"));
    const PER_KEY: usize = 5;
    let keys = ["k0", "k1", "k2", "k3"];
    let mut sent: HashMap<String, Vec<MessageId>> = HashMap::new();
    for i in 0..PER_KEY {
        for key in keys {
            let r = keyed(&topic, &sub, key, &format!("{key}/{i}"));
            let id = qa.publisher.publish(r).await.unwrap().id().clone();
            sent.entry(key.to_owned()).or_default().push(id);
        }
    }
    // A first: it is given every partition; B, found them on the broker, waits.
    let mut sa = qa.consumer.subscribe(&topic, &sub, 16).await.unwrap();
    let mut sb = qb.consumer.subscribe(&topic, &sub, 16).await.unwrap();
    let mut acked: HashMap<String, Vec<MessageId>> = HashMap::new();
    let mut held = None;
    let end = Instant::now() + Duration::from_secs(10);
    while held.is_none() && Instant::now() < end {
        for d in take(sa.as_mut(), 4, Duration::from_secs(1)).await {
            let key = d.message.ordering_key.clone().expect("keyed");
            if key == "k0" && held.is_none() {
                held = Some(d);
            } else {
                let id = d.message.id.clone();
                d.ack(attempt("status 200")).await.unwrap();
                acked.entry(key).or_default().push(id);
            }
        }
    }
    let held = held.expect("A got a delivery of k0");
    assert_eq!(held.message.id, sent["k0"][0], "k0's first");
    assert!(
        take(sb.as_mut(), 1, Duration::from_millis(500))
            .await
            .is_empty(),
        "B gets nothing while A holds the partitions"
    );
    // A goes, its delivery unsettled: its connections close.
    qa.publisher.close().await.unwrap();
    drop(sa);
    drop(held);
    let left = keys.len() * PER_KEY - acked.values().map(Vec::len).sum::<usize>();
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(15);
    while got < left && Instant::now() < end {
        for d in sb.next(8).await.unwrap() {
            let key = d.message.ordering_key.clone().expect("keyed");
            let id = d.message.id.clone();
            d.ack(attempt("status 200")).await.unwrap();
            acked.entry(key).or_default().push(id);
            got += 1;
        }
    }
    assert_eq!(got, left, "B got the rest");
    for key in keys {
        assert_eq!(
            acked.get(key),
            sent.get(key),
            "{key}: each once, in the order published"
        );
    }
}
