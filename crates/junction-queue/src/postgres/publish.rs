//! Group commit of publishes: every publish waiting when a transaction starts
//! goes into it, as multi-row `unnest` inserts, so N concurrent producers cost
//! one commit (one WAL flush) instead of N.
//!
//! Backlog limits (`max_depth`, per subscriber). A subscriber's backlog is its
//! pending deliveries (waiting, retrying or claimed), across topics: the
//! `backlog` counter table (see [`super::schema`]), which every statement
//! that makes a delivery pending or takes it out of pending updates in its
//! own transaction. With a limit, the batch transaction first takes a
//! transaction-scoped advisory lock per subscriber it publishes to (one
//! global order, so two batches cannot deadlock), then reads those
//! subscribers' backlogs: a publish on another instance to the same
//! subscriber waits for this commit and then counts what it stored, so the
//! limit holds across instances. Acks and dead letters only lower a backlog
//! and take no lock (a count read just before one commits is merely
//! conservative); an admin replay raises it without checking the limit.
//! Within the batch the counts are carried in memory, so its publishes count
//! each other.
//!
//! A counter table rather than a grouped `count(*)` of pending rows per
//! subscriber: the count would cost a scan of the whole backlog (up to
//! `max_depth` index entries per subscriber) on every batch and every depth
//! refresh, where the counter costs one small upsert per state change.
//!
//! Per publish, in order: an idempotent repeat is answered as a duplicate
//! (even when full); each distinct subscriber whose backlog is at `max_depth`
//! either sheds its copy (`on_full: reject`: stored dead at once, in the
//! dead-letter queue, reason [`backlog_full_reason`], one attempt "not
//! attempted: backlog full") or makes room (`dead_letter_oldest`: its oldest
//! pending delivery nobody holds, claimed with `FOR UPDATE SKIP LOCKED`, or
//! failing that an older copy from this batch, is dead-lettered and the new
//! copy queued; when every one is held the new copy is shed). When every
//! subscriber of the event would shed its copy, the publish is refused
//! ([`QueueError::Full`] with the smallest of their backlogs) and nothing is
//! stored (its idempotency key, claimed just before, is released); otherwise
//! the event is accepted for the others.

use super::prepared;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::sql::Sql;
use super::{deadlock, now_ms, storage, DepthDelta};
use crate::types::*;

/// Most publishes in one transaction.
const BATCH: usize = 256;
/// Publishes waiting for a transaction at most; more wait to be queued.
const QUEUE: usize = 4096;

type Answer = Result<(EnqueueOutcome, Vec<String>), QueueError>;

/// `max_depth` (above 0) and what a full subscriber does.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub max: u64,
    pub on_full: OnFull,
}

struct Job {
    req: EnqueueRequest,
    reply: oneshot::Sender<Answer>,
}

/// The statements the batcher runs (owned: it lives in its own task).
struct Statements {
    idem_find: String,
    idem_claim: String,
    idem_release: String,
    lock_subscribers: String,
    backlog_of: String,
    evict_oldest: String,
    insert_messages: String,
    insert_deliveries: String,
    count_published: String,
    backlog_published: String,
    notify: String,
}

/// Hands publishes to the group-commit task.
pub struct Batcher {
    tx: parking_lot::Mutex<Option<mpsc::Sender<Job>>>,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the group-commit task; it applies what each batch changed to `depth`.
    pub fn start(
        pool: Pool,
        sql: &Sql,
        limit: Option<Limit>,
        depth: Arc<RwLock<DepthSnapshot>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let st = Statements {
            idem_find: sql.idem_find.clone(),
            idem_claim: sql.idem_claim.clone(),
            idem_release: sql.idem_release.clone(),
            lock_subscribers: sql.lock_subscribers.clone(),
            backlog_of: sql.backlog_of.clone(),
            evict_oldest: sql.evict_oldest.clone(),
            insert_messages: sql.insert_messages.clone(),
            insert_deliveries: sql.insert_deliveries.clone(),
            count_published: sql.count_published.clone(),
            backlog_published: sql.backlog_published.clone(),
            notify: sql.notify.clone(),
        };
        let task = tokio::spawn(run(pool, st, limit, depth, rx));
        Self {
            tx: parking_lot::Mutex::new(Some(tx)),
            task: parking_lot::Mutex::new(Some(task)),
        }
    }

