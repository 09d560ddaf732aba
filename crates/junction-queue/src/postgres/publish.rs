//! Group commit of publishes: every publish waiting when a transaction starts
//! goes into it, as multi-row `unnest` inserts, so N concurrent producers cost
//! one commit (one WAL flush) instead of N.

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::sql::Sql;
use super::{now_ms, storage};
use crate::types::*;

/// Most publishes in one transaction.
const BATCH: usize = 256;
/// Publishes waiting for a transaction at most; more wait to be queued.
const QUEUE: usize = 4096;

type Answer = Result<(EnqueueOutcome, Vec<String>), QueueError>;

struct Job {
    req: EnqueueRequest,
    reply: oneshot::Sender<Answer>,
}

/// The statements the batcher runs (owned: it lives in its own task).
struct Statements {
    idem_find: String,
    idem_claim: String,
    undelivered: String,
    insert_messages: String,
    insert_deliveries: String,
    count_enqueued: String,
    notify: String,
}

/// Hands publishes to the group-commit task.
pub struct Batcher {
    tx: parking_lot::Mutex<Option<mpsc::Sender<Job>>>,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the group-commit task.
    pub fn start(pool: Pool, sql: &Sql, max_depth: Option<u64>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let st = Statements {
            idem_find: sql.idem_find.clone(),
            idem_claim: sql.idem_claim.clone(),
            undelivered: sql.undelivered.clone(),
            insert_messages: sql.insert_messages.clone(),
            insert_deliveries: sql.insert_deliveries.clone(),
            count_enqueued: sql.count_enqueued.clone(),
            notify: sql.notify.clone(),
        };
        let task = tokio::spawn(run(pool, st, max_depth, rx));
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

async fn run(pool: Pool, st: Statements, max_depth: Option<u64>, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let batch: Vec<Job> = std::mem::take(&mut jobs);
        let (reqs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.req, j.reply)).unzip();
        match commit(&pool, &st, max_depth, reqs).await {
            Ok(answers) => {
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
    completed: Vec<Option<i64>>,
    /// One entry per delivery.
    d_ids: Vec<String>,
    d_subs: Vec<String>,
    d_keys: Vec<Option<String>>,
    d_due: Vec<i64>,
    /// Topic of each message with at least one subscriber (for the counters).
    undelivered_topics: Vec<String>,
}

fn fail<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> QueueError {
    move |e| storage(what, e)
}

async fn commit(
    pool: &Pool,
    st: &Statements,
    max_depth: Option<u64>,
    reqs: Vec<EnqueueRequest>,
) -> Result<Vec<Answer>, QueueError> {
    let mut conn = pool.get().await.map_err(fail("connecting to postgres"))?;
    let tx = conn
        .transaction()
        .await
        .map_err(fail("starting a publish"))?;
    let now = now_ms() as i64;
    let mut undelivered: u64 = match max_depth {
        Some(_) => tx
            .query_one(st.undelivered.as_str(), &[])
            .await
            .map_err(fail("reading the depth"))?
            .get::<_, i64>(0)
            .max(0) as u64,
        None => 0,
    };
    let mut rows = Rows::default();
    let mut answers = Vec::with_capacity(reqs.len());
    for req in reqs {
        let mut subs: Vec<String> = Vec::with_capacity(req.subscribers.len());
        for s in req.subscribers {
            if !subs.contains(&s) {
                subs.push(s);
            }
        }
        if let Some(key) = &req.idempotency_key {
            let prior = tx
                .query_opt(st.idem_find.as_str(), &[&req.topic, key, &now])
                .await
                .map_err(fail("reading an idempotency key"))?;
            if let Some(prior) = prior {
                let id: String = prior.get(0);
                answers.push(Ok((EnqueueOutcome::Duplicate(MessageId::new(id)), subs)));
                continue;
            }
        }
        if let Some(max) = max_depth {
            if undelivered >= max {
                answers.push(Err(QueueError::Full {
                    depth: undelivered,
                    max,
                }));
                continue;
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        if let Some(key) = &req.idempotency_key {
            let expires = now + req.idempotency_ttl.as_millis() as i64;
            let claimed: String = tx
                .query_one(
                    st.idem_claim.as_str(),
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
        if !subs.is_empty() {
            undelivered += 1;
            rows.undelivered_topics.push(req.topic.clone());
        }
        for s in &subs {
            rows.d_ids.push(id.clone());
            rows.d_subs.push(s.clone());
            rows.d_keys.push(req.ordering_key.clone());
            rows.d_due.push(now);
        }
        rows.ids.push(id.clone());
        rows.topics.push(req.topic);
        rows.bodies.push(req.body.to_vec());
        rows.content_types.push(req.content_type);
        rows.headers
            .push(serde_json::to_value(&req.headers).unwrap_or_default());
        rows.ordering_keys.push(req.ordering_key);
        rows.subscribers.push(subs.join("\n"));
        rows.enqueued.push(now);
        rows.left.push(subs.len() as i32);
        rows.completed.push(subs.is_empty().then_some(now));
        answers.push(Ok((EnqueueOutcome::Accepted(MessageId::new(id)), subs)));
    }
    if !rows.ids.is_empty() {
        tx.execute(
            st.insert_messages.as_str(),
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
            ],
        )
        .await
        .map_err(fail("storing messages"))?;
        tx.execute(
            st.insert_deliveries.as_str(),
            &[&rows.d_ids, &rows.d_subs, &rows.d_keys, &rows.d_due],
        )
        .await
        .map_err(fail("storing deliveries"))?;
        tx.execute(st.count_enqueued.as_str(), &[&rows.undelivered_topics])
            .await
            .map_err(fail("counting messages"))?;
        let mut woken = rows.d_subs.clone();
        woken.sort_unstable();
        woken.dedup();
        tx.execute(st.notify.as_str(), &[&woken])
            .await
            .map_err(fail("announcing messages"))?;
    }
    tx.commit().await.map_err(fail("committing messages"))?;
    Ok(answers)
}
