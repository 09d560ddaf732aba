//! The fast path: recent messages held in memory (and in the journal) until every
//! subscriber has them, so the common case — accepted, delivered at the first try —
//! never touches redb's B-trees except for one small completed record.
//!
//! A message takes the fast path when it has subscribers and no ordering key (an
//! idempotency key is recorded in redb and journaled with it). The hot set is bounded (by default [`MAX_MESSAGES`] and [`MAX_BYTES`]
//! of bodies), so memory stays bounded whatever the backlog: past that, such
//! enqueues are only journaled and loaded in later (overflow, see `writer/fastpath.rs`).
//! A message leaves the hot set when
//! - every subscriber acknowledged it: the writer stores its completed record; or
//! - any subscriber needs a retry or a dead letter, or its journal segment is getting
//!   old: the writer *spills* it into redb as an ordinary pending message (with what
//!   was already delivered), and redb's machinery takes over.
//!
//! Only the writer changes this set; leasing reads it under the same lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::types::{
    AttemptRecord, DeliveryState, Lease, Message, MessageId, MessageStatus, SubscriberStatus,
};

/// Most messages held on the fast path, by default.
pub const MAX_MESSAGES: usize = 50_000;
/// Most body bytes held on the fast path, by default.
pub const MAX_BYTES: usize = 64 << 20;

/// A message on the fast path.
#[derive(Debug)]
pub(crate) struct HotMessage {
    pub message: Arc<Message>,
    /// Journal segment holding its `ENQ` record.
    pub segment: u64,
    /// Per subscriber (in `message.subscribers` order): the attempt that delivered it.
    pub delivered: Vec<Option<AttemptRecord>>,
}

/// What an acknowledgement did to a hot message.
#[derive(Debug)]
pub(crate) enum HotAck {
    /// The message is not on the fast path.
    NotHot,
    /// Already acknowledged by that subscriber, or not one of its subscribers.
    Ignored,
    /// Recorded; others still wait for it.
    Recorded,
    /// Recorded, and it was the last one: the message left the hot set.
    Completed(HotMessage),
}

/// The hot set: messages, per-subscriber queues and counters.
#[derive(Debug)]
pub(crate) struct Hot {
    max_messages: usize,
    max_bytes: usize,
    msgs: HashMap<String, HotMessage>,
    /// Per subscriber: hot message ids it still has to receive and holds no lease
    /// on, oldest first (leasing takes from the front; a release puts one back).
    unleased: HashMap<String, BTreeSet<String>>,
    bytes: usize,
    /// Per subscriber: hot messages it has not received (leased or not), its share
    /// of the backlog.
    owed: BTreeMap<String, u64>,
    /// Hot messages per topic (part of the queue depth).
    depth: BTreeMap<String, u64>,
    /// Hot messages per journal segment.
    per_segment: BTreeMap<u64, u64>,
    /// Every hot message id, oldest first.
    order: BTreeSet<String>,
    /// Completed messages whose completed record the writer has not stored in redb
    /// yet (it batches them), with their completion time: still visible to `status`.
    done: HashMap<String, (Arc<HotMessage>, u64)>,
}

impl Default for Hot {
    fn default() -> Self {
        Self::with_limits(MAX_MESSAGES, MAX_BYTES)
    }
}

