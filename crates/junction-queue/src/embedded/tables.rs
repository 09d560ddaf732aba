//! On-disk layout of the embedded queue: redb tables, stored records and their codec.
//!
//! Storage format (schema version 1): metadata is JSON (readable with any redb tool,
//! tolerant to added fields); bodies are stored raw next to it as
//! `[u32 LE json length][json][body bytes]`, so a body is never base64'd or copied
//! into JSON. Indexes are redb tuple keys with `()` or small values.
//!
//! Invariants the writer keeps inside every transaction:
//! - `deliveries` holds one record per (message, subscriber) while the message or
//!   its completed record exists, except for completed fast-path messages, whose
//!   final states live in their `messages` row (`MessageMeta::final_states`);
//! - `due` holds exactly the pending deliveries that may be leased now or later:
//!   unkeyed pending deliveries, and the head (lowest sequence) of each
//!   (subscriber, ordering key) chain in `order`;
//! - `stats` holds the depth counters, updated in the same transaction as the data.

use redb::TableDefinition;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::types::{AttemptRecord, DeliveryState, Message, MessageId};

/// Message id -> encoded (`MessageMeta`, body). The body is empty once completed.
pub(crate) const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
/// (message id, subscriber) -> JSON `DeliveryRecord`.
pub(crate) const DELIVERIES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("deliveries");
/// (subscriber, next attempt at ms, message id): the due index.
pub(crate) const DUE: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("due");
/// (subscriber, ordering key, sequence) -> message id: per-key chains, head first.
pub(crate) const ORDER: TableDefinition<(&str, &str, u64), &str> = TableDefinition::new("order");
/// Dead-letter id -> encoded (`DeadLetterMeta`, body).
pub(crate) const DLQ: TableDefinition<&str, &[u8]> = TableDefinition::new("dlq");
/// (topic, idempotency key) -> JSON `IdemRecord`.
pub(crate) const IDEM: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency");
/// (expires at ms, topic, idempotency key): for pruning expired keys.
pub(crate) const IDEM_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("idempotency_expiry");
/// (completed at ms, message id): completed records, for pruning after retention.
pub(crate) const COMPLETED: TableDefinition<(u64, &str), ()> = TableDefinition::new("completed");
/// (kind, name) -> counter: `("depth", topic)`, `("dlq", topic)`, `("seq", "order")`,
/// `("schema", "version")`.
pub(crate) const STATS: TableDefinition<(&str, &str), u64> = TableDefinition::new("stats");

/// Current on-disk schema version.
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// Failure inside the embedded backend, before it is mapped to `QueueError`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EmbeddedError {
    #[error("redb")]
    Db(#[source] Box<redb::Error>),
    #[error("corrupt record")]
    Codec(#[from] serde_json::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("database schema version {found} is not supported (expected {SCHEMA_VERSION})")]
    Schema { found: u64 },
    /// A file of the queue could not be read or written (disk full, read-only, gone).
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl EmbeddedError {
    /// What a failed write means for the queue: `None` when it is not the disk's
    /// fault (a bad record), else whether redb must be reopened before it takes
    /// writes again (after a failed write or sync it refuses every later one).
    pub(crate) fn disk_fault(&self) -> Option<DiskFault> {
        match self {
            Self::Io { .. } => Some(DiskFault::Journal),
            Self::Db(e) => match **e {
                redb::Error::Io(_) | redb::Error::PreviousIo => Some(DiskFault::Database),
                _ => None,
            },
            Self::Codec(_) | Self::Corrupt(_) | Self::Schema { .. } => None,
        }
    }
}

/// Which store a disk fault hit (see [`EmbeddedError::disk_fault`]), in
/// increasing order of what recovering from it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DiskFault {
    /// A journal write failed: the journal is already usable again.
    Journal,
    /// redb failed a write: it needs reopening.
    Database,
    /// The queue directory was removed or replaced while open: writes would go
    /// to unlinked files, so new events are refused until what is pending has
    /// been delivered from the open files and the queue starts over.
    Vanished,
}

macro_rules! via_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for EmbeddedError {
            fn from(e: $t) -> Self {
                Self::Db(Box::new(e.into()))
            }
        }
    )*};
}
via_redb_error!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

/// Result type of the embedded backend internals.
pub(crate) type Res<T> = Result<T, EmbeddedError>;

/// Stored message metadata (everything but the body).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MessageMeta {
    pub id: String,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    pub enqueued_at_ms: u64,
    pub subscribers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at_ms: Option<u64>,
    /// Completed records of fast-path messages keep each subscriber's final state
    /// here (same order as `subscribers`) instead of in `DELIVERIES` rows: one row
    /// per message, not four.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub final_states: Vec<DeliveryRecord>,
}

impl MessageMeta {
    /// The public message, with its body.
    pub fn to_message(&self, body: &[u8]) -> Message {
        Message {
            id: MessageId::new(self.id.clone()),
            topic: self.topic.clone(),
            body: bytes::Bytes::copy_from_slice(body),
            content_type: self.content_type.clone(),
            headers: self.headers.clone(),
            ordering_key: self.ordering_key.clone(),
            enqueued_at_ms: self.enqueued_at_ms,
            subscribers: self.subscribers.clone(),
        }
    }
}

