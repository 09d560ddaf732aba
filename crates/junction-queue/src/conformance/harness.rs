//! What the contract suite's checks share: the harness, unique names, and
//! publishing, subscribing and collecting through [`Queue`].

use std::any::Any;
use std::time::{Duration, Instant};

use crate::contract::*;
use crate::types::*;

/// A queue under test plus whatever must live as long as it.
pub struct QueueHarness {
    /// The queue to test.
    pub queue: Queue,
    _guard: Box<dyn Any + Send + Sync>,
}

impl QueueHarness {
    /// Wraps a queue and the resources it needs.
    pub fn new(queue: Queue, guard: impl Any + Send + Sync) -> Self {
        Self {
            queue,
            _guard: Box::new(guard),
        }
    }
}

/// A name no other run uses.
pub fn unique(base: &str) -> String {
    format!(
        "{base}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

/// Collects deliveries from `sub` until `n` arrived or `within` passed (plus
/// up to the second `next` may wait: it is never cancelled, since a cancelled
/// `next` may hold deliveries no one will settle).
pub async fn take(sub: &mut dyn Subscription, n: usize, within: Duration) -> Vec<Delivery> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < end {
        got.extend(sub.next(n - got.len()).await.expect("subscription"));
    }
    got
}

/// Asserts nothing is delivered to `sub` for `quiet`.
pub(super) async fn nothing_for(sub: &mut dyn Subscription, quiet: Duration, why: &str) {
    let got = take(sub, 1, quiet).await;
    assert!(got.is_empty(), "{why}: got {:?}", got.first());
}

pub(super) async fn published(q: &Queue, req: EnqueueRequest) -> MessageId {
    match q.publisher.publish(req).await.expect("publish") {
        EnqueueOutcome::Accepted(id) => id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

pub(super) async fn subscribe(q: &Queue, topic: &str, sub: &str) -> Box<dyn Subscription> {
    q.consumer
        .subscribe(topic, sub, 16)
        .await
        .expect("subscribe")
}

pub(super) const WAIT: Duration = Duration::from_secs(10);
