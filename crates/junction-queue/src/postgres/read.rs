//! Rows into the queue's types: claimed deliveries, message status, dead letters.

use std::sync::Arc;

use bytes::Bytes;
use tokio_postgres::{Client, Row};

use super::sql::Sql;
use super::storage;
use crate::types::*;

fn corrupt(what: &str, e: impl std::fmt::Display) -> QueueError {
    storage(what, std::io::Error::other(e.to_string()))
}

/// The message columns shared by the claim and dead-letter queries, starting at `at`:
/// id, topic, body, content_type, headers, ordering_key, subscribers, enqueued_at_ms.
fn message_from(row: &Row, at: usize) -> Result<Message, QueueError> {
    let headers: serde_json::Value = row.get(at + 4);
    let headers: Vec<(String, String)> =
        serde_json::from_value(headers).map_err(|e| corrupt("message headers", e))?;
    let body: Option<Vec<u8>> = row.get(at + 2);
    Ok(Message {
        id: MessageId::new(row.get::<_, String>(at)),
        topic: row.get(at + 1),
        body: Bytes::from(body.unwrap_or_default()),
        content_type: row.get(at + 3),
        headers,
        ordering_key: row.get(at + 5),
        subscribers: row
            .get::<_, String>(at + 6)
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        enqueued_at_ms: row.get::<_, i64>(at + 7) as u64,
    })
}

/// A claimed delivery (the claim query's row).
pub fn lease_from(row: &Row, subscriber: &str) -> Result<Lease, QueueError> {
    let message = message_from(row, 0)?;
    Ok(Lease {
        first_enqueued_ms: message.enqueued_at_ms,
        message: Arc::new(message),
        subscriber: subscriber.to_owned(),
        attempts: row.get::<_, i32>(8) as u32,
    })
}

fn history(v: serde_json::Value) -> Result<Vec<AttemptRecord>, QueueError> {
    serde_json::from_value(v).map_err(|e| corrupt("attempt history", e))
}

/// Every subscriber's state of message `id`, if it is known.
pub async fn message_status(
    conn: &Client,
    sql: &Sql,
    id: &str,
    now_ms: u64,
) -> Result<Option<MessageStatus>, QueueError> {
    let Some(m) = conn
        .query_opt(sql.message.as_str(), &[&id])
        .await
        .map_err(|e| storage("reading a message", e))?
    else {
        return Ok(None);
    };
    let rows = conn
        .query(sql.message_deliveries.as_str(), &[&id])
        .await
        .map_err(|e| storage("reading deliveries", e))?;
    let mut subscribers = Vec::with_capacity(rows.len());
    for r in rows {
        let state: String = r.get(1);
        let due = r.get::<_, i64>(4) as u64;
        let leased_until: Option<i64> = r.get(5);
        let state = match state.as_str() {
            "p" => DeliveryState::Pending {
                next_attempt_at_ms: due,
            },
            "d" => DeliveryState::Delivered,
            _ => DeliveryState::Dead {
                reason: r.get::<_, Option<String>>(6).unwrap_or_default(),
            },
        };
        let pending = matches!(state, DeliveryState::Pending { .. });
        subscribers.push(SubscriberStatus {
            subscriber: r.get(0),
            attempts: r.get::<_, i32>(2) as u32,
            history: history(r.get(3))?,
            next_attempt_at_ms: pending.then_some(due),
            leased: pending && leased_until.is_some_and(|u| u as u64 > now_ms),
            state,
        });
    }
    Ok(Some(MessageStatus {
        id: MessageId::new(m.get::<_, String>(0)),
        topic: m.get(1),
        ordering_key: m.get(2),
        enqueued_at_ms: m.get::<_, i64>(3) as u64,
        completed_at_ms: m.get::<_, Option<i64>>(4).map(|v| v as u64),
        subscribers,
    }))
}

/// Dead letters matching `filter` after the cursor, oldest first.
pub async fn dlq_page(
    conn: &Client,
    sql: &Sql,
    filter: &DlqFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<DlqPage, QueueError> {
    let (after_id, after_sub) = after
        .and_then(split_dead_letter_id)
        .map_or(("", ""), |(i, s)| (i, s));
    let rows = conn
        .query(
            sql.dlq_page.as_str(),
            &[
                &filter.topic,
                &filter.subscriber,
                &after_id,
                &after_sub,
                &(limit as i64 + 1),
            ],
        )
        .await
        .map_err(|e| storage("listing dead letters", e))?;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    for r in rows.iter().take(limit) {
        // Columns 5.. are the message's, in `message_from`'s order.
        let message = message_from(r, 5)?;
        let subscriber: String = r.get(1);
        items.push(DeadLetter {
            id: dead_letter_id(message.id.as_str(), &subscriber),
            message,
            subscriber,
            attempts: history(r.get(2))?,
            reason: r.get::<_, Option<String>>(3).unwrap_or_default(),
            dead_at_ms: r.get::<_, Option<i64>>(4).unwrap_or(0) as u64,
        });
    }
    let next = (rows.len() > limit)
        .then(|| items.last().map(|d| d.id.clone()))
        .flatten();
    Ok(DlqPage { items, next })
}
