//! The conformance suites: [`queue`] (the contract every backend passes) and,
//! in this module, the store suite every [`IndexedStore`] passes.
//!
//! Each check is a public async function taking a factory that builds a fresh,
//! empty broker (with the given [`BrokerOptions`]); [`crate::conformance_suite!`] turns
//! them into one `#[tokio::test]` each, so a backend's test file is one line:
//! `junction_queue::conformance_suite!(my_factory);`.
//! The checks only use the trait, never backend internals, and use explicit
//! `now_ms` values rather than sleeping, so they are fast and deterministic.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::store::IndexedStore;
use crate::types::*;

mod delivery;
mod features;
mod harness;
mod ordering;
pub mod queue;

pub use delivery::*;
pub use features::*;

/// Options a check needs from the broker it gets.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// Back-pressure limit: events waiting per subscriber.
    pub max_depth: Option<u64>,
    /// What a subscriber past `max_depth` does with a new event.
    pub on_full: OnFull,
}

/// A broker under test plus whatever must live as long as it (e.g. a temp dir).
pub struct Harness {
    /// The broker to test.
    pub broker: Arc<dyn IndexedStore>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl Harness {
    /// Wraps a broker and the resources it needs.
    pub fn new(broker: Arc<dyn IndexedStore>, guard: impl Any + Send + Sync) -> Self {
        Self {
            broker,
            _guard: Box::new(guard),
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance check, each calling `$factory`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@tests $factory;
            enqueue_lease_ack, fan_out, retry_later, release, dead_letter_and_replay,
            idempotency, ordering, full, full_subscriber_sheds_alone,
            full_subscriber_dead_letters_its_oldest, notifier, unknown_ids);
    };
    (@tests $factory:path; $($check:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            $crate::conformance::$check(&$factory).await;
        }
    )*};
}

/// Current time in unix ms (the backends' clock).
pub fn now_ms() -> u64 {
    crate::types::now_ms()
}

/// A plain request to `topic` for `subscribers`.
pub fn request(topic: &str, subscribers: &[&str], body: &str) -> EnqueueRequest {
    EnqueueRequest {
        topic: topic.to_owned(),
        body: Bytes::from(body.to_owned()),
        content_type: Some("application/json".to_owned()),
        headers: vec![(
            "traceparent".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        )],
        ordering_key: None,
        subscribers: subscribers.iter().map(|s| (*s).to_owned()).collect(),
        idempotency_key: None,
        idempotency_ttl: Duration::from_secs(3600),
    }
}

pub(crate) fn attempt(outcome: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: 0,
        at_ms: now_ms(),
        outcome: outcome.to_owned(),
        duration_ms: 3,
        response: None,
    }
}

/// A failed attempt with what the subscriber answered (pipes, quotes, a
/// newline, a NUL and a control byte in it, as real answers have).
pub(crate) fn answered(status: u16) -> AttemptRecord {
    AttemptRecord {
        response: Some(crate::ResponseSample::new(
            status,
            [
                ("content-type", &b"application/json"[..]),
                ("x-why", b"a | b"),
            ],
            b"{\"error\": \"quota | \\\"exceeded\\\"\"}\n\x00\x1f",
        )),
        ..attempt(&format!("status {status}"))
    }
}

pub(crate) async fn make<F, Fut>(factory: &F, opts: BrokerOptions) -> Harness
where
    F: Fn(BrokerOptions) -> Fut,
    Fut: Future<Output = Harness>,
{
    factory(opts).await
}

pub(crate) async fn accepted(b: &dyn IndexedStore, req: EnqueueRequest) -> MessageId {
    match b.enqueue(req).await.expect("enqueue") {
        EnqueueOutcome::Accepted(id) => id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

pub(crate) async fn lease(b: &dyn IndexedStore, sub: &str, now: u64) -> Vec<Lease> {
    b.lease_due(sub, now, 100).await.expect("lease_due")
}

pub(crate) fn ids(ds: &[Lease]) -> Vec<&str> {
    let mut v: Vec<&str> = ds.iter().map(|d| d.message.id.as_str()).collect();
    v.sort_unstable();
    v
}

pub(crate) async fn state_of(b: &dyn IndexedStore, id: &MessageId, sub: &str) -> SubscriberStatus {
    let status = b
        .message_status(id.as_str())
        .await
        .expect("status")
        .expect("message known");
    status
        .subscribers
        .into_iter()
        .find(|s| s.subscriber == sub)
        .expect("subscriber known")
}
