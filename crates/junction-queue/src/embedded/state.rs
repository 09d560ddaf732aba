//! In-memory state of the embedded broker: depth counters, leases, notifiers, id source.
//!
//! Only small things live here, so memory stays bounded however many messages are
//! pending: counters per topic, the set of leased deliveries (in flight, bounded by
//! dispatcher concurrency) and one `Notify` per subscriber. Messages and the due
//! index live in redb. Leases are deliberately not persisted: after a restart every
//! pending delivery is due again (at-least-once).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};
use tokio::sync::Notify;
use uuid::{Builder, Uuid};

use super::hot::Hot;
use super::journal::Pos;
use super::tables::DiskFault;
use crate::types::DepthSnapshot;

pub(crate) use crate::types::now_ms;

/// Exact depth counters; the writer keeps a working copy and publishes it after commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Undelivered messages per topic.
    pub depth: BTreeMap<String, u64>,
    /// Dead letters per topic.
    pub dlq: BTreeMap<String, u64>,
    /// Pending deliveries per subscriber (its backlog). The writer's copy counts
    /// redb's only; the published one adds the fast path's. Not stored: `open`
    /// counts redb's from the due and order indexes.
    pub backlog: BTreeMap<String, u64>,
}

impl Counters {
    /// Sum of undelivered messages over all topics.
    pub fn total(&self) -> u64 {
        self.depth.values().sum()
    }

    /// Adds `delta` to one counter, never going below zero.
    pub fn add(map: &mut BTreeMap<String, u64>, topic: &str, delta: i64) {
        let v = map.entry(topic.to_owned()).or_insert(0);
        *v = v.saturating_add_signed(delta);
    }

    /// The public snapshot.
    pub fn snapshot(&self) -> DepthSnapshot {
        DepthSnapshot {
            total: self.total(),
            dlq_total: self.dlq.values().sum(),
            topics: self.depth.clone(),
            dlq: self.dlq.clone(),
            subscribers: self.backlog.clone(),
        }
    }
}

/// Per-subscriber in-memory state.
#[derive(Debug)]
pub(crate) struct SubscriberState {
    /// Message ids leased to a dispatcher. Held while scanning the due index so a
    /// scan and a post-commit lease removal never interleave (see `lease_due`).
    leases: Mutex<HashSet<String>>,
    /// Woken when something becomes due.
    notify: Arc<Notify>,
    /// Bumped by the writer after each commit that put something in redb's due index
    /// for this subscriber; `cold_seen_empty` is the generation at which a scan last
    /// found none. While they differ, leasing must look at redb (not only the hot set).
    cold_gen: AtomicU64,
    cold_seen_empty: AtomicU64,
}

impl Default for SubscriberState {
    fn default() -> Self {
        Self {
            leases: Mutex::default(),
            notify: Arc::default(),
            // Unknown at start: the first lease looks at redb.
            cold_gen: AtomicU64::new(1),
            cold_seen_empty: AtomicU64::new(0),
        }
    }
}

impl SubscriberState {
    /// The current cold generation (read before scanning redb's due index).
    pub fn cold_gen(&self) -> u64 {
        self.cold_gen.load(Ordering::Acquire)
    }

    /// Whether redb's due index may hold something for this subscriber.
    pub fn may_have_cold(&self) -> bool {
        self.cold_gen() != self.cold_seen_empty.load(Ordering::Acquire)
    }

    /// A scan that started at generation `gen` found nothing for this subscriber.
    pub fn saw_no_cold(&self, gen: u64) {
        self.cold_seen_empty.store(gen, Ordering::Release);
    }

    /// The writer committed a due entry for this subscriber.
    pub fn mark_cold(&self) {
        self.cold_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Locks the lease set.
    pub fn leases(&self) -> MutexGuard<'_, HashSet<String>> {
        self.leases.lock()
    }

    /// The subscriber's notifier.
    pub fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// Wakes every waiter and leaves one permit for the next one to wait.
    pub fn wake(&self) {
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
}

/// Counts of the writer's work, to see group commit at work (and export as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Of which fsynced (`Durability::Immediate`).
    pub fsyncs: u64,
    /// Operations (enqueues, acks, ...) committed.
    pub ops: u64,
}

