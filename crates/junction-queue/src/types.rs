//! The plain types every queue contract speaks: messages, delivery states, the
//! admin read model and the errors. Nothing here knows a backend.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Current wall-clock time in unix milliseconds (every backend's clock).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Most attempts kept in a delivery's history; older ones are dropped first.
pub const MAX_HISTORY: usize = 20;

/// A message id: a UUID v7 in its hyphenated lowercase form, so ids sort by time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// Wraps an id string as received (e.g. from an admin URL).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A fresh id for a new event: a UUIDv7, so ids sort by creation time
    /// (the backends that page or order by id rely on it).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for MessageId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// A durable message: what was accepted once and is fanned out to its subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Time-ordered unique id.
    pub id: MessageId,
    /// Topic it was published to.
    pub topic: String,
    /// The original body, delivered unchanged.
    pub body: Bytes,
    /// The original content type, if any.
    pub content_type: Option<String>,
    /// Headers to forward (e.g. `traceparent`).
    pub headers: Vec<(String, String)>,
    /// Messages sharing a key are delivered one at a time, oldest first, per subscriber.
    pub ordering_key: Option<String>,
    /// When it was accepted (unix ms).
    pub enqueued_at_ms: u64,
    /// Subscribers it must reach, fixed at enqueue.
    pub subscribers: Vec<String>,
}

/// What a publisher asks to enqueue.
#[derive(Clone, Debug)]
pub struct EnqueueRequest {
    /// Topic to publish to.
    pub topic: String,
    /// Body to deliver.
    pub body: Bytes,
    /// Content type to deliver with the body.
    pub content_type: Option<String>,
    /// Headers to forward to subscribers.
    pub headers: Vec<(String, String)>,
    /// Optional per-key ordering.
    pub ordering_key: Option<String>,
    /// Subscribers to deliver to (duplicates ignored; none: recorded as completed at once).
    pub subscribers: Vec<String>,
    /// A repeat with the same (topic, key) within `idempotency_ttl` returns the first id.
    pub idempotency_key: Option<String>,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: std::time::Duration,
}

/// Result of an enqueue that did not fail.
impl EnqueueRequest {
    /// The subscribers it names, each once, in the order named.
    pub fn distinct_subscribers(&self) -> Vec<String> {
        let mut subs: Vec<String> = Vec::with_capacity(self.subscribers.len());
        for sub in &self.subscribers {
            if !subs.contains(sub) {
                subs.push(sub.clone());
            }
        }
        subs
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// A new message was stored durably.
    Accepted(MessageId),
    /// The idempotency key was seen before; nothing was created.
    Duplicate(MessageId),
}

impl EnqueueOutcome {
    /// The message id, new or original.
    pub fn id(&self) -> &MessageId {
        match self {
            Self::Accepted(id) | Self::Duplicate(id) => id,
        }
    }
}

/// One delivery attempt, as recorded in a delivery's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number since the last reset (the broker assigns it: attempts so far + 1).
    pub attempt: u32,
    /// When the attempt started (unix ms).
    pub at_ms: u64,
    /// What happened: "status 200", "status 503", "timeout", "connect error", ...
    pub outcome: String,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// What the subscriber answered, for attempts that failed with a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<crate::response::ResponseSample>,
}

/// State of one (message, subscriber) delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting to be (re)delivered, not before `next_attempt_at_ms`.
    Pending {
        /// Earliest time of the next attempt (unix ms).
        next_attempt_at_ms: u64,
    },
    /// Acknowledged by the subscriber.
    Delivered,
    /// Given up; the delivery sits in the dead-letter queue.
    Dead {
        /// Why it was given up.
        reason: String,
    },
}

/// A leased delivery handed to the dispatcher.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The message to deliver (shared, cheap to clone).
    pub message: Arc<Message>,
    /// Who to deliver it to.
    pub subscriber: String,
    /// Attempts made so far (since the last replay).
    pub attempts: u32,
    /// When the message was first enqueued (unix ms), for `max_age`.
    pub first_enqueued_ms: u64,
}

/// Per-subscriber view of a message, for admins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriberStatus {
    /// Subscriber name.
    pub subscriber: String,
    /// Current state.
    pub state: DeliveryState,
    /// Attempts since the last replay.
    pub attempts: u32,
    /// Last attempts, oldest first (at most [`MAX_HISTORY`]).
    pub history: Vec<AttemptRecord>,
    /// When the next attempt is due, if pending.
    pub next_attempt_at_ms: Option<u64>,
    /// Whether a dispatcher holds it right now.
    pub leased: bool,
}

