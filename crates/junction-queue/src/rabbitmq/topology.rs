//! Names and declarations: per topic a fanout exchange, per subscriber a
//! durable queue bound to it, its dead-letter queue, and its delay queues.
//!
//! `max_depth` is each subscriber queue's `x-max-length`. `on_full: reject` is
//! `reject-publish` (the publish is nacked, so refused with 503, although the
//! other subscribers' queues took it); `dead_letter_oldest` is `drop-head` with
//! the queue's dead-letter route pointing at its `.dlq`, so a full subscriber
//! sheds its oldest waiting message there and no publish is refused. RabbitMQ
//! refuses to redeclare a queue with other arguments (406): changing either
//! setting for existing queues needs them deleted (or a policy) first.
//!
//! Delayed retries use no plugin: a retry is published to one of a few delay
//! queues whose fixed `x-message-ttl` dead-letters it back into the
//! subscriber's queue. A fixed TTL per queue keeps expiry in FIFO order (a
//! per-message TTL would only expire at the queue's head, so a long delay
//! would hold up shorter ones behind it). `retry(after)` picks the shortest
//! tier at least `after`, so a delay is rounded up, never down.

use std::collections::BTreeSet;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use parking_lot::Mutex;

use super::storage;
use crate::types::{OnFull, QueueError};

/// Delay tiers of retries, in ms.
pub const RETRY_TIERS_MS: [u64; 9] = [
    250, 1_000, 2_000, 5_000, 15_000, 60_000, 300_000, 900_000, 3_600_000,
];

/// Which RabbitMQ queue type holds subscriber queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated (Raft), the durable default.
    Quorum,
    /// Single-node classic queues.
    Classic,
}

/// The broker objects of one instance's queue, declared once each.
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    /// Per-subscriber backlog bound (`x-max-length`) and what happens past it.
    max_length: Option<u64>,
    on_full: OnFull,
    declared: Mutex<BTreeSet<String>>,
    /// Every (topic, subscriber) declared, for the ledger's scans.
    pairs: Mutex<BTreeSet<(String, String)>>,
}

impl Topology {
    pub fn new(
        prefix: &str,
        queue_type: QueueType,
        max_length: Option<u64>,
        on_full: OnFull,
    ) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queue_type,
            max_length,
            on_full,
            declared: Mutex::default(),
            pairs: Mutex::default(),
        }
    }

    pub fn exchange(&self, topic: &str) -> String {
        format!("{}.{topic}", self.prefix)
    }

    pub fn queue(&self, topic: &str, sub: &str) -> String {
        format!("{}.{topic}.{sub}", self.prefix)
    }

    pub fn dlq(&self, topic: &str, sub: &str) -> String {
        format!("{}.{topic}.{sub}.dlq", self.prefix)
    }

    pub fn delay_queue(&self, topic: &str, sub: &str, tier_ms: u64) -> String {
        format!("{}.{topic}.{sub}.retry.{tier_ms}", self.prefix)
    }

    /// The (topic, subscriber) pairs declared so far.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.pairs.lock().iter().cloned().collect()
    }

    /// Every queue and exchange name declared (for cleanup).
    pub fn declared(&self) -> Vec<String> {
        self.declared.lock().iter().cloned().collect()
    }

    fn is_declared(&self, name: &str) -> bool {
        self.declared.lock().contains(name)
    }

    /// The exchange of `topic`, each subscriber's queue bound to it, and its DLQ.
    pub async fn ensure(
        &self,
        ch: &Channel,
        topic: &str,
        subs: &[String],
    ) -> Result<(), QueueError> {
        let exchange = self.exchange(topic);
        if !self.is_declared(&exchange) {
            ch.exchange_declare(
                &exchange,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| storage("declaring an exchange", e))?;
            self.declared.lock().insert(exchange.clone());
        }
        for sub in subs {
            let queue = self.queue(topic, sub);
            if self.is_declared(&queue) {
                continue;
            }
            // The dead-letter queue first: with `drop-head` the main queue routes
            // its dropped heads there.
            let dlq = self.dlq(topic, sub);
            declare_queue(ch, &dlq, self.queue_args()).await?;
            let mut args = self.queue_args();
            if let Some(max) = self.max_length {
                args.insert("x-max-length".into(), AMQPValue::LongLongInt(max as i64));
                let overflow = match self.on_full {
                    OnFull::Reject => "reject-publish",
                    OnFull::DeadLetterOldest => {
                        args.insert(
                            "x-dead-letter-exchange".into(),
                            AMQPValue::LongString(LongString::from("")),
                        );
                        args.insert(
                            "x-dead-letter-routing-key".into(),
                            AMQPValue::LongString(LongString::from(dlq.as_str())),
                        );
                        "drop-head"
                    }
                };
                args.insert(
                    "x-overflow".into(),
                    AMQPValue::LongString(LongString::from(overflow)),
                );
            }
            declare_queue(ch, &queue, args).await?;
            ch.queue_bind(
                &queue,
                &exchange,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| storage("binding a queue", e))?;
            let mut declared = self.declared.lock();
            declared.insert(queue);
            declared.insert(dlq);
            self.pairs.lock().insert((topic.to_owned(), sub.clone()));
        }
        Ok(())
    }

    /// The delay queue of the shortest tier at least `after_ms`, declared.
    pub async fn ensure_delay(
        &self,
        ch: &Channel,
        topic: &str,
        sub: &str,
        after_ms: u64,
    ) -> Result<String, QueueError> {
        let tier = RETRY_TIERS_MS
            .iter()
            .copied()
            .find(|t| *t >= after_ms)
            .unwrap_or(RETRY_TIERS_MS[RETRY_TIERS_MS.len() - 1]);
        let name = self.delay_queue(topic, sub, tier);
        if !self.is_declared(&name) {
            let mut args = FieldTable::default();
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(tier as i64));
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from("")),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(LongString::from(self.queue(topic, sub))),
            );
            declare_queue(ch, &name, args).await?;
            self.declared.lock().insert(name.clone());
        }
        Ok(name)
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert(
                ShortString::from("x-queue-type"),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        args
    }
}

async fn declare_queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), QueueError> {
    ch.queue_declare(
        name,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .map_err(|e| storage(&format!("declaring queue {name}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tiers() {
        let t = Topology::new("junction", QueueType::Quorum, None, OnFull::Reject);
        assert_eq!(t.exchange("orders"), "junction.orders");
        assert_eq!(t.queue("orders", "inv"), "junction.orders.inv");
        assert_eq!(t.dlq("orders", "inv"), "junction.orders.inv.dlq");
        assert_eq!(
            t.delay_queue("orders", "inv", 1000),
            "junction.orders.inv.retry.1000"
        );
        // Rounded up to a tier, never down; past the last, the last.
        let pick = |after: u64| RETRY_TIERS_MS.iter().copied().find(|t| *t >= after);
        assert_eq!(pick(1), Some(250));
        assert_eq!(pick(1500), Some(2000));
        assert_eq!(pick(10_000_000), None);
    }
}