impl Hot {
    /// An empty hot set holding at most `max_messages` and `max_bytes` of bodies.
    pub fn with_limits(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            max_messages,
            max_bytes,
            msgs: HashMap::new(),
            unleased: HashMap::new(),
            bytes: 0,
            owed: BTreeMap::new(),
            depth: BTreeMap::new(),
            per_segment: BTreeMap::new(),
            order: BTreeSet::new(),
            done: HashMap::new(),
        }
    }

    /// Whether `more` messages with `more_bytes` of bodies still fit.
    pub fn has_room(&self, more: usize, more_bytes: usize) -> bool {
        self.msgs.len() + more <= self.max_messages && self.bytes + more_bytes <= self.max_bytes
    }

    /// Most messages it holds.
    pub fn capacity(&self) -> usize {
        self.max_messages
    }

    /// Free room: messages, body bytes.
    pub fn room(&self) -> (usize, usize) {
        (
            self.max_messages.saturating_sub(self.msgs.len()),
            self.max_bytes.saturating_sub(self.bytes),
        )
    }

    /// Hot messages per topic.
    pub fn depth(&self) -> &BTreeMap<String, u64> {
        &self.depth
    }

    /// Adds a journaled message.
    pub fn insert(&mut self, m: HotMessage) {
        let id = m.message.id.as_str().to_owned();
        for (sub, done) in m.message.subscribers.iter().zip(&m.delivered) {
            if done.is_none() {
                self.unleased
                    .entry(sub.clone())
                    .or_default()
                    .insert(id.clone());
                match self.owed.get_mut(sub) {
                    Some(n) => *n += 1,
                    None => drop(self.owed.insert(sub.clone(), 1)),
                }
            }
        }
        self.bytes += m.message.body.len();
        *self.depth.entry(m.message.topic.clone()).or_insert(0) += 1;
        *self.per_segment.entry(m.segment).or_insert(0) += 1;
        self.order.insert(id.clone());
        self.msgs.insert(id, m);
    }

    /// Whether `sub` has a hot delivery nobody holds.
    pub fn has_unleased(&self, sub: &str) -> bool {
        self.unleased.get(sub).is_some_and(|ids| !ids.is_empty())
    }

    /// Leases up to `max` hot deliveries of `sub`, oldest first, adding them to
    /// `leases` (the subscriber's lease set, shared with redb's deliveries).
    pub fn lease(
        &mut self,
        sub: &str,
        leases: &mut HashSet<String>,
        max: usize,
        out: &mut Vec<Lease>,
    ) {
        let Some(ids) = self.unleased.get_mut(sub) else {
            return;
        };
        let (mut taken, mut held) = (0, Vec::new());
        while taken < max {
            let Some(id) = ids.pop_first() else { break };
            let Some(m) = self.msgs.get(&id) else {
                continue;
            };
            if leases.contains(&id) {
                // Still held (a release in progress): it stays queued.
                held.push(id);
                continue;
            }
            leases.insert(id);
            out.push(Lease {
                message: Arc::clone(&m.message),
                subscriber: sub.to_owned(),
                attempts: 0,
                first_enqueued_ms: m.message.enqueued_at_ms,
            });
            taken += 1;
        }
        ids.extend(held);
    }

    /// A lease on `id` for `sub` was given back without an outcome: it can be leased again.
    pub fn unlease(&mut self, id: &str, sub: &str) {
        let Some(m) = self.msgs.get(id) else { return };
        let owed = m
            .message
            .subscribers
            .iter()
            .zip(&m.delivered)
            .any(|(s, d)| s == sub && d.is_none());
        if owed {
            self.unleased
                .entry(sub.to_owned())
                .or_default()
                .insert(id.to_owned());
        }
    }

    /// Records that `sub` received `id`.
    pub fn ack(&mut self, id: &str, sub: &str, attempt: &AttemptRecord) -> HotAck {
        let Some(m) = self.msgs.get_mut(id) else {
            return HotAck::NotHot;
        };
        let Some(i) = m.message.subscribers.iter().position(|s| s == sub) else {
            return HotAck::Ignored;
        };
        if m.delivered[i].is_some() {
            return HotAck::Ignored;
        }
        m.delivered[i] = Some(AttemptRecord {
            attempt: 1,
            ..attempt.clone()
        });
        if let Some(set) = self.unleased.get_mut(sub) {
            set.remove(id);
        }
        if let Some(n) = self.owed.get_mut(sub) {
            *n = n.saturating_sub(1);
        }
        if m.delivered.iter().all(Option::is_some) {
            match self.remove(id) {
                Some(m) => HotAck::Completed(m),
                None => HotAck::Ignored,
            }
        } else {
            HotAck::Recorded
        }
    }

    /// Takes `id` off the fast path (to spill it, or because it completed).
    pub fn remove(&mut self, id: &str) -> Option<HotMessage> {
        let m = self.msgs.remove(id)?;
        self.order.remove(id);
        for (sub, done) in m.message.subscribers.iter().zip(&m.delivered) {
            if let Some(set) = self.unleased.get_mut(sub) {
                set.remove(id);
            }
            if done.is_none() {
                if let Some(n) = self.owed.get_mut(sub) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        self.bytes -= m.message.body.len();
        if let Some(d) = self.depth.get_mut(&m.message.topic) {
            *d = d.saturating_sub(1);
        }
        if let Some(n) = self.per_segment.get_mut(&m.segment) {
            *n -= 1;
            if *n == 0 {
                self.per_segment.remove(&m.segment);
            }
        }
        Some(m)
    }

    /// Keeps a completed message visible until its record is in redb.
    pub fn park_done(&mut self, m: Arc<HotMessage>, completed_at_ms: u64) {
        self.done
            .insert(m.message.id.as_str().to_owned(), (m, completed_at_ms));
    }

    /// Their records are in redb now.
    pub fn unpark_done<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            self.done.remove(id);
        }
    }

    /// Up to `limit` of the oldest hot message ids.
    pub fn oldest(&self, limit: usize) -> Vec<String> {
        self.order.iter().take(limit).cloned().collect()
    }

    /// Per subscriber: hot messages it has not received.
    pub fn owed(&self) -> &BTreeMap<String, u64> {
        &self.owed
    }

    /// How many hot messages `sub` has not received.
    pub fn owed_to(&self, sub: &str) -> u64 {
        self.owed.get(sub).copied().unwrap_or(0)
    }

    /// The oldest hot message `sub` has not received and holds no lease on
    /// (`leases`: its lease set; a message put back after a failed batch is
    /// listed as unleased while its lease may still be held).
    pub fn oldest_unleased(&self, sub: &str, leases: &HashSet<String>) -> Option<&str> {
        self.unleased
            .get(sub)?
            .iter()
            .find(|id| !leases.contains(*id))
            .map(String::as_str)
    }

    /// How many hot messages `sub` still has to receive and holds no lease on.
    pub fn unleased_for(&self, sub: &str) -> usize {
        self.unleased.get(sub).map_or(0, BTreeSet::len)
    }

    /// Whether any hot message still lives in journal segment `seg`.
    pub fn uses_segment(&self, seg: u64) -> bool {
        self.per_segment.contains_key(&seg)
    }

    /// The journal segments before `seg` that hot messages still use.
    pub fn segments_before(&self, seg: u64) -> impl Iterator<Item = u64> + '_ {
        self.per_segment.range(..seg).map(|(s, _)| *s)
    }

    /// Up to `limit` ids of hot messages journaled in segments before `seg`.
    pub fn ids_before_segment(&self, seg: u64, limit: usize) -> Vec<String> {
        if self.per_segment.range(..seg).next().is_none() {
            return Vec::new();
        }
        self.msgs
            .iter()
            .filter(|(_, m)| m.segment < seg)
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Admin view of a hot message.
    /// (`leased` is left false: the caller fills it in after releasing the lock.)
    pub fn status(&self, id: &str) -> Option<MessageStatus> {
        match (self.msgs.get(id), self.done.get(id)) {
            (Some(m), _) => Some(status_of(m, None)),
            (None, Some((m, at))) => Some(status_of(m, Some(*at))),
            (None, None) => None,
        }
    }
}

