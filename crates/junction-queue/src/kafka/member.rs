//! One instance's member of a subscriber's consumer group: it reads the
//! partitions the group assigned to it, hands records to the subscriber's
//! lanes (one ordering key at a time), keeps failed ones in its retry schedule,
//! and stores for commit only offsets below which every record was settled.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, Notify};

use super::{blocking, storage, Shared};
use crate::contract::*;
use crate::envelope::{self, Envelope};
use crate::types::*;

/// Unsettled records past which a partition is paused (until half settled).
pub const MAX_UNSETTLED: usize = 1000;
/// Longest wait for a delivery before `next` returns an empty batch.
const IDLE: Duration = Duration::from_secs(1);
/// How long a record whose dead-lettering failed waits before it goes out again.
const DEAD_LETTER_BACKOFF: Duration = Duration::from_secs(5);

/// A record read and not yet settled.
struct Pending {
    message: Arc<Message>,
    attempts: u32,
    history: Vec<AttemptRecord>,
    partition: i32,
    offset: i64,
    /// The partition's epoch when read: a record of a partition revoked since
    /// is the new owner's, and settling it here changes nothing.
    epoch: u64,
}

/// A delivery's ack handle: a delivery dropped without settling (its task
/// died) goes out again at once, as if released, instead of holding its
/// offset and its key until the partition moves.
struct Unsettled {
    pending: Option<Pending>,
    back: mpsc::UnboundedSender<Pending>,
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            let _ = self.back.send(p);
        }
    }
}

/// Read and unsettled offsets of one assigned partition.
#[derive(Default)]
struct Track {
    unsettled: BTreeSet<i64>,
    /// The offset after the highest read.
    next: i64,
    paused: bool,
}

#[derive(Default)]
struct State {
    /// Set by `close` before unsubscribing; the revocation that follows sets `left`.
    closing: bool,
    left: bool,
    epochs: HashMap<i32, u64>,
    tracks: HashMap<i32, Track>,
    /// (partition, ordering key) → records waiting behind the one out.
    keys: HashMap<(i32, String), VecDeque<Pending>>,
}

impl State {
    fn epoch(&self, partition: i32) -> u64 {
        self.epochs.get(&partition).copied().unwrap_or(0)
    }
}

