//! The contract suite: every backend, store-backed or broker-native, passes it
//! through [`Queue`] alone, on real time (short delays) and real servers.
//!
//! Each check makes its own topic and subscriber names (unique per run), so
//! checks run in parallel on one shared broker and rerun cleanly; the factory
//! may clean up what a name created when its harness is dropped.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use super::harness::{nothing_for, published, subscribe, WAIT};
pub use super::harness::{take, unique, QueueHarness};
pub use super::ordering::{ordering_per_key_across_consumers, ordering_per_key_one_at_a_time};
use super::{answered, attempt, request};
use crate::types::*;

/// Expands to one `#[tokio::test]` per contract check, each calling `$factory`.
#[macro_export]
macro_rules! queue_conformance_suite {
    ($factory:path) => {
        $crate::queue_conformance_suite!(@tests $factory;
            publish_fans_out_and_ack_completes, retry_waits_its_delay,
            dead_letter_list_replay_purge, release_redelivers_at_once,
            ordering_per_key_one_at_a_time, ordering_per_key_across_consumers,
            competing_consumers_share_without_duplicates,
            idempotent_publish, a_stuck_subscriber_holds_up_no_other);
    };
    (@tests $factory:path; $($check:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            $crate::conformance::queue::$check(&$factory).await;
        }
    )*};
}

/// Every subscriber named at publish gets the message once; acks complete it.
pub async fn publish_fans_out_and_ack_completes<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    let (topic, a, b) = (unique("orders"), unique("inventory"), unique("analytics"));
    let (mut sa, mut sb) = (
        subscribe(q, &topic, &a).await,
        subscribe(q, &topic, &b).await,
    );
    let id = published(q, request(&topic, &[&a, &b], "{\"order\":1}")).await;
    for (s, name) in [(&mut sa, &a), (&mut sb, &b)] {
        let got = take(s.as_mut(), 1, WAIT).await;
        assert_eq!(got.len(), 1, "{name} gets the message");
        let d = got.into_iter().next().unwrap();
        assert_eq!((d.message.id.clone(), d.attempts), (id.clone(), 0));
        assert_eq!(&d.subscriber, name);
        assert_eq!(&d.message.body[..], b"{\"order\":1}");
        assert_eq!(d.message.topic, topic);
        assert_eq!(d.message.content_type.as_deref(), Some("application/json"));
        assert!(
            d.message.headers.iter().any(|(k, _)| k == "traceparent"),
            "headers travel with the message"
        );
        d.ack(attempt("status 200")).await.expect("ack");
    }
    nothing_for(
        sa.as_mut(),
        Duration::from_millis(500),
        "acked, not redelivered",
    )
    .await;
    if !q.capabilities.message_status {
        assert!(matches!(
            q.ledger.message_status(id.as_str()).await,
            Err(QueueError::Unsupported(_))
        ));
        return;
    }
    let status = q
        .ledger
        .message_status(id.as_str())
        .await
        .expect("status")
        .expect("the message is known");
    assert_eq!(status.subscribers.len(), 2);
    for s in &status.subscribers {
        assert_eq!(s.state, DeliveryState::Delivered, "{}", s.subscriber);
        assert_eq!(s.history.len(), 1, "the attempt is recorded");
    }
    assert!(q
        .ledger
        .message_status("0190aaaa-0000-7000-8000-000000000000")
        .await
        .expect("status of an unknown id")
        .is_none());
}

