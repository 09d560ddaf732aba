//! Conformance checks of dead letters, idempotency, ordering and back-pressure.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::*;

/// Dead letters are listed (filter, pagination), replayed, and due again.
pub async fn dead_letter_and_replay<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(
    factory: &F,
) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = &*h.broker;
    let mut t1 = Vec::new();
    for i in 0..3 {
        t1.push(accepted(b, request("t1", &["a"], &format!("body{i}"))).await);
    }
    let other = accepted(b, request("t2", &["b"], "other")).await;
    let now = now_ms();
    for d in lease(b, "a", now)
        .await
        .iter()
        .chain(lease(b, "b", now).await.iter())
    {
        b.retry_later(d, attempt("status 500"), now).await.unwrap();
    }
    for d in lease(b, "a", now)
        .await
        .iter()
        .chain(lease(b, "b", now).await.iter())
    {
        b.dead_letter(d, answered(500), "max attempts".into())
            .await
            .unwrap();
    }
    let depth = b.depth();
    assert_eq!((depth.total, depth.dlq_total), (0, 4));
    assert_eq!(depth.dlq.get("t1"), Some(&3));
    let t1_filter = DlqFilter {
        topic: Some("t1".into()),
        subscriber: None,
    };
    let page = b.dlq_list(t1_filter.clone(), None, 2).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = b
        .dlq_list(t1_filter.clone(), page.next.clone(), 2)
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.next.clone()), (1, None));
    let listed: Vec<_> = page
        .items
        .iter()
        .chain(&rest.items)
        .map(|d| d.message.id.clone())
        .collect();
    assert_eq!(listed, t1, "oldest first, every one once");
    let first = &page.items[0];
    assert_eq!(first.id, dead_letter_id(t1[0].as_str(), "a"));
    assert_eq!(
        (first.subscriber.as_str(), first.reason.as_str()),
        ("a", "max attempts")
    );
    assert_eq!(first.message.body, Bytes::from_static(b"body0"));
    assert_eq!(first.message.headers[0].0, "traceparent");
    assert_eq!(first.attempts.len(), 2);
    assert_eq!(
        first.attempts.last().unwrap().response,
        answered(500).response,
        "the subscriber's answer is kept with its attempt"
    );
    let by_sub = b
        .dlq_list(
            DlqFilter {
                topic: None,
                subscriber: Some("b".into()),
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        by_sub
            .items
            .iter()
            .map(|d| &d.message.id)
            .collect::<Vec<_>>(),
        vec![&other]
    );
    assert_eq!(
        state_of(b, &t1[0], "a").await.state,
        DeliveryState::Dead {
            reason: "max attempts".into()
        }
    );

    assert!(matches!(
        b.dlq_apply("nope:a", DlqAction::Replay).await,
        Err(QueueError::NotFound)
    ));
    b.dlq_apply(&first.id, DlqAction::Replay).await.unwrap();
    assert!(
        matches!(
            b.dlq_apply(&first.id, DlqAction::Replay).await,
            Err(QueueError::NotFound)
        ),
        "replayed once"
    );
    let depth = b.depth();
    assert_eq!((depth.total, depth.dlq_total), (1, 3));
    let st = state_of(b, &t1[0], "a").await;
    assert_eq!(
        (st.attempts, st.history.len()),
        (0, 2),
        "attempts reset, history kept"
    );
    let d = lease(b, "a", now_ms())
        .await
        .pop()
        .expect("replayed delivery is due now");
    assert_eq!((d.message.id.clone(), d.attempts), (t1[0].clone(), 0));
    assert_eq!(d.message.body, Bytes::from_static(b"body0"));
    b.ack(&d, attempt("status 200")).await.unwrap();
    assert_eq!(state_of(b, &t1[0], "a").await.history.len(), 3);

    assert_eq!(
        b.dlq_apply_all(t1_filter.clone(), DlqAction::Replay)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        b.dlq_list(t1_filter, None, 10).await.unwrap().items.len(),
        0
    );
    assert_eq!(b.depth().dlq_total, 1, "other topics untouched");
    assert_eq!(ids(&lease(b, "a", now_ms()).await), {
        let mut v = vec![t1[1].as_str(), t1[2].as_str()];
        v.sort_unstable();
        v
    });
    assert_eq!(
        b.dlq_apply_all(DlqFilter::default(), DlqAction::Replay)
            .await
            .unwrap(),
        1
    );
    assert_eq!(b.depth().dlq_total, 0);
}

