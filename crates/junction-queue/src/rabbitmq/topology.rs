//! Names and declarations: per topic a fanout exchange, per subscriber a
//! durable queue bound to it, its dead-letter queue, and its delay queues;
//! for topics that get keyed events also a direct exchange and per subscriber
//! its ordering partitions.
//!
//! `max_depth` is each subscriber queue's `x-max-length`. `on_full: reject` is
//! `reject-publish`, the hard bound behind the publisher's own per-subscriber
//! check (`fill.rs`; the broker's would nack the whole publish, although the
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
//!
//! Ordering partitions: keyed events go to the topic's direct exchange
//! `{topic}#ordered` with routing key `ordering_partition(key, P)`, which
//! routes them into each subscriber's queue `{topic}.{sub}#{i}` of that
//! partition. Those queues take the main queue's type, bound and dead-letter
//! route, plus `x-single-active-consumer`: the broker gives each to one
//! consumer at a time, so with a prefetch of 1 one delivery of a partition is
//! in flight across every instance (see the subscription). They are declared
//! only once a topic gets a keyed event (by the publisher, or by a subscription
//! that found the topic keyed): eight quorum queues per subscriber are not
//! free, and most topics never carry a key. Last, the publisher declares the
//! topic's marker `{topic}#keyed`, a classic queue that keeps nothing
//! (`x-max-length: 0`): a subscription of another instance learns that the
//! topic is keyed by publishing an empty probe to it, `mandatory`, which the
//! broker routes (and drops) once the marker exists and returns unroutable
//! before. A passive declare would tell too, but the broker answers a missing
//! name by closing the channel, which lapin logs as an error: every 2 s for
//! every topic that never gets a key.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

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
    /// Ordering partitions per subscriber of a topic that gets keyed events.
    partitions: u16,
    declared: Mutex<BTreeSet<String>>,
    /// Every (topic, subscriber) declared, for the ledger's scans.
    pairs: Mutex<BTreeSet<(String, String)>>,
    /// The pairs whose partition queues are declared.
    ordered_pairs: Mutex<BTreeSet<(String, String)>>,
    /// Per topic not (yet) known to get keyed events, when the broker may be
    /// asked again whether another instance declared its marker.
    next_ordered_check: Mutex<HashMap<String, Instant>>,
}

/// How often the subscriptions of a topic not known to get keyed events ask
/// the broker whether it does now (one probe per topic per period).
const ORDERED_CHECK: Duration = Duration::from_secs(2);

