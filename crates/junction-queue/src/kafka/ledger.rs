//! The admin side over Kafka: dead letters are the live records of the
//! compacted `….dlq` topics (the latest record per dead-letter id, a tombstone
//! removing it), read from the start to the high watermark; depth is each
//! group's lag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{blocking, part, storage, Shared, REQUEST_TIMEOUT};
use crate::contract::Ledger;
use crate::envelope::{self, Envelope};
use crate::types::*;

/// Longest a read of one dead-letter topic may take.
const READ_BOUND: Duration = Duration::from_secs(20);

/// Every topic on the cluster.
pub async fn topic_names(s: &Arc<Shared>) -> Result<Vec<String>, QueueError> {
    let s = s.clone();
    blocking(move || {
        s.producer()
            .client()
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map(|m| m.topics().iter().map(|t| t.name().to_owned()).collect())
    })
    .await?
    .map_err(|e| storage("listing kafka topics", e))
}

/// The dead-letter topics under the prefix.
async fn dlq_topics(s: &Arc<Shared>) -> Result<Vec<String>, QueueError> {
    let prefix = format!("{}.", part(&s.cfg.prefix));
    Ok(topic_names(s)
        .await?
        .into_iter()
        .filter(|t| t.starts_with(&prefix) && t.ends_with(".dlq"))
        .collect())
}

/// Each partition's (low, high) watermarks of `topic`.
fn watermarks(c: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>, QueueError> {
    let meta = c
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| storage("reading kafka metadata", e))?;
    let mut out = Vec::new();
    for t in meta.topics() {
        // A topic the broker reports no partitions of is not read as empty
        // (that would show a backlog of 0 while records wait).
        if let Some(e) = t.error() {
            return Err(storage("reading kafka metadata", format!("{e:?}")));
        }
        if t.partitions().is_empty() {
            return Err(storage("reading kafka metadata", "no partitions"));
        }
        for p in t.partitions() {
            let (low, high) = c
                .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                .map_err(|e| storage("reading kafka watermarks", e))?;
            out.push((p.id(), low, high));
        }
    }
    Ok(out)
}

/// The record key of a dead-lettering: the dead-letter id and when it died.
pub fn record_key(dead_letter_id: &str, dead_at_ms: u64) -> String {
    format!("{dead_letter_id}@{dead_at_ms}")
}

/// A kept client for reading offsets (of `group`'s commits when given).
fn reader(s: &Shared, group: Option<&str>) -> Result<Arc<BaseConsumer>, QueueError> {
    let key = group.unwrap_or_default().to_owned();
    if let Some(r) = s.readers.lock().get(&key) {
        return Ok(r.clone());
    }
    let mut cfg = s.cfg.client_config();
    if let Some(g) = group {
        cfg.set("group.id", g).set("enable.auto.commit", "false");
    }
    let r: Arc<BaseConsumer> = Arc::new(
        cfg.create()
            .map_err(|e| storage("creating a kafka reader", e))?,
    );
    s.readers.lock().insert(key, r.clone());
    Ok(r)
}

/// The live dead letters of `topic` with their record keys (blocking).
fn read_dlq(s: &Shared, topic: &str) -> Result<Vec<(String, DeadLetter)>, QueueError> {
    let c: BaseConsumer = s
        .cfg
        .client_config()
        .set("group.id", format!("{}.admin", part(&s.cfg.prefix)))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| storage("creating a kafka reader", e))?;
    let marks: Vec<(i32, i64, i64)> = watermarks(&c, topic)?
        .into_iter()
        .filter(|(_, low, high)| high > low)
        .collect();
    let mut tpl = TopicPartitionList::new();
    for (p, low, _) in &marks {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*low))
            .map_err(|e| storage("reading a dead-letter topic", e))?;
    }
    c.assign(&tpl)
        .map_err(|e| storage("reading a dead-letter topic", e))?;
    let mut left: HashMap<i32, i64> = marks.iter().map(|(p, _, high)| (*p, *high)).collect();
    let mut live: HashMap<String, DeadLetter> = HashMap::new();
    let end = Instant::now() + READ_BOUND;
    while !left.is_empty() {
        if Instant::now() > end {
            return Err(storage(
                "reading a dead-letter topic",
                "not read to its end in time",
            ));
        }
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(|e| storage("reading a dead-letter topic", e))?;
        if left
            .get(&m.partition())
            .is_some_and(|h| m.offset() + 1 >= *h)
        {
            left.remove(&m.partition());
        }
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let Some(body) = m.payload() else {
            live.remove(key); // a tombstone: replayed or purged
            continue;
        };
        let header = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == envelope::HEADER)
                .and_then(|h| h.value)
        });
        let env = Envelope::parse(header, None, None, "", 0);
        let sub = env.subscriber.clone().unwrap_or_default();
        live.insert(
            key.to_owned(),
            DeadLetter {
                id: dead_letter_id(env.id.as_str(), &sub),
                subscriber: sub,
                attempts: env.history.clone(),
                reason: env.reason.clone().unwrap_or_default(),
                dead_at_ms: env.dead_at_ms.unwrap_or(0),
                message: env.message(body.to_vec()),
            },
        );
    }
    Ok(live.into_iter().collect())
}

/// Live dead letters across the dead-letter topics, re-counted only when
/// one of them grew.
#[derive(Default)]
pub struct DlqCount {
    marks: u64,
    live: u64,
}

