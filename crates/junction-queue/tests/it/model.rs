//! Randomized model test of the embedded broker: random operations (with restarts)
//! against a plain in-memory model; after every step the leasable set, depth, DLQ and
//! the stored index invariants must agree with the model.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use junction_queue::conformance::{now_ms, request};
use junction_queue::{
    dead_letter_id, DeliveryState, DlqAction, DlqFilter, EnqueueOutcome, IndexedStore, Lease,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{attempt, open_with, SMALL_HOT};

const SUBS: [&str; 3] = ["a", "b", "c"];
const TOPICS: [&str; 2] = ["t1", "t2"];
const STEPS: usize = 300;

#[derive(Clone, Debug, PartialEq)]
enum St {
    /// Pending; `None` = due since it was enqueued or replayed.
    Pending(Option<u64>),
    Delivered,
    Dead,
}

#[derive(Default)]
struct Model {
    topic: HashMap<String, &'static str>,
    key: HashMap<String, Option<&'static str>>,
    state: BTreeMap<(String, String), St>,
    attempts: HashMap<(String, String), u32>,
    chains: HashMap<(String, &'static str), VecDeque<String>>,
    idem: HashMap<(&'static str, &'static str), String>,
    held: HashMap<(String, String), Lease>,
}

impl Model {
    fn leasable(&self, sub: &str, now: u64) -> HashSet<String> {
        let mut out = HashSet::new();
        for ((id, s), st) in &self.state {
            let St::Pending(at) = st else { continue };
            if s != sub
                || at.is_some_and(|at| at > now)
                || self.held.contains_key(&(id.clone(), s.clone()))
            {
                continue;
            }
            let head_ok = match self.key[id] {
                None => true,
                Some(k) => self.chains[&(s.clone(), k)].front() == Some(id),
            };
            if head_ok {
                out.insert(id.clone());
            }
        }
        out
    }

    fn finish(&mut self, id: &str, sub: &str, st: St) {
        let slot = (id.to_owned(), sub.to_owned());
        if let Some(k) = self.key[id] {
            self.chains
                .get_mut(&(sub.to_owned(), k))
                .unwrap()
                .retain(|m| m != id);
        }
        *self.attempts.get_mut(&slot).unwrap() += 1;
        self.state.insert(slot.clone(), st);
        self.held.remove(&slot);
    }

    /// Messages some subscriber still has to receive.
    fn pending_messages(&self) -> usize {
        let ids: HashSet<&String> = self
            .state
            .iter()
            .filter(|(_, st)| matches!(st, St::Pending(_)))
            .map(|((id, _), _)| id)
            .collect();
        ids.len()
    }

    /// Pending deliveries per subscriber (its backlog).
    fn backlog(&self) -> BTreeMap<String, u64> {
        let mut backlog = BTreeMap::new();
        for ((_, sub), st) in &self.state {
            if matches!(st, St::Pending(_)) {
                *backlog.entry(sub.clone()).or_insert(0) += 1;
            }
        }
        backlog
    }

    fn depth(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let (mut depth, mut dlq) = (BTreeMap::new(), BTreeMap::new());
        let mut pending_msgs = HashSet::new();
        for ((id, _), st) in &self.state {
            match st {
                St::Pending(_) => {
                    pending_msgs.insert(id.clone());
                }
                St::Dead => *dlq.entry(self.topic[id].to_owned()).or_insert(0) += 1,
                St::Delivered => {}
            }
        }
        for id in pending_msgs {
            *depth.entry(self.topic[&id].to_owned()).or_insert(0) += 1;
        }
        (depth, dlq)
    }
}

async fn run(seed: u64, hot_max: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut b = open_with(&dir, None, hot_max).await;
    let mut m = Model::default();
    for step in 0..STEPS {
        let ctx = format!("seed {seed} step {step}");
        match rng.gen_range(0..100) {
            0..=29 => {
                let topic = TOPICS[rng.gen_range(0..2)];
                let subs: Vec<&str> = SUBS.iter().copied().filter(|_| rng.gen_bool(0.6)).collect();
                let key = [None, Some("k1"), Some("k2")][rng.gen_range(0..3)];
                let idem = [None, None, None, Some("i1"), Some("i2")][rng.gen_range(0..5)];
                let mut req = request(topic, &subs, &format!("{step}"));
                req.ordering_key = key.map(str::to_owned);
                req.idempotency_key = idem.map(str::to_owned);
                req.idempotency_ttl = Duration::from_secs(3600);
                match b.enqueue(req).await.unwrap() {
                    EnqueueOutcome::Duplicate(id) => {
                        assert_eq!(
                            Some(&id.to_string()),
                            idem.and_then(|k| m.idem.get(&(topic, k))),
                            "{ctx}"
                        );
                    }
                    EnqueueOutcome::Accepted(id) => {
                        let id = id.to_string();
                        assert!(
                            idem.is_none_or(|k| !m.idem.contains_key(&(topic, k))),
                            "{ctx}: duplicate missed"
                        );
                        if let Some(k) = idem {
                            m.idem.insert((topic, k), id.clone());
                        }
                        m.topic.insert(id.clone(), topic);
                        m.key.insert(id.clone(), key);
                        for s in subs {
                            m.state
                                .insert((id.clone(), s.to_owned()), St::Pending(None));
                            m.attempts.insert((id.clone(), s.to_owned()), 0);
                            if let Some(k) = key {
                                m.chains
                                    .entry((s.to_owned(), k))
                                    .or_default()
                                    .push_back(id.clone());
                            }
                        }
                    }
                }
            }
            30..=49 => {
                let sub = SUBS[rng.gen_range(0..3)];
                let now = now_ms() + [0, 20_000, 90_000][rng.gen_range(0..3)];
                let want = m.leasable(sub, now);
                let mut got = b.lease_due(sub, now, 1000).await.unwrap();
                if hot_max < STEPS {
                    // A subscriber with nothing hot to do while its messages overflow
                    // makes each batch spill a hot message and load the oldest
                    // overflowed one; that may be another subscriber's, so it can take
                    // one batch per overflowed message, never more.
                    let mut batches = m.pending_messages();
                    while got.is_empty() && !want.is_empty() && batches > 0 {
                        b.flush().await.unwrap();
                        got = b.lease_due(sub, now, 1000).await.unwrap();
                        batches -= 1;
                    }
                }
                let got_ids: HashSet<String> =
                    got.iter().map(|d| d.message.id.to_string()).collect();
                if hot_max >= STEPS {
                    assert_eq!(got_ids, want, "{ctx}: leasable set of {sub}");
                } else {
                    // Overflowed messages become leasable as the hot set frees up.
                    assert!(
                        got_ids.is_subset(&want),
                        "{ctx}: leased {got_ids:?} of {want:?}"
                    );
                    assert!(
                        want.is_empty() || !got_ids.is_empty(),
                        "{ctx}: nothing leased of {want:?}"
                    );
                }
                for d in got {
                    let slot = (d.message.id.to_string(), sub.to_owned());
                    assert_eq!(d.attempts, m.attempts[&slot], "{ctx}: attempts");
                    m.held.insert(slot, d);
                }
            }
            50..=84 if !m.held.is_empty() => {
                let slots: Vec<_> = m.held.keys().cloned().collect();
                let slot = slots[rng.gen_range(0..slots.len())].clone();
                let d = m.held[&slot].clone();
                let (id, sub) = (slot.0.as_str(), slot.1.as_str());
                match rng.gen_range(0..100) {
                    0..=39 => {
                        b.ack(&d, attempt("status 200")).await.unwrap();
                        m.finish(id, sub, St::Delivered);
                        // A second ack changes nothing.
                        b.ack(&d, attempt("status 200")).await.unwrap();
                    }
                    40..=69 => {
                        let at = now_ms() + [0, 10_000, 60_000][rng.gen_range(0..3)];
                        b.retry_later(&d, attempt("status 503"), at).await.unwrap();
                        *m.attempts.get_mut(&slot).unwrap() += 1;
                        m.state.insert(slot.clone(), St::Pending(Some(at)));
                        m.held.remove(&slot);
                    }
                    70..=84 => {
                        b.dead_letter(&d, attempt("timeout"), "gave up".into())
                            .await
                            .unwrap();
                        m.finish(id, sub, St::Dead);
                    }
                    _ => {
                        b.release(&d).await;
                        m.held.remove(&slot);
                    }
                }
            }
            85..=93 => {
                let dead: Vec<_> = m
                    .state
                    .iter()
                    .filter(|(_, s)| **s == St::Dead)
                    .map(|(k, _)| k.clone())
                    .collect();
                if dead.is_empty() {
                    continue;
                }
                let (id, sub) = dead[rng.gen_range(0..dead.len())].clone();
                b.dlq_apply(&dead_letter_id(&id, &sub), DlqAction::Replay)
                    .await
                    .unwrap();
                m.state.insert((id.clone(), sub.clone()), St::Pending(None));
                m.attempts.insert((id.clone(), sub.clone()), 0);
                if let Some(k) = m.key[&id] {
                    m.chains.entry((sub, k)).or_default().push_back(id);
                }
            }
            94..=95 => {
                let sub = SUBS[rng.gen_range(0..3)];
                let filter = DlqFilter {
                    topic: None,
                    subscriber: Some(sub.to_owned()),
                };
                let n = b.dlq_apply_all(filter, DlqAction::Replay).await.unwrap();
                let mut dead: Vec<_> = m
                    .state
                    .iter()
                    .filter(|((_, s), st)| s == sub && **st == St::Dead)
                    .map(|(k, _)| k.clone())
                    .collect();
                dead.sort();
                assert_eq!(n, dead.len() as u64, "{ctx}: replay_all count");
                for (id, s) in dead {
                    m.state.insert((id.clone(), s.clone()), St::Pending(None));
                    m.attempts.insert((id.clone(), s.clone()), 0);
                    if let Some(k) = m.key[&id] {
                        m.chains.entry((s, k)).or_default().push_back(id);
                    }
                }
            }
            _ => {
                b.close().await.unwrap();
                drop(b);
                b = open_with(&dir, None, hot_max).await;
                m.held.clear();
            }
        }
        let depth = b.depth();
        let (want_depth, want_dlq) = m.depth();
        let nonzero = |map: &BTreeMap<String, u64>| {
            map.iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(nonzero(&depth.topics), want_depth, "{ctx}: depth");
        assert_eq!(nonzero(&depth.dlq), want_dlq, "{ctx}: dlq depth");
        assert_eq!(
            nonzero(&depth.subscribers),
            m.backlog(),
            "{ctx}: backlog per subscriber"
        );
        assert_eq!(
            b.verify().await.unwrap(),
            depth,
            "{ctx}: stored invariants and counters"
        );
        if let Some(((id, sub), st)) = m.state.iter().nth(rng.gen_range(0..m.state.len().max(1))) {
            let status = b
                .message_status(id)
                .await
                .unwrap()
                .expect("status of a known message");
            let s = status
                .subscribers
                .iter()
                .find(|s| s.subscriber == *sub)
                .unwrap();
            let ok = match (st, &s.state) {
                (St::Pending(Some(at)), DeliveryState::Pending { next_attempt_at_ms }) => {
                    at == next_attempt_at_ms
                }
                (St::Pending(None), DeliveryState::Pending { .. }) => true,
                (St::Delivered, DeliveryState::Delivered)
                | (St::Dead, DeliveryState::Dead { .. }) => true,
                _ => false,
            };
            assert!(
                ok,
                "{ctx}: status of {id}/{sub}: model {st:?}, stored {:?}",
                s.state
            );
            assert_eq!(
                s.attempts,
                m.attempts[&(id.clone(), sub.clone())],
                "{ctx}: attempts of {id}/{sub}"
            );
            assert_eq!(
                s.leased,
                m.held.contains_key(&(id.clone(), sub.clone())),
                "{ctx}: leased flag"
            );
        }
    }
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_match_the_model() {
    for seed in [1, 2, 3] {
        run(seed, junction_queue::embedded::HOT_MAX_MESSAGES).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_match_the_model_when_the_fast_path_overflows() {
    for seed in [4, 5, 6] {
        run(seed, SMALL_HOT).await;
    }
}