/// State shared by the broker handle and its writer.
#[derive(Debug, Default)]
pub(crate) struct MemState {
    /// Published counters (as of the last commit).
    pub counters: RwLock<Counters>,
    /// Writer statistics.
    pub commit_stats: Mutex<CommitStats>,
    /// Messages on the fast path (journal + memory), see `hot.rs`.
    pub hot: Mutex<Hot>,
    /// Where overflowed messages start in the journal, and how many per topic and
    /// per subscriber (see `writer/fastpath.rs`), as of the last commit.
    pub overflow: Mutex<Option<OverflowSummary>>,
    subscribers: Mutex<HashMap<String, Arc<SubscriberState>>>,
    /// The last write the disk refused, until a probe shows it takes writes again
    /// (see `guard.rs`).
    fault: Mutex<Option<Fault>>,
    /// New events are refused up front (the directory vanished: see [`DiskFault`]).
    refusing: AtomicBool,
}

/// The published view of the journal's overflowed messages.
#[derive(Clone, Debug)]
pub(crate) struct OverflowSummary {
    pub cursor: Pos,
    /// Per topic.
    pub depth: BTreeMap<String, u64>,
    /// Per subscriber.
    pub subs: BTreeMap<String, u64>,
}

/// A write the disk refused (full, read-only, gone).
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub kind: DiskFault,
    pub error: String,
    /// Bumped by every fault, so a recovery clears only the faults it saw.
    pub generation: u64,
}

impl MemState {
    /// A fresh state that keeps `old`'s subscriber notifiers: subscriptions made
    /// before a reopen still hear of new work.
    pub fn adopting(old: &MemState) -> Self {
        let this = Self::default();
        {
            let mut subs = this.subscribers.lock();
            for (name, s) in old.subscribers.lock().iter() {
                let state = SubscriberState {
                    notify: s.notifier(),
                    ..SubscriberState::default()
                };
                subs.insert(name.clone(), Arc::new(state));
            }
        }
        this
    }

    /// Records a failed write that was the disk's fault (never downgrading one
    /// that takes more to recover from: a database fault stays one when a
    /// journal write fails too).
    pub fn note_fault(&self, kind: DiskFault, error: String) {
        let mut fault = self.fault.lock();
        let generation = fault.as_ref().map_or(0, |f| f.generation) + 1;
        let kind = fault.as_ref().map_or(kind, |f| f.kind.max(kind));
        self.refusing
            .store(kind == DiskFault::Vanished, Ordering::Release);
        *fault = Some(Fault {
            kind,
            error,
            generation,
        });
    }

    /// Whether new events are refused without trying (read on every enqueue).
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Acquire)
    }

    /// The unrecovered fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().clone()
    }

    /// Clears the fault if no other came after `generation`.
    pub fn clear_fault(&self, generation: u64) -> bool {
        let mut fault = self.fault.lock();
        if fault.as_ref().is_some_and(|f| f.generation == generation) {
            *fault = None;
            self.refusing.store(false, Ordering::Release);
            return true;
        }
        false
    }

    /// Wakes every subscriber's dispatcher.
    pub fn wake_all(&self) {
        for s in self.subscribers.lock().values() {
            s.wake();
        }
    }

    /// State of `name`, created on first use.
    pub fn subscriber(&self, name: &str) -> Arc<SubscriberState> {
        let mut subs = self.subscribers.lock();
        if let Some(s) = subs.get(name) {
            return Arc::clone(s);
        }
        let s = Arc::new(SubscriberState::default());
        subs.insert(name.to_owned(), Arc::clone(&s));
        s
    }

    /// State of `name` if it was ever used.
    pub fn existing_subscriber(&self, name: &str) -> Option<Arc<SubscriberState>> {
        self.subscribers.lock().get(name).cloned()
    }

    /// Drops a lease (no-op when absent) and wakes the subscriber if asked.
    pub fn unlease(&self, subscriber: &str, id: &str, wake: bool) {
        if let Some(s) = self.existing_subscriber(subscriber) {
            let removed = s.leases().remove(id);
            if wake && removed {
                s.wake();
            }
        }
    }

    /// Wakes a subscriber's dispatcher.
    pub fn wake(&self, subscriber: &str) {
        self.subscriber(subscriber).wake();
    }
}

/// Strictly increasing UUID v7 ids (time ordered even within one millisecond and when
/// the clock steps back: the 74 random bits then act as a counter).
#[derive(Debug, Default)]
pub(crate) struct IdGen {
    last: u128,
}

const RAND_B_BITS: u32 = 62;
const COUNTER_MASK: u128 = (1 << 74) - 1;