pub struct KafkaLedger {
    shared: Arc<Shared>,
}

impl KafkaLedger {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Dead letters matching `filter` with their record keys, oldest first.
    async fn scan(&self, filter: &DlqFilter) -> Result<Vec<(String, DeadLetter)>, QueueError> {
        let s = &self.shared;
        let topics = match (&filter.topic, &filter.subscriber) {
            (Some(t), Some(sub)) => vec![s.dlq_topic(t, sub)],
            _ => dlq_topics(s).await?,
        };
        let known = topic_names(s).await?;
        let mut out = Vec::new();
        for t in topics.into_iter().filter(|t| known.contains(t)) {
            let s = s.clone();
            out.extend(blocking(move || read_dlq(&s, &t)).await??);
        }
        out.retain(|(_, l)| filter.matches(&l.message.topic, &l.subscriber));
        out.sort_by(|(_, a), (_, b)| (a.dead_at_ms, &a.id).cmp(&(b.dead_at_ms, &b.id)));
        Ok(out)
    }

    async fn apply(
        &self,
        key: &str,
        letter: &DeadLetter,
        action: DlqAction,
    ) -> Result<(), QueueError> {
        let s = &self.shared;
        let topic = &letter.message.topic;
        if action == DlqAction::Replay {
            let mut env = Envelope::replay_of(letter);
            // Addressed to this subscriber alone: the other groups skip it.
            env.subscribers = vec![letter.subscriber.clone()];
            let name = s.topic_name(topic);
            s.ensure_topic(&name, false).await?;
            s.produce(
                &name,
                letter.message.ordering_key.as_deref(),
                Some(&env),
                Some(&letter.message.body),
            )
            .await?;
        }
        let dlq = s.dlq_topic(topic, &letter.subscriber);
        s.produce(&dlq, Some(key), None, None).await
    }
}

/// Per topic the largest group lag, per subscriber its groups' lag, and the live dead letters.
pub async fn read_depth(s: &Arc<Shared>, dlq: &mut DlqCount) -> Result<DepthSnapshot, QueueError> {
    let members: Vec<((String, String), String)> = s
        .members
        .lock()
        .keys()
        .map(|(t, sub)| ((t.clone(), sub.clone()), s.group(t, sub)))
        .collect();
    let mut snap = DepthSnapshot::default();
    for ((topic, sub), group) in members {
        let (shared, name) = (s.clone(), s.topic_name(&topic));
        let lag = blocking(move || group_lag(&shared, &group, &name)).await??;
        *snap.subscribers.entry(sub).or_default() += lag;
        let t = snap.topics.entry(topic).or_default();
        *t = (*t).max(lag);
    }
    snap.total = snap.topics.values().sum();
    let topics = dlq_topics(s).await?;
    let shared = s.clone();
    let marks = blocking(move || -> Result<u64, QueueError> {
        let c = reader(&shared, None)?;
        let mut sum = 0;
        for t in &topics {
            sum += watermarks(&c, t)?
                .iter()
                .map(|(_, _, h)| *h as u64)
                .sum::<u64>();
        }
        Ok(sum)
    })
    .await??;
    if marks != dlq.marks {
        let letters = KafkaLedger::new(s.clone())
            .scan(&DlqFilter::default())
            .await?;
        *dlq = DlqCount {
            marks,
            live: letters.len() as u64,
        };
    }
    snap.dlq_total = dlq.live;
    Ok(snap)
}

/// High watermarks less the group's committed offsets (blocking).
fn group_lag(s: &Shared, group: &str, topic: &str) -> Result<u64, QueueError> {
    let c = reader(s, Some(group))?;
    let marks = watermarks(&c, topic)?;
    let mut tpl = TopicPartitionList::new();
    for (p, _, _) in &marks {
        tpl.add_partition(topic, *p);
    }
    let committed = c
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .map_err(|e| storage("reading a group's offsets", e))?;
    let mut lag = 0;
    for (p, low, high) in marks {
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        lag += (high - at).max(0) as u64;
    }
    Ok(lag)
}

#[async_trait]
impl Ledger for KafkaLedger {
    async fn message_status(&self, _id: &str) -> Result<Option<MessageStatus>, QueueError> {
        Err(QueueError::Unsupported(
            "the kafka backend keeps no per-message status: see /admin/dlq and the delivery metrics",
        ))
    }

    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        let all = self.scan(&filter).await?;
        let all: Vec<&DeadLetter> = all.iter().map(|(_, d)| d).collect();
        let page = DlqPage::from_sorted(&all, after.as_deref(), limit);
        Ok(page)
    }

    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError> {
        let (_, sub) = split_dead_letter_id(dead_letter_id).ok_or(QueueError::NotFound)?;
        let filter = DlqFilter {
            topic: None,
            subscriber: Some(sub.to_owned()),
        };
        let letters = self.scan(&filter).await?;
        let (key, letter) = letters
            .iter()
            .find(|(_, l)| l.id == dead_letter_id)
            .ok_or(QueueError::NotFound)?;
        self.apply(key, letter, action).await
    }

    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError> {
        let mut done = 0;
        for (key, letter) in self.scan(&filter).await? {
            self.apply(&key, &letter, action).await?;
            done += 1;
        }
        Ok(done)
    }

    fn depth(&self) -> DepthSnapshot {
        self.shared.depth.read().clone()
    }
}
