//! Conformance checks of the delivery cycle: lease, ack, retry, release, wake-ups.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;

/// Enqueue, lease, ack: the message is delivered once and leaves the depth.
pub async fn enqueue_lease_ack<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(
    factory: &F,
) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = &*h.broker;
    let id = accepted(b, request("orders", &["inventory"], r#"{"id":1}"#)).await;
    assert_eq!(b.depth().total, 1);
    assert_eq!(b.depth().topics.get("orders"), Some(&1));
    let now = now_ms();
    let got = lease(b, "inventory", now).await;
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(d.message.id, id);
    assert_eq!(d.message.body, Bytes::from_static(br#"{"id":1}"#));
    assert_eq!(d.message.content_type.as_deref(), Some("application/json"));
    assert_eq!(d.message.headers[0].0, "traceparent");
    assert_eq!(d.message.topic, "orders");
    assert_eq!(d.subscriber, "inventory");
    assert_eq!(d.attempts, 0);
    assert!(d.first_enqueued_ms <= now);
    assert!(
        lease(b, "inventory", now).await.is_empty(),
        "a leased delivery is not leased twice"
    );
    assert!(
        lease(b, "other", now).await.is_empty(),
        "only its subscribers see it"
    );
    b.ack(d, attempt("status 200")).await.expect("ack");
    b.ack(d, attempt("status 200"))
        .await
        .expect("second ack is a no-op");
    assert!(lease(b, "inventory", now + 3_600_000).await.is_empty());
    assert_eq!(b.next_due_at("inventory").await.expect("next_due_at"), None);
    let depth = b.depth();
    assert_eq!((depth.total, depth.dlq_total), (0, 0));
    let status = b
        .message_status(id.as_str())
        .await
        .expect("status")
        .expect("completed record kept");
    assert!(status.completed_at_ms.is_some());
    let s = &status.subscribers[0];
    assert_eq!(s.state, DeliveryState::Delivered);
    assert_eq!((s.attempts, s.history.len(), s.leased), (1, 1, false));
    assert_eq!(s.history[0].outcome, "status 200");
}

/// Each subscriber gets its own delivery with its own state.
pub async fn fan_out<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(factory: &F) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = &*h.broker;
    let id = accepted(b, request("orders", &["a", "b", "c", "a"], "x")).await;
    let now = now_ms();
    let (a, bb, c) = (
        lease(b, "a", now).await,
        lease(b, "b", now).await,
        lease(b, "c", now).await,
    );
    assert_eq!(
        (a.len(), bb.len(), c.len()),
        (1, 1, 1),
        "one delivery per distinct subscriber"
    );
    b.ack(&a[0], attempt("status 200")).await.unwrap();
    b.retry_later(&bb[0], attempt("status 503"), now + 10_000)
        .await
        .unwrap();
    assert_eq!(state_of(b, &id, "a").await.state, DeliveryState::Delivered);
    assert_eq!(
        state_of(b, &id, "b").await.next_attempt_at_ms,
        Some(now + 10_000)
    );
    assert!(state_of(b, &id, "c").await.leased);
    assert_eq!(
        b.depth().total,
        1,
        "undelivered while any subscriber is pending"
    );
    b.ack(&c[0], attempt("status 204")).await.unwrap();
    let again = lease(b, "b", now + 10_000).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    b.ack(&again[0], attempt("status 200")).await.unwrap();
    assert_eq!(b.depth().total, 0);
}

/// `retry_later` makes a delivery due again at the given time, not before.
pub async fn retry_later<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(factory: &F) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = &*h.broker;
    let id = accepted(b, request("t", &["s"], "x")).await;
    let now = now_ms();
    let d = lease(b, "s", now).await.pop().expect("due");
    let at = now + 60_000;
    b.retry_later(&d, attempt("timeout"), at).await.unwrap();
    assert!(lease(b, "s", now).await.is_empty());
    assert!(
        lease(b, "s", at - 1).await.is_empty(),
        "not due before its time"
    );
    assert_eq!(b.next_due_at("s").await.unwrap(), Some(at));
    let st = state_of(b, &id, "s").await;
    assert_eq!(
        (st.attempts, st.next_attempt_at_ms, st.leased),
        (1, Some(at), false)
    );
    let d = lease(b, "s", at).await.pop().expect("due at its time");
    assert_eq!(d.attempts, 1);
    assert_eq!(
        b.next_due_at("s").await.unwrap(),
        None,
        "leased ones are not waited for"
    );
    b.retry_later(&d, attempt("status 503"), at + 1)
        .await
        .unwrap();
    let d = lease(b, "s", at + 1).await.pop().expect("due again");
    assert_eq!(d.attempts, 2);
    let hist = state_of(b, &id, "s").await.history;
    assert_eq!(
        hist.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(hist[1].outcome, "status 503");
}

/// A released lease makes the delivery due again without recording an attempt.
pub async fn release<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(factory: &F) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = &*h.broker;
    accepted(b, request("t", &["s"], "x")).await;
    let now = now_ms();
    let d = lease(b, "s", now).await.pop().expect("due");
    assert!(lease(b, "s", now).await.is_empty());
    b.release(&d).await;
    b.release(&d).await;
    let again = lease(b, "s", now).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0);
    assert_eq!(b.depth().total, 1);
}

/// The notifier wakes a waiting dispatcher when something becomes due.
pub async fn notifier<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(factory: &F) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = Arc::clone(&h.broker);
    let n = b.notifier("s");
    let waiter = tokio::spawn(async move { n.notified().await });
    tokio::task::yield_now().await;
    accepted(&*b, request("t", &["s"], "x")).await;
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken by enqueue")
        .unwrap();
    let d = lease(&*b, "s", now_ms()).await.pop().unwrap();
    let n = b.notifier("s");
    // Drop the permit left by the enqueue's wake-up, so only the retry can wake us.
    let _ = tokio::time::timeout(Duration::ZERO, n.notified()).await;
    b.retry_later(&d, attempt("timeout"), now_ms() + 50)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), n.notified())
        .await
        .expect("woken by a scheduled retry");
}

/// Unknown ids are reported, not invented.
pub async fn unknown_ids<F: Fn(BrokerOptions) -> Fut, Fut: Future<Output = Harness>>(factory: &F) {
    let h = make(factory, BrokerOptions::default()).await;
    let b = &*h.broker;
    assert!(b
        .message_status("0190aaaa-0000-7000-8000-000000000000")
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        b.dlq_apply("x:y", DlqAction::Replay).await,
        Err(QueueError::NotFound)
    ));
    assert_eq!(
        b.dlq_apply_all(DlqFilter::default(), DlqAction::Replay)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        b.dlq_list(DlqFilter::default(), None, 10).await.unwrap(),
        DlqPage::default()
    );
    assert_eq!(b.next_due_at("nobody").await.unwrap(), None);
}