impl IdGen {
    /// Starts after `last` (the greatest id on disk), if any.
    pub fn after(last: Option<&str>) -> Self {
        let last = last
            .and_then(|s| Uuid::parse_str(s).ok())
            .map_or(0, |u| u.as_u128());
        Self { last }
    }

    /// Next id, greater than every id handed out before.
    pub fn next(&mut self, now_ms: u64) -> Uuid {
        let candidate =
            Builder::from_unix_timestamp_millis(now_ms, &rand::random::<[u8; 10]>()).into_uuid();
        let id = if candidate.as_u128() > self.last {
            candidate.as_u128()
        } else {
            bump(self.last)
        };
        self.last = id;
        Uuid::from_u128(id)
    }
}

/// The v7 id right after `v`: counter (rand_a ++ rand_b) + 1, carrying into the time.
fn bump(v: u128) -> u128 {
    let ts = v >> 80;
    let rand_a = (v >> 64) & 0xfff;
    let rand_b = v & ((1 << RAND_B_BITS) - 1);
    let mut counter = ((rand_a << RAND_B_BITS) | rand_b) + 1;
    let mut ts = ts;
    if counter > COUNTER_MASK {
        counter = 0;
        ts += 1;
    }
    (ts << 80)
        | (0x7 << 76)
        | ((counter >> RAND_B_BITS) << 64)
        | (0b10 << 62)
        | (counter & ((1 << RAND_B_BITS) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_strictly_increasing_even_when_the_clock_steps_back() {
        let mut gen = IdGen::default();
        let mut prev = String::new();
        for now in [1_000u64, 1_000, 1_000, 999, 5, 2_000, 2_000] {
            let id = gen.next(now);
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let s = id.to_string();
            assert!(s > prev, "{s} must sort after {prev}");
            prev = s;
        }
    }

    #[test]
    fn bump_carries_into_the_timestamp() {
        let max_counter = Builder::from_unix_timestamp_millis(7, &[0xff; 10])
            .into_uuid()
            .as_u128();
        let next = Uuid::from_u128(bump(max_counter));
        assert_eq!(next.get_version_num(), 7);
        assert_eq!(next.as_u128() >> 80, 8);
        assert!(next.as_u128() > max_counter);
    }

    #[test]
    fn idgen_resumes_after_the_last_stored_id() {
        let mut a = IdGen::default();
        let far = a.next(u64::from(u32::MAX) * 10).to_string();
        let mut b = IdGen::after(Some(&far));
        assert!(b.next(1).to_string() > far);
    }

    #[test]
    fn a_fault_is_cleared_only_by_a_recovery_that_saw_it_and_a_database_fault_stays() {
        let mem = MemState::default();
        mem.note_fault(DiskFault::Database, "full".into());
        let seen = mem.fault().unwrap();
        mem.note_fault(DiskFault::Journal, "still full".into());
        let now = mem.fault().unwrap();
        assert_eq!(now.kind, DiskFault::Database, "redb still needs reopening");
        assert!(
            !mem.clear_fault(seen.generation),
            "a newer fault is not cleared"
        );
        assert!(mem.clear_fault(now.generation));
        assert!(mem.fault().is_none());
        mem.note_fault(DiskFault::Vanished, "gone".into());
        assert!(mem.refusing());
        mem.note_fault(DiskFault::Journal, "and full".into());
        let f = mem.fault().unwrap();
        assert_eq!(f.kind, DiskFault::Vanished);
        assert!(mem.clear_fault(f.generation));
        assert!(!mem.refusing());
    }

    #[test]
    fn a_reopened_state_keeps_the_notifiers() {
        let old = MemState::default();
        let notify = old.subscriber("s").notifier();
        old.subscriber("s").leases().insert("m1".into());
        let new = MemState::adopting(&old);
        assert!(Arc::ptr_eq(&notify, &new.subscriber("s").notifier()));
        assert!(
            new.subscriber("s").leases().is_empty(),
            "leases start empty"
        );
    }

    #[test]
    fn counters_never_go_negative() {
        let mut c = Counters::default();
        Counters::add(&mut c.depth, "t", 2);
        Counters::add(&mut c.depth, "t", -5);
        Counters::add(&mut c.dlq, "t", 1);
        let s = c.snapshot();
        assert_eq!(s.total, 0);
        assert_eq!(s.dlq_total, 1);
    }
}