    /// Publishes `req`; answers once committed, with its distinct subscribers.
    pub async fn publish(&self, req: EnqueueRequest) -> Answer {
        let tx = self.tx.lock().clone().ok_or(QueueError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.send(Job { req, reply })
            .await
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Stops taking publishes and waits for the queued ones to commit.
    pub async fn close(&self) {
        self.tx.lock().take();
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(
    pool: Pool,
    st: Statements,
    limit: Option<Limit>,
    depth: Arc<RwLock<DepthSnapshot>>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let batch: Vec<Job> = std::mem::take(&mut jobs);
        let (reqs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.req, j.reply)).unzip();
        let mut deadlocks = 0;
        let committed = loop {
            // Cloned for another run should PostgreSQL abort this one (`deadlock.rs`).
            match commit(&pool, &st, limit, reqs.clone()).await {
                Err(e) if deadlocks < deadlock::RETRIES && deadlock::was_deadlock(&e) => {
                    deadlocks += 1;
                    tracing::debug!(
                        attempt = deadlocks,
                        "publish batch deadlocked; running it again"
                    );
                }
                committed => break committed,
            }
        };
        match committed {
            Ok((answers, delta)) => {
                // Before answering, so a publisher sees its own publish counted.
                delta.apply(&mut depth.write());
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A message accepted in this batch.
struct Event {
    id: String,
    req: EnqueueRequest,
    subs: Vec<String>,
    /// Per subscriber (as `subs`): the dead-letter reason of a shed copy.
    shed: Vec<Option<String>>,
}

/// What one batch transaction builds up before its inserts.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    /// Backlog per subscriber, with this batch's changes so far (with a limit).
    backlog: HashMap<String, u64>,
    /// Per subscriber, this batch's queued copies, oldest first (event, subscriber index).
    queued: HashMap<String, VecDeque<(usize, usize)>>,
    /// Earlier deliveries this batch dead-lettered: (subscriber, topic, message finished).
    evicted: Vec<(String, String, bool)>,
}

impl Batch {
    fn backlog(&self, sub: &str) -> u64 {
        self.backlog.get(sub).copied().unwrap_or(0)
    }

    /// Dead-letters `sub`'s oldest pending delivery nobody holds: a stored one
    /// first, else a copy queued earlier in this batch. `false` if none.
    async fn evict_oldest(
        &mut self,
        tx: &Transaction<'_>,
        st: &Statements,
        sub: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, QueueError> {
        let outcome = serde_json::json!({ "outcome": SHED_OUTCOME }).to_string();
        let row = tx
            .query_opt(
                &prepared(tx, &st.evict_oldest).await?,
                &[&sub, &now, &now, &outcome, &0i64, &reason],
            )
            .await
            .map_err(fail("dead-lettering the oldest delivery"))?;
        if let Some(row) = row {
            let left: i32 = row.get(1);
            self.evicted.push((sub.to_owned(), row.get(0), left == 0));
        } else if let Some((e, i)) = self.queued.get_mut(sub).and_then(VecDeque::pop_front) {
            self.events[e].shed[i] = Some(reason.to_owned());
        } else {
            return Ok(false);
        }
        if let Some(n) = self.backlog.get_mut(sub) {
            *n = n.saturating_sub(1);
        }
        Ok(true)
    }

    /// Queues `sub`'s copy of event `e` (its `i`th subscriber).
    fn queue(&mut self, sub: &str, e: usize, i: usize) {
        *self.backlog.entry(sub.to_owned()).or_default() += 1;
        self.queued
            .entry(sub.to_owned())
            .or_default()
            .push_back((e, i));
    }
}

/// The columns of the messages accepted in one batch.
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    topics: Vec<String>,
    bodies: Vec<Vec<u8>>,
    content_types: Vec<Option<String>>,
    headers: Vec<serde_json::Value>,
    ordering_keys: Vec<Option<String>>,
    subscribers: Vec<String>,
    enqueued: Vec<i64>,
    left: Vec<i32>,
    dead: Vec<i32>,
    completed: Vec<Option<i64>>,
    /// One entry per delivery.
    d_ids: Vec<String>,
    d_subs: Vec<String>,
    d_keys: Vec<Option<String>>,
    d_due: Vec<i64>,
    d_shed: Vec<Option<String>>,
}

fn fail<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> QueueError {
    move |e| storage(what, e)
}

async fn commit(
    pool: &Pool,
    st: &Statements,
    limit: Option<Limit>,
    reqs: Vec<EnqueueRequest>,
) -> Result<(Vec<Answer>, DepthDelta), QueueError> {
    let mut conn = pool.get().await.map_err(fail("connecting to postgres"))?;
    let tx = conn
        .transaction()
        .await
        .map_err(fail("starting a publish"))?;
    let now = now_ms() as i64;
    let mut batch = Batch::default();
    if limit.is_some() {
        let mut all: Vec<&str> = reqs
            .iter()
            .flat_map(|r| r.subscribers.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        if !all.is_empty() {
            tx.execute(&prepared(&tx, &st.lock_subscribers).await?, &[&all])
                .await
                .map_err(fail("locking the subscribers' backlogs"))?;
            for row in tx
                .query(&prepared(&tx, &st.backlog_of).await?, &[&all])
                .await
                .map_err(fail("reading the backlogs"))?
            {
                let n: i64 = row.get(1);
                batch.backlog.insert(row.get(0), n.max(0) as u64);
            }
        }
    }
    let mut answers = Vec::with_capacity(reqs.len());
    for req in reqs {
        let subs = req.distinct_subscribers();
        if let Some(key) = &req.idempotency_key {
            let prior = tx
                .query_opt(
                    &prepared(&tx, &st.idem_find).await?,
                    &[&req.topic, key, &now],
                )
                .await
                .map_err(fail("reading an idempotency key"))?;
            if let Some(prior) = prior {
                let id: String = prior.get(0);
                answers.push(Ok((EnqueueOutcome::Duplicate(MessageId::new(id)), subs)));
                continue;
            }
        }
        // The full subscribers (index, backlog); nothing is changed yet.
        let full: Vec<(usize, u64)> = match limit {
            Some(l) => subs
                .iter()
                .enumerate()
                .map(|(i, s)| (i, batch.backlog(s)))
                .filter(|(_, n)| *n >= l.max)
                .collect(),
            None => Vec::new(),
        };
        // Under `reject` every full subscriber sheds: refused before anything is claimed.
        if let Some(l) = limit {
            if l.on_full == OnFull::Reject && !subs.is_empty() && full.len() == subs.len() {
                let depth = full.iter().map(|(_, n)| *n).min().unwrap_or(0);
                answers.push(Err(QueueError::Full { depth, max: l.max }));
                continue;
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        if let Some(key) = &req.idempotency_key {
            let expires = now + req.idempotency_ttl.as_millis() as i64;
            let claimed: String = tx
                .query_one(
                    &prepared(&tx, &st.idem_claim).await?,
                    &[&req.topic, key, &id, &expires, &now],
                )
                .await
                .map_err(fail("claiming an idempotency key"))?
                .get(0);
            if claimed != id {
                answers.push(Ok((
                    EnqueueOutcome::Duplicate(MessageId::new(claimed)),
                    subs,
                )));
                continue;
            }
        }
        let mut shed: Vec<Option<String>> = vec![None; subs.len()];
        if let Some(l) = limit {
            let least_full = full.iter().map(|(_, n)| *n).min().unwrap_or(0);
            for (i, backlog) in full {
                let reason = backlog_full_reason(backlog, l.max, l.on_full);
                let made_room = l.on_full == OnFull::DeadLetterOldest
                    && batch.evict_oldest(&tx, st, &subs[i], &reason, now).await?;
                if !made_room {
                    shed[i] = Some(reason);
                }
            }
            // Every copy shed: no room was made anywhere, so only the key is undone.
            if !subs.is_empty() && shed.iter().all(Option::is_some) {
                if let Some(key) = &req.idempotency_key {
                    tx.execute(
                        &prepared(&tx, &st.idem_release).await?,
                        &[&req.topic, key, &id],
                    )
                    .await
                    .map_err(fail("releasing an idempotency key"))?;
                }
                answers.push(Err(QueueError::Full {
                    depth: least_full,
                    max: l.max,
                }));
                continue;
            }
        }
        let e = batch.events.len();
        for (i, sub) in subs.iter().enumerate() {
            if shed[i].is_none() {
                batch.queue(sub, e, i);
            }
        }
        answers.push(Ok((
            EnqueueOutcome::Accepted(MessageId::new(id.clone())),
            subs.clone(),
        )));
        batch.events.push(Event {
            id,
            req,
            subs,
            shed,
        });
    }
    let delta = store(&tx, st, batch, now).await?;
    tx.commit().await.map_err(fail("committing messages"))?;
    Ok((answers, delta))
}

/// Inserts the batch's messages and deliveries, then (last, in key order:
/// see `sql`) its counter changes; answers them for the depth snapshot.
async fn store(
    tx: &Transaction<'_>,
    st: &Statements,
    batch: Batch,
    now: i64,
) -> Result<DepthDelta, QueueError> {
    let mut delta = DepthDelta::default();
    let mut rows = Rows::default();
    // Counter changes: (topic, kind, n) and (subscriber, n).
    let (mut c_topics, mut c_kinds, mut c_n) = (Vec::new(), Vec::new(), Vec::<i64>::new());
    let (mut b_subs, mut b_n) = (Vec::new(), Vec::<i64>::new());
    let mut woken: Vec<String> = Vec::new();
    for (sub, topic, finished) in batch.evicted {
        c_topics.push(topic.clone());
        c_kinds.push("x");
        c_n.push(1);
        if finished {
            c_topics.push(topic.clone());
            c_kinds.push("u");
            c_n.push(-1);
        }
        delta.add_topic(&topic, -i64::from(finished), 1);
        delta.add_subscriber(&sub, -1);
        b_subs.push(sub);
        b_n.push(-1);
    }
    for ev in batch.events {
        let req = ev.req;
        let dead = ev.shed.iter().filter(|r| r.is_some()).count();
        let left = ev.subs.len() - dead;
        for (sub, shed) in ev.subs.iter().zip(ev.shed) {
            if shed.is_none() {
                delta.add_subscriber(sub, 1);
                b_subs.push(sub.clone());
                b_n.push(1);
                woken.push(sub.clone());
            }
            rows.d_ids.push(ev.id.clone());
            rows.d_subs.push(sub.clone());
            rows.d_keys.push(req.ordering_key.clone());
            rows.d_due.push(now);
            rows.d_shed.push(shed);
        }
        for (kind, n) in [("u", i64::from(left > 0)), ("x", dead as i64)] {
            if n != 0 {
                c_topics.push(req.topic.clone());
                c_kinds.push(kind);
                c_n.push(n);
            }
        }
        delta.add_topic(&req.topic, i64::from(left > 0), dead as i64);
        rows.ids.push(ev.id);
        rows.topics.push(req.topic);
        rows.bodies.push(req.body.to_vec());
        rows.content_types.push(req.content_type);
        rows.headers
            .push(serde_json::to_value(&req.headers).unwrap_or_default());
        rows.ordering_keys.push(req.ordering_key);
        rows.subscribers.push(ev.subs.join("\n"));
        rows.enqueued.push(now);
        rows.left.push(left as i32);
        rows.dead.push(dead as i32);
        rows.completed.push((left == 0).then_some(now));
    }
    if !rows.ids.is_empty() {
        tx.execute(
            &prepared(tx, &st.insert_messages).await?,
            &[
                &rows.ids,
                &rows.topics,
                &rows.bodies,
                &rows.content_types,
                &rows.headers,
                &rows.ordering_keys,
                &rows.subscribers,
                &rows.enqueued,
                &rows.left,
                &rows.completed,
                &rows.dead,
            ],
        )
        .await
        .map_err(fail("storing messages"))?;
        let shed_history =
            serde_json::to_string(&[shed_attempt(now as u64)]).unwrap_or_else(|_| "[]".to_owned());
        tx.execute(
            &prepared(tx, &st.insert_deliveries).await?,
            &[
                &rows.d_ids,
                &rows.d_subs,
                &rows.d_keys,
                &rows.d_due,
                &rows.d_shed,
                &shed_history,
            ],
        )
        .await
        .map_err(fail("storing deliveries"))?;
    }
    if !c_topics.is_empty() {
        tx.execute(
            &prepared(tx, &st.count_published).await?,
            &[&c_topics, &c_kinds, &c_n],
        )
        .await
        .map_err(fail("counting messages"))?;
    }
    if !b_subs.is_empty() {
        tx.execute(
            &prepared(tx, &st.backlog_published).await?,
            &[&b_subs, &b_n],
        )
        .await
        .map_err(fail("counting backlogs"))?;
    }
    if !woken.is_empty() {
        woken.sort_unstable();
        woken.dedup();
        tx.execute(&prepared(tx, &st.notify).await?, &[&woken])
            .await
            .map_err(fail("announcing messages"))?;
    }
    Ok(delta)
}