/// `retry(after)` redelivers no sooner than `after`, with one more attempt counted.
pub async fn retry_waits_its_delay<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    let (topic, s) = (unique("t"), unique("s"));
    let mut sub = subscribe(q, &topic, &s).await;
    let id = published(q, request(&topic, &[&s], "x")).await;
    let d = take(sub.as_mut(), 1, WAIT)
        .await
        .pop()
        .expect("first delivery");
    let delay = Duration::from_millis(1500);
    let t0 = Instant::now();
    d.retry(attempt("status 503"), delay).await.expect("retry");
    let again = take(sub.as_mut(), 1, WAIT)
        .await
        .pop()
        .expect("redelivered");
    let waited = t0.elapsed();
    // Tiered delays round up, never down; a little slack for clocks.
    assert!(
        waited >= delay - Duration::from_millis(100),
        "redelivered after {waited:?}, asked {delay:?}"
    );
    assert_eq!((again.message.id.clone(), again.attempts), (id.clone(), 1));
    again.ack(attempt("status 200")).await.expect("ack");
    if q.capabilities.message_status {
        let st = q.ledger.message_status(id.as_str()).await.unwrap().unwrap();
        assert_eq!(st.subscribers[0].state, DeliveryState::Delivered);
        assert_eq!(st.subscribers[0].history.len(), 2);
    }
}