/// Forgets what a member held of the partitions it loses.
pub(crate) struct Ctx {
    state: Arc<Mutex<State>>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let revoked: Vec<i32> = match rebalance {
            Rebalance::Revoke(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
            _ => return,
        };
        let mut st = self.state.lock();
        st.left |= st.closing;
        for p in revoked {
            *st.epochs.entry(p).or_default() += 1;
            st.tracks.remove(&p);
            st.keys.retain(|(kp, _), _| *kp != p);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // A partition paused for too many unsettled records stays paused in
        // librdkafka across a reassignment, while its track (and pause flag)
        // here starts afresh: resume what comes back.
        if let Rebalance::Assign(tpl) = rebalance {
            let _ = consumer.resume(tpl);
        }
    }
}

pub(crate) struct Member {
    shared: Arc<Shared>,
    topic: String,
    subscriber: String,
    kafka_topic: String,
    consumer: Arc<StreamConsumer<Ctx>>,
    state: Arc<Mutex<State>>,
    ready_tx: mpsc::UnboundedSender<Pending>,
    ready_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    stop: Notify,
}

impl Member {
    /// Joins the group of (`topic`, `subscriber`) and starts reading `kafka_topic`.
    pub fn start(
        shared: Arc<Shared>,
        topic: &str,
        subscriber: &str,
        kafka_topic: &str,
    ) -> Result<Arc<Self>, QueueError> {
        let state = Arc::new(Mutex::new(State::default()));
        let session = shared.cfg.session_timeout.as_millis().max(6000);
        let consumer: StreamConsumer<Ctx> = shared
            .cfg
            .client_config()
            .set("group.id", shared.group(topic, subscriber))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 6).to_string())
            .create_with_context(Ctx {
                state: state.clone(),
            })
            .map_err(|e| storage("creating a kafka consumer", e))?;
        consumer
            .subscribe(&[kafka_topic])
            .map_err(|e| storage("subscribing to a kafka topic", e))?;
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        let member = Arc::new(Self {
            shared,
            topic: topic.to_owned(),
            subscriber: subscriber.to_owned(),
            kafka_topic: kafka_topic.to_owned(),
            consumer: Arc::new(consumer),
            state,
            ready_tx,
            ready_rx: tokio::sync::Mutex::new(ready_rx),
            stop: Notify::new(),
        });
        tokio::spawn(member.clone().pump());
        Ok(member)
    }

    /// Reads records until stopped.
    async fn pump(self: Arc<Self>) {
        loop {
            let got = tokio::select! {
                _ = self.stop.notified() => return,
                got = self.consumer.recv() => got,
            };
            match got {
                Ok(m) => self.take(&m),
                Err(e) => {
                    tracing::debug!(error = %e, subscriber = %self.subscriber, "kafka consumer");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Tracks a record just read and hands it on (or holds it behind its key).
    fn take(&self, m: &BorrowedMessage<'_>) {
        let (partition, offset) = (m.partition(), m.offset());
        let header = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == envelope::HEADER)
                .and_then(|h| h.value)
        });
        let env = Envelope::parse(header, None, None, &self.topic, now_ms());
        let body = m.payload().unwrap_or_default().to_vec();
        let mut st = self.state.lock();
        let epoch = st.epoch(partition);
        let track = st.tracks.entry(partition).or_default();
        track.unsettled.insert(offset);
        track.next = offset + 1;
        if track.unsettled.len() >= MAX_UNSETTLED && !track.paused {
            track.paused = true;
            let _ = self.consumer.pause(&self.one(partition));
        }
        if !env.subscribers.is_empty() && !env.subscribers.contains(&self.subscriber) {
            // For other subscribers only (a replay, or a subscriber since dropped).
            self.settled(&mut st, partition, offset);
            return;
        }
        let p = Pending {
            attempts: env.attempts,
            history: env.history.clone(),
            message: Arc::new(env.message(body)),
            partition,
            offset,
            epoch,
        };
        match p.message.ordering_key.clone() {
            Some(key) => match st.keys.get_mut(&(partition, key.clone())) {
                Some(waiting) => waiting.push_back(p),
                None => {
                    st.keys.insert((partition, key), VecDeque::new());
                    let _ = self.ready_tx.send(p);
                }
            },
            None => {
                let _ = self.ready_tx.send(p);
            }
        }
    }

    fn one(&self, partition: i32) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.kafka_topic, partition);
        tpl
    }

    /// Marks `offset` settled and stores the partition's new commit point.
    fn settled(&self, st: &mut State, partition: i32, offset: i64) {
        let Some(track) = st.tracks.get_mut(&partition) else {
            return;
        };
        track.unsettled.remove(&offset);
        let commit = track.unsettled.first().copied().unwrap_or(track.next);
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&self.kafka_topic, partition, Offset::Offset(commit));
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            tracing::debug!(error = %e, "storing a kafka offset");
        }
        if track.paused && track.unsettled.len() < MAX_UNSETTLED / 2 {
            track.paused = false;
            let _ = self.consumer.resume(&self.one(partition));
        }
    }

    /// `p` is done (delivered or dead): its offset settles and the next record
    /// of its key goes out.
    fn finish(&self, p: &Pending) {
        let mut st = self.state.lock();
        if st.epoch(p.partition) != p.epoch {
            return;
        }
        self.settled(&mut st, p.partition, p.offset);
        if let Some(key) = &p.message.ordering_key {
            let slot = (p.partition, key.clone());
            let next = st.keys.get_mut(&slot).and_then(VecDeque::pop_front);
            match next {
                Some(n) => {
                    let _ = self.ready_tx.send(n);
                }
                None => {
                    st.keys.remove(&slot);
                }
            }
        }
    }

    /// Hands `p` out again after `after` (its key stays held meanwhile).
    fn again(&self, p: Pending, after: Duration) {
        if after.is_zero() {
            let _ = self.ready_tx.send(p);
            return;
        }
        let (tx, state) = (self.ready_tx.clone(), self.state.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if state.lock().epoch(p.partition) == p.epoch {
                let _ = tx.send(p);
            }
        });
    }

    /// Stops reading, commits what was stored and leaves the group, so the
    /// others take its partitions at once rather than after the session timeout.
    pub async fn close(&self) {
        self.stop.notify_waiters();
        self.stop.notify_one();
        self.state.lock().closing = true;
        let consumer = self.consumer.clone();
        // Unsubscribing revokes the partitions, and librdkafka commits the
        // stored offsets (never the read position) as it does.
        let _ = blocking(move || consumer.unsubscribe()).await;
        // librdkafka leaves the group once the revocation was served, which
        // happens in a poll: poll (anything read now is read again by the
        // next owner) until it was, bounded.
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while !self.state.lock().left {
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
            }
        })
        .await;
    }
}

