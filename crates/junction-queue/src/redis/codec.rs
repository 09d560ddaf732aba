//! How Redis replies and stored fields become the queue's types.

use std::collections::BTreeMap;

use bytes::Bytes;
use redis::Value;
use serde::{Deserialize, Serialize};

use crate::types::*;

/// What a message holds besides its body, topic and key (JSON in `meta`).
#[derive(Serialize, Deserialize)]
pub(super) struct Meta {
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub enqueued_at_ms: u64,
    pub subscribers: Vec<String>,
}

pub(super) fn message_from(
    id: &str,
    topic: String,
    okey: Option<String>,
    meta: &str,
    body: Vec<u8>,
) -> Result<Message, QueueError> {
    let meta: Meta = serde_json::from_str(meta).map_err(|e| storage("decoding a message", e))?;
    Ok(Message {
        id: MessageId::new(id),
        topic,
        body: Bytes::from(body),
        content_type: meta.content_type,
        headers: meta.headers,
        ordering_key: okey.filter(|k| !k.is_empty()),
        enqueued_at_ms: meta.enqueued_at_ms,
        subscribers: meta.subscribers,
    })
}

/// Separates an attempt's outcome from its response sample (JSON) in the
/// stored record; never part of an outcome (see [`attempt_record`]).
const SAMPLE_SEPARATOR: char = '\u{1f}';

/// An attempt as the settle script stores it (the script puts the attempt
/// number in front): `at_ms|duration_ms|outcome[\x1f sample JSON]`.
pub(super) fn attempt_record(attempt: &AttemptRecord) -> String {
    let mut record = format!(
        "{}|{}|{}",
        attempt.at_ms,
        attempt.duration_ms,
        attempt.outcome.replace(SAMPLE_SEPARATOR, " ")
    );
    if let Some(json) = attempt
        .response
        .as_ref()
        .and_then(|r| serde_json::to_string(r).ok())
    {
        record.push(SAMPLE_SEPARATOR);
        record.push_str(&json);
    }
    record
}

/// `attempt|at_ms|duration_ms|outcome[\x1f sample]` back into a record (a
/// sample that does not decode is left out, the attempt is kept).
pub(super) fn parse_attempt(raw: &str) -> Option<AttemptRecord> {
    let mut parts = raw.splitn(4, '|');
    let attempt = parts.next()?.parse().ok()?;
    let at_ms = parts.next()?.parse().ok()?;
    let duration_ms = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let (outcome, sample) = match rest.split_once(SAMPLE_SEPARATOR) {
        Some((outcome, sample)) => (outcome, serde_json::from_str(sample).ok()),
        None => (rest, None),
    };
    Some(AttemptRecord {
        attempt,
        at_ms,
        duration_ms,
        outcome: outcome.to_owned(),
        response: sample,
    })
}

/// The depth hash (`HGETALL` reply) as a snapshot.
pub(super) fn parse_depth(reply: &Value) -> DepthSnapshot {
    let mut snap = DepthSnapshot::default();
    let pairs: Vec<(String, i64)> = match reply {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((text(&kv[0]), text(kv.get(1)?).parse().ok()?)))
            .collect(),
        Value::Map(kv) => kv
            .iter()
            .filter_map(|(k, v)| Some((text(k), text(v).parse().ok()?)))
            .collect(),
        _ => Vec::new(),
    };
    let mut topics = BTreeMap::new();
    let mut dlq = BTreeMap::new();
    let mut subscribers = BTreeMap::new();
    for (field, n) in pairs {
        let n = n.max(0) as u64;
        if let Some(topic) = field.strip_prefix("u:") {
            topics.insert(topic.to_owned(), n);
        } else if let Some(topic) = field.strip_prefix("x:") {
            dlq.insert(topic.to_owned(), n);
        } else if let Some(sub) = field.strip_prefix("s:") {
            subscribers.insert(sub.to_owned(), n);
        }
    }
    snap.total = topics.values().sum();
    snap.dlq_total = dlq.values().sum();
    snap.topics = topics;
    snap.dlq = dlq;
    snap.subscribers = subscribers;
    snap
}