/// Stored state of one (message, subscriber) delivery.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeliveryRecord {
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
    /// Sequence of its entry in `ORDER`, while pending with an ordering key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_seq: Option<u64>,
}

impl DeliveryRecord {
    /// A fresh pending delivery, due at `at_ms`.
    pub fn pending(at_ms: u64) -> Self {
        Self {
            state: DeliveryState::Pending {
                next_attempt_at_ms: at_ms,
            },
            attempts: 0,
            history: Vec::new(),
            order_seq: None,
        }
    }

    /// Due time, if pending.
    pub fn next_at(&self) -> Option<u64> {
        match self.state {
            DeliveryState::Pending { next_attempt_at_ms } => Some(next_attempt_at_ms),
            _ => None,
        }
    }

    /// Appends an attempt (numbered by the broker), keeping the last `MAX_HISTORY`.
    pub fn record(&mut self, mut attempt: AttemptRecord) {
        self.attempts = self.attempts.saturating_add(1);
        attempt.attempt = self.attempts;
        self.history.push(attempt);
        let excess = self.history.len().saturating_sub(crate::types::MAX_HISTORY);
        self.history.drain(..excess);
    }
}

/// Stored dead letter metadata (the body is stored raw next to it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeadLetterMeta {
    pub message: MessageMeta,
    pub subscriber: String,
    pub attempts: Vec<AttemptRecord>,
    pub reason: String,
    pub dead_at_ms: u64,
}

/// Stored idempotency key: which message it produced and until when it counts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IdemRecord {
    pub id: String,
    pub expires_at_ms: u64,
}

/// Encodes JSON metadata followed by a raw body.
pub(crate) fn encode_with_body<T: Serialize>(meta: &T, body: &[u8]) -> Res<Vec<u8>> {
    let json = serde_json::to_vec(meta)?;
    let len = u32::try_from(json.len())
        .map_err(|_| EmbeddedError::Corrupt("metadata larger than 4 GiB".into()))?;
    let mut out = Vec::with_capacity(4 + json.len() + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes what [`encode_with_body`] wrote; the body borrows from `raw`.
pub(crate) fn decode_with_body<T: DeserializeOwned>(raw: &[u8]) -> Res<(T, &[u8])> {
    let corrupt = || EmbeddedError::Corrupt("truncated record".into());
    let len_bytes: [u8; 4] = raw
        .get(..4)
        .ok_or_else(corrupt)?
        .try_into()
        .map_err(|_| corrupt())?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let json = raw.get(4..4 + len).ok_or_else(corrupt)?;
    let meta = serde_json::from_slice(json)?;
    Ok((meta, &raw[4 + len..]))
}

/// Decodes only the metadata of an encoded record.
pub(crate) fn decode_meta<T: DeserializeOwned>(raw: &[u8]) -> Res<T> {
    decode_with_body(raw).map(|(meta, _)| meta)
}

/// JSON-encodes a record.
pub(crate) fn encode<T: Serialize>(v: &T) -> Res<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

/// JSON-decodes a record.
pub(crate) fn decode<T: DeserializeOwned>(raw: &[u8]) -> Res<T> {
    Ok(serde_json::from_slice(raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> MessageMeta {
        MessageMeta {
            id: "id".into(),
            topic: "t".into(),
            content_type: Some("application/json".into()),
            headers: vec![("traceparent".into(), "00-x".into())],
            ordering_key: None,
            enqueued_at_ms: 5,
            subscribers: vec!["a".into()],
            completed_at_ms: None,
            final_states: Vec::new(),
        }
    }

    #[test]
    fn body_codec_round_trips_binary_bodies() {
        let body = [0u8, 255, 10, 13, b'{'];
        let raw = encode_with_body(&meta(), &body).unwrap();
        let (m, b): (MessageMeta, &[u8]) = decode_with_body(&raw).unwrap();
        assert_eq!(b, body);
        assert_eq!(m.headers, meta().headers);
        assert!(decode_with_body::<MessageMeta>(&raw[..3]).is_err());
        assert!(decode_with_body::<MessageMeta>(&raw[..10]).is_err());
    }

    #[test]
    fn history_is_capped_and_numbered_by_the_broker() {
        let mut rec = DeliveryRecord::pending(0);
        for i in 0..25u64 {
            rec.record(AttemptRecord {
                attempt: 999,
                at_ms: i,
                outcome: "status 503".into(),
                duration_ms: 1,
                response: None,
            });
        }
        assert_eq!(rec.attempts, 25);
        assert_eq!(rec.history.len(), crate::types::MAX_HISTORY);
        assert_eq!(rec.history.first().unwrap().attempt, 6);
        assert_eq!(rec.history.last().unwrap().attempt, 25);
        assert_eq!(rec.history.last().unwrap().at_ms, 24);
    }
}