/// A repeated idempotency key returns the original id and creates nothing.
pub async fn idempotency<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(factory: &F) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = &*h.broker;
    let mut req = request("orders", &["s"], "x");
    req.idempotency_key = Some("key-1".into());
    let id = accepted(b, req.clone()).await;
    assert_eq!(
        b.enqueue(req.clone()).await.unwrap(),
        EnqueueOutcome::Duplicate(id.clone())
    );
    assert_eq!(b.depth().total, 1);
    let mut other_topic = req.clone();
    other_topic.topic = "users".into();
    let id2 = accepted(b, other_topic).await;
    assert_ne!(id, id2, "keys are per topic");
    let got = lease(b, "s", now_ms()).await;
    assert_eq!(got.len(), 2, "one delivery per accepted message");
    assert_eq!(got.iter().filter(|d| d.message.id == id).count(), 1);
    let mut short = request("ttl", &["s"], "x");
    short.idempotency_key = Some("k".into());
    short.idempotency_ttl = Duration::ZERO;
    let a = accepted(b, short.clone()).await;
    let c = accepted(b, short).await;
    assert_ne!(a, c, "an expired key no longer deduplicates");
}

/// Per (subscriber, key), only the oldest undelivered message is leasable.
pub async fn ordering<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(factory: &F) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = &*h.broker;
    let keyed = |key: &str, body: &str| {
        let mut r = request("orders", &["a", "b"], body);
        r.ordering_key = Some(key.to_owned());
        r
    };
    let m1 = accepted(b, keyed("k", "m1")).await;
    let m2 = accepted(b, keyed("k", "m2")).await;
    let m3 = accepted(b, keyed("k", "m3")).await;
    let n1 = accepted(b, keyed("j", "n1")).await;
    let u1 = accepted(b, request("orders", &["a"], "u1")).await;
    let now = now_ms();
    let first = lease(b, "a", now).await;
    let mut want = vec![m1.as_str(), n1.as_str(), u1.as_str()];
    want.sort_unstable();
    assert_eq!(
        ids(&first),
        want,
        "heads of each key and unkeyed ones in parallel"
    );
    assert!(lease(b, "a", now).await.is_empty());
    let head_b = lease(b, "b", now).await;
    assert_eq!(
        ids(&head_b),
        {
            let mut v = vec![m1.as_str(), n1.as_str()];
            v.sort_unstable();
            v
        },
        "each subscriber has its own chain"
    );
    let d1 = first.iter().find(|d| d.message.id == m1).unwrap();
    b.retry_later(d1, attempt("status 503"), now + 1_000)
        .await
        .unwrap();
    assert!(
        lease(b, "a", now + 500).await.is_empty(),
        "a retrying head still blocks its key"
    );
    let d1 = lease(b, "a", now + 1_000)
        .await
        .pop()
        .expect("head due after backoff");
    assert_eq!(d1.message.id, m1);
    b.ack(&d1, attempt("status 200")).await.unwrap();
    let d2 = lease(b, "a", now + 1_000).await;
    assert_eq!(
        ids(&d2),
        vec![m2.as_str()],
        "next in line once the head is delivered"
    );
    b.dead_letter(&d2[0], attempt("status 500"), "gave up".into())
        .await
        .unwrap();
    let d3 = lease(b, "a", now + 1_000).await;
    assert_eq!(
        ids(&d3),
        vec![m3.as_str()],
        "a dead head also unblocks its key"
    );
    b.dlq_apply(&dead_letter_id(m2.as_str(), "a"), DlqAction::Replay)
        .await
        .unwrap();
    assert!(
        lease(b, "a", now + 1_000).await.is_empty(),
        "a replayed message waits behind its key"
    );
    b.ack(&d3[0], attempt("status 200")).await.unwrap();
    let again = lease(b, "a", now_ms()).await;
    assert_eq!(ids(&again), vec![m2.as_str()]);
}