/// A dispatcher lane of a subscriber: takes from its member's hand-out queue.
pub(crate) struct Lane {
    member: Arc<Member>,
}

impl Lane {
    pub fn new(member: Arc<Member>) -> Self {
        Self { member }
    }

    fn delivery(&self, p: Pending) -> Delivery {
        Delivery::new(
            p.message.clone(),
            self.member.subscriber.clone(),
            p.attempts,
            p.message.enqueued_at_ms,
            AckToken::Other(Box::new(Unsettled {
                pending: Some(p),
                back: self.member.ready_tx.clone(),
            })),
            self.member.clone(),
        )
    }
}

#[async_trait]
impl Subscription for Lane {
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let m = &self.member;
        m.shared.check_open()?;
        let deadline = tokio::time::Instant::now() + IDLE;
        let Ok(mut rx) = tokio::time::timeout_at(deadline, m.ready_rx.lock()).await else {
            return Ok(Vec::new());
        };
        let mut got = Vec::new();
        if let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            got.push(p);
            while got.len() < max {
                match rx.try_recv() {
                    Ok(p) => got.push(p),
                    Err(_) => break,
                }
            }
        }
        drop(rx);
        let st = m.state.lock();
        let live: Vec<Pending> = got
            .into_iter()
            .filter(|p| st.epoch(p.partition) == p.epoch)
            .collect();
        drop(st);
        Ok(live.into_iter().map(|p| self.delivery(p)).collect())
    }
}

#[async_trait]
impl Settle for Member {
    async fn settle(&self, d: Delivery, how: Settlement) -> Result<(), QueueError> {
        let AckToken::Other(token) = d.token else {
            return Err(QueueError::Unsupported("not a kafka delivery"));
        };
        let Ok(mut held) = token.downcast::<Unsettled>() else {
            return Err(QueueError::Unsupported("not a kafka delivery"));
        };
        let Some(mut p) = held.pending.take() else {
            return Err(QueueError::Unsupported("a kafka delivery settled twice"));
        };
        match how {
            Settlement::Ack { .. } => self.finish(&p),
            Settlement::Release => {
                let _ = self.ready_tx.send(p);
            }
            Settlement::Retry { attempt, after } => {
                p.attempts += 1;
                p.history.push(attempt);
                trim(&mut p.history);
                self.again(p, after);
            }
            Settlement::Dead { attempt, reason } => {
                let mut env = Envelope::of(&p.message);
                env.attempts = p.attempts;
                env.history = p.history.clone();
                env.mark_dead(attempt, &self.subscriber, reason, now_ms());
                // One record key per dead-lettering: a replay's tombstone then
                // removes exactly the letter replayed, never a later one.
                let key = super::ledger::record_key(
                    &dead_letter_id(p.message.id.as_str(), &self.subscriber),
                    env.dead_at_ms.unwrap_or_default(),
                );
                let dlq = self.shared.dlq_topic(&p.message.topic, &self.subscriber);
                let produced = self
                    .shared
                    .produce(&dlq, Some(&key), Some(&env), Some(&p.message.body))
                    .await;
                if let Err(e) = produced {
                    // Not recorded: hand it out again (after a pause, so a
                    // dead-letter topic that keeps refusing is not a busy
                    // loop) rather than lose it.
                    self.again(p, DEAD_LETTER_BACKOFF);
                    return Err(e);
                }
                self.finish(&p);
            }
        }
        Ok(())
    }
}

fn trim(history: &mut Vec<AttemptRecord>) {
    crate::envelope::trim_history(history);
}