/// [`backlog_full_reason`] for `max` and `on_full`, split around the backlog
/// count (head, tail), for the enqueue script to put the count it reads between.
pub(super) fn backlog_full_reason_parts(max: u64, on_full: OnFull) -> (String, String) {
    // The count comes first in the reason, so the first occurrence is it.
    let mark = u64::MAX.to_string();
    let whole = backlog_full_reason(u64::MAX, max, on_full);
    match whole.split_once(&mark) {
        Some((head, tail)) => (head.to_owned(), tail.to_owned()),
        None => (whole, String::new()),
    }
}

/// How the enqueue script names `on_full`.
pub(super) fn on_full_arg(on_full: OnFull) -> &'static str {
    match on_full {
        OnFull::Reject => "reject",
        OnFull::DeadLetterOldest => "oldest",
    }
}

/// The first element of a script reply (its status word).
pub(super) fn status_of(reply: &Value) -> String {
    match reply {
        Value::Array(items) => items.first().map(text).unwrap_or_default(),
        _ => String::new(),
    }
}

pub(super) fn text(v: &Value) -> String {
    String::from_utf8_lossy(&bytes(v)).into_owned()
}

pub(super) fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

pub(super) fn num(v: Option<&String>) -> u64 {
    v.and_then(|s| s.parse().ok()).unwrap_or(0)
}

pub(super) fn storage(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Storage(StorageError::new(format!("redis queue: {what}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_depth_hash_becomes_a_snapshot() {
        let reply = Value::Array(
            [
                "u:orders",
                "2",
                "x:orders",
                "1",
                "u:users",
                "0",
                "_u",
                "2",
                "_x",
                "1",
                "s:billing",
                "2",
                "s:a:b",
                "0",
                "s:old",
                "-1",
            ]
            .iter()
            .map(|s| bulk(s))
            .collect(),
        );
        let snap = parse_depth(&reply);
        assert_eq!((snap.total, snap.dlq_total), (2, 1));
        assert_eq!(snap.topics.get("orders"), Some(&2));
        assert_eq!(snap.topics.get("users"), Some(&0));
        assert_eq!(snap.dlq.get("orders"), Some(&1));
        assert_eq!(snap.subscribers.get("billing"), Some(&2));
        assert_eq!(snap.subscribers.get("a:b"), Some(&0));
        assert_eq!(snap.subscribers.get("old"), Some(&0));
        assert_eq!(snap.subscribers.len(), 3);
    }

    #[test]
    fn the_backlog_full_reason_is_split_around_its_count() {
        for on_full in [OnFull::Reject, OnFull::DeadLetterOldest] {
            for max in [1, 2, 17, u64::MAX] {
                let (head, tail) = backlog_full_reason_parts(max, on_full);
                assert_eq!(
                    format!("{head}{}{tail}", 42),
                    backlog_full_reason(42, max, on_full)
                );
                assert!(head.starts_with(BACKLOG_FULL));
            }
        }
    }

    #[test]
    fn attempts_keep_their_response_sample() {
        let mut a = parse_attempt("0|1700000000000|12|x").unwrap();
        a.outcome = "status 503 | with a \u{1f} inside".into();
        a.response = Some(crate::ResponseSample::new(
            503,
            [("retry-after", &b"5"[..])],
            b"{\"error\":\"a | b\"}",
        ));
        let back = parse_attempt(&format!("3|{}", attempt_record(&a))).unwrap();
        assert_eq!(back.outcome, "status 503 | with a   inside");
        assert_eq!(back.response, a.response);
        let plain = parse_attempt("3|1|2|status 500").unwrap();
        assert_eq!(
            (plain.outcome.as_str(), plain.response),
            ("status 500", None)
        );
    }

    #[test]
    fn attempts_keep_pipes_in_their_outcome() {
        let a = parse_attempt("3|1700000000000|12|status 503 | upstream said no").unwrap();
        assert_eq!(
            (a.attempt, a.at_ms, a.duration_ms),
            (3, 1_700_000_000_000, 12)
        );
        assert_eq!(a.outcome, "status 503 | upstream said no");
        assert!(parse_attempt("x|1|2|y").is_none());
    }
}