/// Past `max_depth`, enqueue fails with `Full`; a duplicate is still answered.
pub async fn full<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(factory: &F) {
    let h = make(
        factory,
        BrokerOptions {
            max_depth: Some(2),
            ..BrokerOptions::default()
        },
    )
    .await;
    let b = &*h.broker;
    let mut first = request("t", &["s"], "1");
    first.idempotency_key = Some("one".into());
    let id = accepted(b, first.clone()).await;
    accepted(b, request("u", &["s"], "2")).await;
    match b.enqueue(request("t", &["s"], "3")).await {
        Err(QueueError::Full { depth, max }) => assert_eq!((depth, max), (2, 2)),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(
        b.enqueue(first).await.unwrap(),
        EnqueueOutcome::Duplicate(id)
    );
    assert_eq!(b.depth().total, 2, "a refused message leaves no trace");
    let d = lease(b, "s", now_ms()).await;
    assert_eq!(d.len(), 2);
    b.ack(&d[0], attempt("status 200")).await.unwrap();
    accepted(b, request("t", &["s"], "3")).await;
}

/// `max_depth` bounds each subscriber's backlog: a dead subscriber that is full
/// gets new events as dead letters (reason "backlog full") while a healthy one of
/// the same topic keeps receiving them; an event only for full subscribers is
/// refused.
pub async fn full_subscriber_sheds_alone<
    F: Fn(BrokerOptions) -> Fut,
    Fut: Future<Output = Harness>,
>(
    factory: &F,
) {
    let h = make(
        factory,
        BrokerOptions {
            max_depth: Some(2),
            on_full: OnFull::Reject,
        },
    )
    .await;
    let b = &*h.broker;
    for i in 0..2 {
        accepted(b, request("t", &["dead", "live"], &format!("{i}"))).await;
    }
    for d in lease(b, "live", now_ms()).await {
        b.ack(&d, attempt("status 200")).await.unwrap();
    }
    let third = accepted(b, request("t", &["dead", "live"], "2")).await;
    let got = lease(b, "live", now_ms()).await;
    assert_eq!(ids(&got), vec![third.as_str()], "the healthy one gets it");
    assert!(state_of(b, &third, "live")
        .await
        .next_attempt_at_ms
        .is_some());
    let shed = state_of(b, &third, "dead").await;
    assert!(
        matches!(&shed.state, DeliveryState::Dead { reason } if reason.starts_with(BACKLOG_FULL)),
        "{:?}",
        shed.state
    );
    let page = b
        .dlq_list(
            DlqFilter {
                topic: None,
                subscriber: Some("dead".into()),
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].message.id, third);
    assert!(page.items[0].reason.starts_with(BACKLOG_FULL));
    let depth = b.depth();
    assert_eq!(depth.subscribers.get("dead"), Some(&2), "{depth:?}");
    assert_eq!(depth.subscribers.get("live"), Some(&1), "{depth:?}");
    match b.enqueue(request("t", &["dead"], "3")).await {
        Err(QueueError::Full { depth, max }) => assert_eq!((depth, max), (2, 2)),
        other => panic!("expected Full, got {other:?}"),
    }
    // Room again once it takes one.
    let d = lease(b, "dead", now_ms()).await;
    b.ack(&d[0], attempt("status 200")).await.unwrap();
    accepted(b, request("t", &["dead"], "4")).await;
}

/// With `on_full: dead_letter_oldest` a full subscriber's oldest waiting event
/// becomes a dead letter and the new one is queued; one it holds is never taken
/// (when it holds them all, the event is refused).
pub async fn full_subscriber_dead_letters_its_oldest<
    F: Fn(BrokerOptions) -> Fut,
    Fut: Future<Output = Harness>,
>(
    factory: &F,
) {
    let h = make(
        factory,
        BrokerOptions {
            max_depth: Some(2),
            on_full: OnFull::DeadLetterOldest,
        },
    )
    .await;
    let b = &*h.broker;
    let first = accepted(b, request("t", &["s"], "1")).await;
    let second = accepted(b, request("t", &["s"], "2")).await;
    let third = accepted(b, request("t", &["s"], "3")).await;
    let first_state = state_of(b, &first, "s").await;
    assert!(
        matches!(&first_state.state, DeliveryState::Dead { reason } if reason.starts_with(BACKLOG_FULL)),
        "{:?}",
        first_state.state
    );
    assert_eq!(b.depth().subscribers.get("s"), Some(&2));
    let held = lease(b, "s", now_ms()).await;
    assert_eq!(ids(&held), {
        let mut v = vec![second.as_str(), third.as_str()];
        v.sort_unstable();
        v
    });
    // Both are in flight: nothing to make room with, so it is refused.
    match b.enqueue(request("t", &["s"], "4")).await {
        Err(QueueError::Full { depth, max }) => assert_eq!((depth, max), (2, 2)),
        other => panic!("expected Full, got {other:?}"),
    }
    for d in &held {
        b.ack(d, attempt("status 200")).await.unwrap();
    }
    assert_eq!(b.depth().subscribers.get("s"), Some(&0));
    assert_eq!(b.depth().dlq_total, 1);
}