/// Delivery state of a message across its subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageStatus {
    /// Message id.
    pub id: MessageId,
    /// Topic.
    pub topic: String,
    /// Ordering key, if any.
    pub ordering_key: Option<String>,
    /// When it was accepted (unix ms).
    pub enqueued_at_ms: u64,
    /// When every delivery reached a final state (the body is gone by then).
    pub completed_at_ms: Option<u64>,
    /// One entry per subscriber.
    pub subscribers: Vec<SubscriberStatus>,
}

/// A dead delivery with everything needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Dead-letter id: `"<message id>:<subscriber>"`.
    pub id: String,
    /// The message, body included.
    pub message: Message,
    /// Subscriber that gave up.
    pub subscriber: String,
    /// Attempt history at the time it died.
    pub attempts: Vec<AttemptRecord>,
    /// Why it died.
    pub reason: String,
    /// When it died (unix ms).
    pub dead_at_ms: u64,
}

/// Which dead letters to list or replay; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqFilter {
    /// Only this topic.
    pub topic: Option<String>,
    /// Only this subscriber.
    pub subscriber: Option<String>,
}

impl DlqFilter {
    /// Whether a dead letter of `topic` for `subscriber` matches.
    pub fn matches(&self, topic: &str, subscriber: &str) -> bool {
        self.topic.as_deref().is_none_or(|t| t == topic)
            && self.subscriber.as_deref().is_none_or(|s| s == subscriber)
    }
}

/// What to do with dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlqAction {
    /// Back to pending, due now, attempts reset.
    Replay,
    /// Discarded for good; the delivery's status stays dead.
    Purge,
}

/// One page of dead letters, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DlqPage {
    /// The dead letters of this page.
    pub items: Vec<DeadLetter>,
    /// Cursor for the next page (`after`), `None` on the last page.
    pub next: Option<String>,
}

impl DlqPage {
    /// The page after the cursor `after` (a dead-letter id) of `all`, which is
    /// already filtered and oldest first, for backends that list by scanning.
    pub fn from_sorted(all: &[&DeadLetter], after: Option<&str>, limit: usize) -> Self {
        let start = match after {
            Some(a) => all
                .iter()
                .position(|d| d.id == a)
                .map_or(all.len(), |i| i + 1),
            None => 0,
        };
        let items: Vec<DeadLetter> = all[start..]
            .iter()
            .take(limit)
            .map(|d| (*d).clone())
            .collect();
        let next = (all.len() > start + limit)
            .then(|| items.last().map(|d| d.id.clone()))
            .flatten();
        Self { items, next }
    }
}

/// Queue depth counters, for metrics and admission. A topic whose count dropped to
/// zero may stay listed at zero (so gauges fall to 0) or be omitted after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DepthSnapshot {
    /// Undelivered messages (at least one delivery pending) per topic.
    pub topics: BTreeMap<String, u64>,
    /// Dead letters per topic.
    pub dlq: BTreeMap<String, u64>,
    /// Sum of `topics`.
    pub total: u64,
    /// Sum of `dlq`.
    pub dlq_total: u64,
    /// Backlog per subscriber: events it has not received yet (waiting, retrying or
    /// in flight). Empty on backends that do not count it.
    pub subscribers: BTreeMap<String, u64>,
}

/// What a subscriber whose backlog reached `max_depth` does with a new event.
/// Either way the topic's other subscribers still get it, and nothing is dropped
/// unseen: what is shed becomes a dead letter (reason [`BACKLOG_FULL`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The new event is dead-lettered for that subscriber. When every subscriber
    /// of the event is full, the publish is refused ([`QueueError::Full`], 503).
    #[default]
    Reject,
    /// The subscriber's oldest waiting event (not in flight) is dead-lettered to
    /// make room; the new one is queued.
    DeadLetterOldest,
}

/// Start of the dead-letter reason of an event shed by a full backlog.
pub const BACKLOG_FULL: &str = "backlog full";

/// The outcome recorded on a delivery a full backlog shed (never attempted).
pub const SHED_OUTCOME: &str = "not attempted: backlog full";

/// The one attempt record of a delivery a full backlog shed, at `now_ms`.
pub fn shed_attempt(now_ms: u64) -> AttemptRecord {
    AttemptRecord {
        attempt: 0,
        at_ms: now_ms,
        outcome: SHED_OUTCOME.to_owned(),
        duration_ms: 0,
        response: None,
    }
}

