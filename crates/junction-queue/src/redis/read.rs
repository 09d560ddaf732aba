//! Reading messages, deliveries and dead letters back (admin views, the DLQ).

use std::collections::HashMap;

use super::codec::{message_from, num, parse_attempt};
use super::RedisBroker;
use crate::types::*;

impl RedisBroker {
    /// Dead letters from the cursor on, `limit + 1` matching at most (to know if more follow).
    pub(super) async fn dead_letters(
        &self,
        filter: &DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let mut out = Vec::new();
        let mut cursor = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        loop {
            let members: Vec<String> = self
                .query(
                    "listing dead letters",
                    redis::cmd("ZRANGEBYLEX")
                        .arg(self.key("dlq"))
                        .arg(&cursor)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(200),
                )
                .await?;
            let Some(last) = members.last() else {
                return Ok(out);
            };
            cursor = format!("({last}");
            for member in &members {
                let Some((id, sub)) = split_dead_letter_id(member) else {
                    continue;
                };
                if filter.subscriber.as_deref().is_some_and(|s| s != sub) {
                    continue;
                }
                let Some(letter) = self.dead_letter_of(id, sub).await? else {
                    continue;
                };
                if !filter.matches(&letter.message.topic, sub) {
                    continue;
                }
                out.push(letter);
                if out.len() > limit {
                    return Ok(out);
                }
            }
        }
    }

    pub(super) async fn dead_letter_of(
        &self,
        id: &str,
        sub: &str,
    ) -> Result<Option<DeadLetter>, QueueError> {
        let Some(message) = self.message(id).await? else {
            return Ok(None);
        };
        let (fields, history) = self.delivery(id, sub).await?;
        Ok(Some(DeadLetter {
            id: dead_letter_id(id, sub),
            message,
            subscriber: sub.to_owned(),
            attempts: history,
            reason: fields.get("why").cloned().unwrap_or_default(),
            dead_at_ms: num(fields.get("dead_at")),
        }))
    }

    /// The whole message (body included), if it is still held.
    pub(super) async fn message(&self, id: &str) -> Result<Option<Message>, QueueError> {
        let (topic, okey, meta, body): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<Vec<u8>>,
        ) = self
            .query(
                "reading a message",
                redis::cmd("HMGET")
                    .arg(self.key(&format!("m:{id}")))
                    .arg(&["topic", "okey", "meta", "body"]),
            )
            .await?;
        let (Some(topic), Some(meta)) = (topic, meta) else {
            return Ok(None);
        };
        Ok(Some(message_from(
            id,
            topic,
            okey,
            &meta,
            body.unwrap_or_default(),
        )?))
    }

    /// A delivery's fields and attempt history.
    pub(super) async fn delivery(
        &self,
        id: &str,
        sub: &str,
    ) -> Result<(HashMap<String, String>, Vec<AttemptRecord>), QueueError> {
        let fields: HashMap<String, String> = self
            .query(
                "reading a delivery",
                redis::cmd("HGETALL").arg(self.key(&format!("d:{id}:{sub}"))),
            )
            .await?;
        let raw: Vec<String> = self
            .query(
                "reading a delivery's history",
                redis::cmd("LRANGE")
                    .arg(self.key(&format!("h:{id}:{sub}")))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        Ok((
            fields,
            raw.iter().filter_map(|r| parse_attempt(r)).collect(),
        ))
    }
}