/// Dead letters are listed (with reason and filter), replayed (attempts reset,
/// delivered again) and purged.
pub async fn dead_letter_list_replay_purge<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    let (topic, s) = (unique("t"), unique("s"));
    let mut sub = subscribe(q, &topic, &s).await;
    let id = published(q, request(&topic, &[&s], "poison")).await;
    let d = take(sub.as_mut(), 1, WAIT).await.pop().expect("delivery");
    d.dead_letter(answered(400), "rejected by the subscriber".into())
        .await
        .expect("dead-letter");
    let filter = DlqFilter {
        topic: Some(topic.clone()),
        subscriber: Some(s.clone()),
    };
    let page = q
        .ledger
        .dlq_list(filter.clone(), None, 10)
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
    let dead = &page.items[0];
    assert_eq!(dead.id, dead_letter_id(id.as_str(), &s));
    assert_eq!(dead.reason, "rejected by the subscriber");
    assert_eq!(dead.attempts.len(), 1, "the history travels with it");
    assert_eq!(
        dead.attempts[0].response,
        answered(400).response,
        "with the subscriber's answer"
    );
    assert_eq!(
        &dead.message.body[..],
        b"poison",
        "the body is kept for replay"
    );
    assert!(q
        .ledger
        .dlq_list(
            DlqFilter {
                topic: Some(unique("other")),
                subscriber: None
            },
            None,
            10
        )
        .await
        .unwrap()
        .items
        .is_empty());
    if q.capabilities.message_status {
        let st = q.ledger.message_status(id.as_str()).await.unwrap().unwrap();
        assert!(matches!(
            st.subscribers[0].state,
            DeliveryState::Dead { .. }
        ));
    }
    nothing_for(
        sub.as_mut(),
        Duration::from_millis(300),
        "dead, not redelivered",
    )
    .await;

    q.ledger
        .dlq_apply(&dead.id, DlqAction::Replay)
        .await
        .expect("replay");
    let again = take(sub.as_mut(), 1, WAIT).await.pop().expect("replayed");
    assert_eq!((again.message.id.clone(), again.attempts), (id.clone(), 0));
    assert!(q
        .ledger
        .dlq_list(filter.clone(), None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    again
        .dead_letter(attempt("status 400"), "still rejected".into())
        .await
        .unwrap();
    assert_eq!(
        q.ledger
            .dlq_apply_all(filter.clone(), DlqAction::Purge)
            .await
            .unwrap(),
        1
    );
    assert!(q
        .ledger
        .dlq_list(filter.clone(), None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(matches!(
        q.ledger.dlq_apply(&dead.id, DlqAction::Replay).await,
        Err(QueueError::NotFound)
    ));
    nothing_for(sub.as_mut(), Duration::from_millis(300), "purged, gone").await;
}

/// A released delivery comes back at once, no attempt counted.
pub async fn release_redelivers_at_once<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    let (topic, s) = (unique("t"), unique("s"));
    let mut sub = subscribe(q, &topic, &s).await;
    let id = published(q, request(&topic, &[&s], "x")).await;
    let d = take(sub.as_mut(), 1, WAIT).await.pop().expect("delivery");
    d.release().await.expect("release");
    let again = take(sub.as_mut(), 1, Duration::from_secs(5))
        .await
        .pop()
        .expect("released deliveries come back promptly");
    assert_eq!((again.message.id.clone(), again.attempts), (id, 0));
    again.ack(attempt("status 200")).await.unwrap();
}

/// Two consumers of one subscriber (two instances) share its messages: each
/// delivered once, none lost, none twice when nothing fails.
pub async fn competing_consumers_share_without_duplicates<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    let (topic, s) = (unique("t"), unique("s"));
    let subs = [
        subscribe(q, &topic, &s).await,
        subscribe(q, &topic, &s).await,
    ];
    const N: usize = 60;
    let mut sent = HashSet::new();
    for i in 0..N {
        sent.insert(published(q, request(&topic, &[&s], &i.to_string())).await);
    }
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let end = Instant::now() + WAIT;
    let tasks: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            let seen = seen.clone();
            tokio::spawn(async move {
                while seen.lock().len() < N && Instant::now() < end {
                    for d in sub.next(8).await.expect("subscription") {
                        seen.lock().push(d.message.id.clone());
                        d.ack(attempt("status 200")).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().clone();
    let unique_seen: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique_seen, sent, "every message delivered");
    assert_eq!(seen.len(), N, "none delivered twice");
}

/// A repeated idempotency key returns the first id and publishes nothing.
pub async fn idempotent_publish<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    let (topic, s) = (unique("t"), unique("s"));
    let mut sub = subscribe(q, &topic, &s).await;
    let mut req = request(&topic, &[&s], "x");
    req.idempotency_key = Some("order-42".into());
    let first = published(q, req.clone()).await;
    match q.publisher.publish(req).await.unwrap() {
        EnqueueOutcome::Duplicate(id) => assert_eq!(id, first),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    let got = take(sub.as_mut(), 2, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "delivered once");
}

/// A subscriber that takes deliveries and never settles them (hung, or its
/// instance stuck) delays no other subscriber of the topic, and the backlog
/// each one shows is its own.
pub async fn a_stuck_subscriber_holds_up_no_other<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    let (topic, stuck, healthy) = (unique("t"), unique("stuck"), unique("healthy"));
    let mut s_stuck = subscribe(q, &topic, &stuck).await;
    let mut s_ok = subscribe(q, &topic, &healthy).await;
    const N: usize = 20;
    for i in 0..N {
        published(q, request(&topic, &[&stuck, &healthy], &i.to_string())).await;
    }
    let held = take(s_stuck.as_mut(), 5, WAIT).await;
    assert!(!held.is_empty(), "the stuck subscriber got some");
    let mut got = 0;
    let end = Instant::now() + WAIT;
    while got < N && Instant::now() < end {
        for d in s_ok.next(N).await.expect("subscription") {
            d.ack(attempt("status 200")).await.unwrap();
            got += 1;
        }
    }
    assert_eq!(got, N, "the healthy subscriber got every message");
    // Each subscriber's backlog is its own (brokers' counts are refreshed every
    // few seconds): the stuck one's stays, the healthy one's drains. Exact
    // counts include what it holds; RabbitMQ's ready count leaves out what
    // consumers hold (at most the prefetch), so there only "some".
    let want_stuck = if q.capabilities.exact_depth {
        N as u64
    } else {
        1
    };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let d = q.ledger.depth();
        let stuck_n = d.subscribers.get(&stuck).copied().unwrap_or(0);
        let ok_n = d.subscribers.get(&healthy).copied().unwrap_or(0);
        let stuck_ok = if q.capabilities.exact_depth {
            stuck_n == want_stuck
        } else {
            stuck_n >= want_stuck
        };
        if stuck_ok && ok_n == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "backlogs: stuck {stuck_n} (want at least {want_stuck}), healthy {ok_n} (want 0)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held); // never settled: redelivered later, to this or another consumer
}