/// The dead-letter reason of an event a full backlog shed.
pub fn backlog_full_reason(backlog: u64, max: u64, on_full: OnFull) -> String {
    let what = match on_full {
        OnFull::Reject => "the new event was refused",
        OnFull::DeadLetterOldest => "the oldest waiting event made room",
    };
    format!("{BACKLOG_FULL}: {backlog} waiting for this subscriber (max_depth {max}); {what}")
}

/// Why a queue operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum QueueError {
    /// Every subscriber of the event has a full backlog (or, where the backend
    /// limits the whole queue, too many undelivered messages); retry later (503 +
    /// Retry-After).
    #[error("queue full: {depth} events waiting (max_depth {max})")]
    Full {
        /// Backlog (or undelivered messages) now.
        depth: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The backend's storage failed; the operation did not take effect.
    #[error("queue storage failed: {0}")]
    Storage(#[source] StorageError),
    /// The message is larger than the backend takes (SQS: 256 KiB); nothing stored.
    #[error("message of {size} bytes is larger than the queue takes ({max})")]
    TooLarge {
        /// The message's size with its metadata.
        size: u64,
        /// The backend's limit.
        max: u64,
    },
    /// The broker was closed.
    #[error("queue is closed")]
    Closed,
    /// No such message or dead letter.
    #[error("not found")]
    NotFound,
    /// The backend cannot answer this (see its capabilities).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// A backend storage failure, keeping the backend's own error as the cause.
#[derive(Clone, Debug)]
pub struct StorageError {
    context: String,
    source: Arc<dyn StdError + Send + Sync + 'static>,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl StdError for StorageError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

impl StorageError {
    /// Wraps a backend error with what was being done.
    pub fn new(context: impl Into<String>, source: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

/// Ordering partitions per subscriber on the brokers that order keys by
/// partition (RabbitMQ, NATS) unless configured otherwise.
pub const DEFAULT_ORDERING_PARTITIONS: u16 = 8;

/// The partition (`0..partitions`) an ordering key goes through on the brokers
/// that order keys by partition. Every instance must agree on it, whatever Rust
/// built it, so it is FNV-1a (64 bit) written out rather than std's hasher,
/// whose output may change between releases.
pub fn ordering_partition(key: &str, partitions: u16) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u16
}

/// Dead-letter id of a (message, subscriber) delivery.
pub fn dead_letter_id(message_id: &str, subscriber: &str) -> String {
    format!("{message_id}:{subscriber}")
}

/// Splits a dead-letter id into (message id, subscriber); message ids never hold ':'.
pub fn split_dead_letter_id(id: &str) -> Option<(&str, &str)> {
    id.split_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_partitions_are_stable_and_in_range() {
        // Fixed values: instances built by other compilers must agree.
        assert_eq!(
            ordering_partition("", 8),
            (0xcbf2_9ce4_8422_2325u64 % 8) as u16
        );
        assert_eq!(ordering_partition("order-42", 1), 0);
        assert_eq!(ordering_partition("order-42", 0), 0);
        let spread: std::collections::HashSet<u16> = (0..200)
            .map(|i| ordering_partition(&format!("order-{i}"), 8))
            .collect();
        assert_eq!(spread.len(), 8, "keys spread over every partition");
        assert!(spread.iter().all(|p| *p < 8));
    }

    #[test]
    fn dead_letter_ids_round_trip_even_with_colons_in_subscriber() {
        let id = dead_letter_id("0190-abc", "team:billing");
        assert_eq!(
            split_dead_letter_id(&id),
            Some(("0190-abc", "team:billing"))
        );
        assert_eq!(split_dead_letter_id("no-colon"), None);
    }

    #[test]
    fn filter_matches_on_each_field() {
        let f = DlqFilter {
            topic: Some("orders".into()),
            subscriber: None,
        };
        assert!(f.matches("orders", "a"));
        assert!(!f.matches("users", "a"));
        let f = DlqFilter {
            topic: None,
            subscriber: Some("b".into()),
        };
        assert!(f.matches("x", "b"));
        assert!(!f.matches("x", "a"));
        assert!(DlqFilter::default().matches("x", "y"));
    }

    #[test]
    fn storage_error_keeps_its_cause() {
        let io = std::io::Error::other("disk on fire");
        let e = QueueError::Storage(StorageError::new("commit", io));
        let cause = StdError::source(&e)
            .and_then(StdError::source)
            .expect("cause chain");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn outcome_id_is_the_same_for_both_variants() {
        let id = MessageId::new("x");
        assert_eq!(EnqueueOutcome::Accepted(id.clone()).id(), &id);
        assert_eq!(EnqueueOutcome::Duplicate(id.clone()).id(), &id);
    }
}