impl Topology {
    pub fn new(
        prefix: &str,
        queue_type: QueueType,
        max_length: Option<u64>,
        on_full: OnFull,
        partitions: u16,
    ) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queue_type,
            max_length,
            on_full,
            partitions: partitions.max(1),
            declared: Mutex::default(),
            pairs: Mutex::default(),
            ordered_pairs: Mutex::default(),
            next_ordered_check: Mutex::default(),
        }
    }

    /// Ordering partitions per subscriber.
    pub fn partitions(&self) -> u16 {
        self.partitions
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

    /// The direct exchange keyed events of `topic` go to.
    pub fn ordered_exchange(&self, topic: &str) -> String {
        format!("{}.{topic}#ordered", self.prefix)
    }

    /// The queue that exists once `topic` got a keyed event (it keeps nothing).
    pub fn keyed_marker(&self, topic: &str) -> String {
        format!("{}.{topic}#keyed", self.prefix)
    }

    /// The queue of partition `i` of `sub`.
    pub fn partition_queue(&self, topic: &str, sub: &str, i: u16) -> String {
        format!("{}.{topic}.{sub}#{i}", self.prefix)
    }

    /// The partition queues of `sub`, in partition order.
    pub fn partition_queues(&self, topic: &str, sub: &str) -> Vec<String> {
        (0..self.partitions)
            .map(|i| self.partition_queue(topic, sub, i))
            .collect()
    }

    /// Whether the partition queues of (`topic`, `sub`) were declared here.
    pub fn has_partitions(&self, topic: &str, sub: &str) -> bool {
        self.ordered_pairs
            .lock()
            .contains(&(topic.to_owned(), sub.to_owned()))
    }

    /// Whether `topic` is known here to get keyed events (its marker was
    /// declared or found).
    pub fn is_ordered(&self, topic: &str) -> bool {
        self.is_declared(&self.keyed_marker(topic))
    }

    /// Whether it is time to ask the broker again about `topic`'s marker; if
    /// so, the next time is set, so one caller asks per period.
    pub fn ordered_check_due(&self, topic: &str) -> bool {
        let now = Instant::now();
        let mut next = self.next_ordered_check.lock();
        match next.get(topic) {
            Some(at) if *at > now => false,
            _ => {
                next.insert(topic.to_owned(), now + ORDERED_CHECK);
                true
            }
        }
    }

    /// Records that `topic`'s marker exists (another instance declared it,
    /// after the ordered exchange).
    pub fn found_ordered(&self, topic: &str) {
        self.declared.lock().insert(self.keyed_marker(topic));
        self.next_ordered_check.lock().remove(topic);
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

    /// A durable exchange `name` of `kind`, declared once.
    async fn ensure_exchange(
        &self,
        ch: &Channel,
        name: &str,
        kind: ExchangeKind,
    ) -> Result<(), QueueError> {
        if self.is_declared(name) {
            return Ok(());
        }
        ch.exchange_declare(
            name,
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| storage("declaring an exchange", e))?;
        self.declared.lock().insert(name.to_owned());
        Ok(())
    }

    /// The exchange of `topic`, each subscriber's queue bound to it, and its DLQ.
    pub async fn ensure(
        &self,
        ch: &Channel,
        topic: &str,
        subs: &[String],
    ) -> Result<(), QueueError> {
        let exchange = self.exchange(topic);
        self.ensure_exchange(ch, &exchange, ExchangeKind::Fanout)
            .await?;
        for sub in subs {
            let queue = self.queue(topic, sub);
            if self.is_declared(&queue) {
                continue;
            }
            // The dead-letter queue first: with `drop-head` the main queue routes
            // its dropped heads there.
            let dlq = self.dlq(topic, sub);
            declare_queue(ch, &dlq, self.queue_args()).await?;
            declare_queue(ch, &queue, self.subscriber_args(&dlq)).await?;
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

    /// The ordered exchange of `topic`, for each of `subs` its partition
    /// queues bound to it (routing key: the partition number), then the
    /// topic's marker. The pairs must be [`ensure`](Self::ensure)d first
    /// (their `.dlq` takes the partitions' dropped heads).
    pub async fn ensure_ordered(
        &self,
        ch: &Channel,
        topic: &str,
        subs: &[String],
    ) -> Result<(), QueueError> {
        let exchange = self.ordered_exchange(topic);
        self.ensure_exchange(ch, &exchange, ExchangeKind::Direct)
            .await?;
        for sub in subs {
            if self.has_partitions(topic, sub) {
                continue;
            }
            // The main queue's arguments, so a partition is bounded and sheds
            // like it; one consumer at a time, so one instance holds a partition.
            let mut args = self.subscriber_args(&self.dlq(topic, sub));
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            let queues = self.partition_queues(topic, sub);
            for (i, queue) in queues.iter().enumerate() {
                declare_queue(ch, queue, args.clone()).await?;
                ch.queue_bind(
                    queue,
                    &exchange,
                    &i.to_string(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| storage("binding a queue", e))?;
            }
            self.declared.lock().extend(queues);
            self.ordered_pairs
                .lock()
                .insert((topic.to_owned(), sub.clone()));
        }
        // Last: other instances take the marker for a topic ready to consume.
        let marker = self.keyed_marker(topic);
        if !self.is_declared(&marker) {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("classic")),
            );
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
            declare_queue(ch, &marker, args).await?;
            self.declared.lock().insert(marker);
        }
        Ok(())
    }

    /// Arguments of a subscriber's queues (main and partitions): type, bound,
    /// and past it a refused publish or the head dropped into `dlq`.
    fn subscriber_args(&self, dlq: &str) -> FieldTable {
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
                        AMQPValue::LongString(LongString::from(dlq)),
                    );
                    "drop-head"
                }
            };
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString(LongString::from(overflow)),
            );
        }
        args
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
        let t = Topology::new("junction", QueueType::Quorum, None, OnFull::Reject, 3);
        assert_eq!(t.exchange("orders"), "junction.orders");
        assert_eq!(t.ordered_exchange("orders"), "junction.orders#ordered");
        assert_eq!(t.keyed_marker("orders"), "junction.orders#keyed");
        assert_eq!(
            t.partition_queues("orders", "inv"),
            [
                "junction.orders.inv#0",
                "junction.orders.inv#1",
                "junction.orders.inv#2"
            ]
        );
        assert_eq!(t.queue("orders", "inv"), "junction.orders.inv");
        assert_eq!(t.dlq("orders", "inv"), "junction.orders.inv.dlq");
        assert_eq!(
            t.delay_queue("orders", "inv", 1000),
            "junction.orders.inv.retry.1000"
        );
        // One look at the broker per topic and period, until found.
        assert!(!t.is_ordered("orders"));
        assert!(t.ordered_check_due("orders"));
        assert!(!t.ordered_check_due("orders"), "asked already");
        assert!(t.ordered_check_due("payments"), "per topic");
        t.found_ordered("orders");
        assert!(t.is_ordered("orders"));
        // Rounded up to a tier, never down; past the last, the last.
        let pick = |after: u64| RETRY_TIERS_MS.iter().copied().find(|t| *t >= after);
        assert_eq!(pick(1), Some(250));
        assert_eq!(pick(1500), Some(2000));
        assert_eq!(pick(10_000_000), None);
    }
}