/// Admin view of a fast-path message (`leased` left false).
pub(crate) fn status_of(m: &HotMessage, completed_at_ms: Option<u64>) -> MessageStatus {
    let msg = &m.message;
    let subscribers = msg
        .subscribers
        .iter()
        .zip(&m.delivered)
        .map(|(sub, done)| match done {
            Some(a) => SubscriberStatus {
                subscriber: sub.clone(),
                state: DeliveryState::Delivered,
                attempts: 1,
                next_attempt_at_ms: None,
                history: vec![a.clone()],
                leased: false,
            },
            None => SubscriberStatus {
                subscriber: sub.clone(),
                state: DeliveryState::Pending {
                    next_attempt_at_ms: msg.enqueued_at_ms,
                },
                attempts: 0,
                next_attempt_at_ms: Some(msg.enqueued_at_ms),
                history: Vec::new(),
                leased: false,
            },
        })
        .collect();
    MessageStatus {
        id: MessageId::new(msg.id.as_str()),
        topic: msg.topic.clone(),
        ordering_key: None,
        enqueued_at_ms: msg.enqueued_at_ms,
        completed_at_ms,
        subscribers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot_msg(id: &str, seg: u64) -> HotMessage {
        HotMessage {
            message: Arc::new(Message {
                id: MessageId::new(id),
                topic: "t".into(),
                body: bytes::Bytes::from_static(b"{}"),
                content_type: None,
                headers: Vec::new(),
                ordering_key: None,
                enqueued_at_ms: 1,
                subscribers: vec!["a".into(), "b".into()],
            }),
            segment: seg,
            delivered: vec![None, None],
        }
    }

    fn ok() -> AttemptRecord {
        AttemptRecord {
            attempt: 7,
            at_ms: 2,
            outcome: "status 200".into(),
            duration_ms: 1,
            response: None,
        }
    }

    #[test]
    fn leases_skip_held_ones_and_the_last_ack_completes() {
        let mut hot = Hot::default();
        hot.insert(hot_msg("m1", 1));
        hot.insert(hot_msg("m2", 2));
        let (mut leases, mut out) = (HashSet::new(), Vec::new());
        hot.lease("a", &mut leases, 1, &mut out);
        hot.lease("a", &mut leases, 5, &mut out);
        let ids: Vec<_> = out
            .iter()
            .map(|d| d.message.id.as_str().to_owned())
            .collect();
        assert_eq!(ids, ["m1", "m2"]);
        assert!(!hot.has_unleased("a"));
        // A released lease can be taken again.
        leases.remove("m2");
        hot.unlease("m2", "a");
        assert!(hot.has_unleased("a"));
        assert!(matches!(hot.ack("m1", "a", &ok()), HotAck::Recorded));
        assert_eq!(hot.unleased_for("a"), 1);
        assert_eq!(hot.unleased_for("b"), 2);
        hot.unlease("m1", "a"); // delivered to a already: not owed
        assert_eq!(hot.unleased_for("a"), 1);
        assert_eq!(hot.oldest(1), vec!["m1".to_string()]);
        assert!(matches!(hot.ack("m1", "a", &ok()), HotAck::Ignored));
        assert!(matches!(hot.ack("m1", "zz", &ok()), HotAck::Ignored));
        let st = hot.status("m1").unwrap();
        assert_eq!(st.subscribers[0].state, DeliveryState::Delivered);
        assert_eq!(st.subscribers[0].history[0].attempt, 1);
        assert!(st.subscribers[1].next_attempt_at_ms.is_some());
        let HotAck::Completed(m1) = hot.ack("m1", "b", &ok()) else {
            panic!("m1 completes")
        };
        assert!(matches!(hot.ack("m1", "b", &ok()), HotAck::NotHot));
        assert_eq!(hot.oldest(5), vec!["m2".to_string()]);
        hot.park_done(Arc::new(m1), 9);
        assert_eq!(hot.status("m1").unwrap().completed_at_ms, Some(9));
        hot.unpark_done(["m1"]);
        assert!(hot.status("m1").is_none());
        assert_eq!(hot.depth().get("t"), Some(&1));
        assert!(!hot.uses_segment(1));
        assert_eq!(hot.ids_before_segment(3, 10), vec!["m2".to_string()]);
        assert!(hot.ids_before_segment(2, 10).is_empty());
    }

    #[test]
    fn a_lease_racing_a_release_never_loses_the_delivery() {
        let mut hot = Hot::default();
        hot.insert(hot_msg("m1", 1));
        let (mut leases, mut out) = (HashSet::new(), Vec::new());
        hot.lease("a", &mut leases, 5, &mut out);
        assert_eq!(out.len(), 1);
        // Queued again while the lease set still holds it (a release half done)...
        hot.unlease("m1", "a");
        out.clear();
        hot.lease("a", &mut leases, 5, &mut out);
        assert!(out.is_empty(), "still held: not leased twice");
        // ...and once the lease is gone, it is leased again, not lost.
        leases.remove("m1");
        hot.lease("a", &mut leases, 5, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn room_is_bounded_by_count_and_bytes() {
        let hot = Hot::default();
        assert!(hot.has_room(MAX_MESSAGES, 0));
        assert!(!hot.has_room(MAX_MESSAGES + 1, 0));
        assert!(!hot.has_room(1, MAX_BYTES + 1));
    }
}
