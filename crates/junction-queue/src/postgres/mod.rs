//! The PostgreSQL backend: the queue inside the database a team already backs up.
//!
//! An [`IndexedStore`](crate::store::IndexedStore) (Junction schedules,
//! PostgreSQL stores; its methods are in `store.rs`): deliveries are rows claimed with `FOR UPDATE SKIP LOCKED` under a visibility timeout
//! (`leased_until_ms`, renewed while this instance holds the claim, so a
//! crashed instance's claims come due again after `lease_ttl`); publishes are
//! group-committed (every publish waiting at that moment goes into one
//! transaction of multi-row `unnest` inserts: one fsync for the batch);
//! `LISTEN/NOTIFY` wakes every instance's consumers without polling; status,
//! dead letters and idempotency keys (a unique constraint) are plain SQL. See
//! [`schema`] for the tables and migrations.
//!
//! Back-pressure: `max_depth` bounds each subscriber's backlog (its pending
//! deliveries across topics, counted in the `backlog` table in the same
//! transactions as the changes), not the whole queue. A full subscriber sheds
//! the new event to its dead letters (`on_full: reject`) or dead-letters its
//! oldest pending delivery nobody holds to make room (`dead_letter_oldest`);
//! a publish every subscriber would shed is refused with [`QueueError::Full`].
//! Publishes to a subscriber are serialized across instances while the limit
//! is checked, so it holds with several instances (see `publish.rs`).
//! [`IndexedStore::depth`](crate::store::IndexedStore::depth) reports every
//! subscriber's backlog next to the per-topic counts.
//!
//! Every statement on the hot paths (publish, claim, outcome, renewal) is
//! prepared once per pooled connection ([`prepared`]).
//!
//! Crates: `tokio-postgres` with `deadpool-postgres` for the pool. `sqlx` was
//! the other candidate; its compile-time checked queries need a database at
//! build time (or an offline cache), its pool and migrator bring nothing this
//! backend needs beyond what `deadpool` and 30 lines of [`schema`] do, and
//! `tokio-postgres` exposes `LISTEN` notifications straight off the connection.
//! Connections are plain TCP (`NoTls`): put the database on loopback or a
//! private network, or terminate TLS in a local proxy.
//!
//! Durability: a publish is answered after `COMMIT`, i.e. after PostgreSQL's
//! WAL flush under the default `synchronous_commit = on`.

mod deadlock;
mod housekeeping;
mod listen;
mod publish;
mod read;
pub mod schema;
mod sql;
mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_postgres::NoTls;

use crate::types::*;
use sql::Sql;

/// How long a claim lasts unless renewed (every third of it), by default.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// Connections in the pool.
const POOL_SIZE: usize = 16;
/// Bound on waiting for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How often completed records and expired keys are pruned, and counters re-read.
const HOUSEKEEPING: Duration = Duration::from_secs(2);

/// What the PostgreSQL queue gives: exact scheduling and counts, shared by instances.
pub const CAPABILITIES: crate::Capabilities = crate::Capabilities {
    ordering_per_key: true,
    exact_retry_delay: true,
    exact_depth: true,
    shared: true,
    message_status: true,
};

/// Settings of a [`PostgresBroker`].
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// Schema holding the tables; instances sharing a queue use the same one.
    pub schema: String,
    /// Most events waiting for one subscriber (its backlog); past it the
    /// subscriber sheds as `on_full` says ([`QueueError::Full`] when every
    /// subscriber of an event is full).
    pub max_depth: Option<u64>,
    /// What a subscriber whose backlog is full does with a new event.
    pub on_full: crate::types::OnFull,
    /// How long a completed message's record is kept.
    pub completed_retention: Duration,
    /// Visibility timeout of a claim: how soon a dead instance's deliveries go out again.
    pub lease_ttl: Duration,
}

impl PostgresConfig {
    /// Settings with no depth limit and completed records kept one hour.
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: schema.into(),
            max_depth: None,
            on_full: crate::types::OnFull::Reject,
            completed_retention: Duration::from_secs(3600),
            lease_ttl: LEASE_TTL,
        }
    }
}

/// An [`IndexedStore`](crate::store::IndexedStore) in PostgreSQL; cheap to share (`Arc`).
pub struct PostgresBroker {
    /// Publishes and admin changes: committed durably.
    pool: Pool,
    /// Claims and outcomes: asynchronous commit (see [`pool`]).
    settle_pool: Pool,
    cfg: PostgresConfig,
    sql: Sql,
    /// This instance's view of the counters (shared with the publisher).
    depth: Arc<RwLock<DepthSnapshot>>,
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Claims this instance holds, renewed until settled.
    held: Mutex<HashSet<(String, String)>>,
    publisher: publish::Batcher,
    closed: AtomicBool,
}

/// A committed change to the depth counters, for the snapshot.
#[derive(Debug, Default)]
pub(crate) struct DepthDelta {
    /// Undelivered messages per topic.
    undelivered: HashMap<String, i64>,
    /// Dead letters per topic.
    dead: HashMap<String, i64>,
    /// Backlog per subscriber.
    backlog: HashMap<String, i64>,
}

impl DepthDelta {
    /// Adds to `topic`'s undelivered and dead counts.
    pub fn topic(mut self, topic: &str, undelivered: i64, dead: i64) -> Self {
        self.add_topic(topic, undelivered, dead);
        self
    }

    /// Adds to `subscriber`'s backlog.
    pub fn subscriber(mut self, subscriber: &str, by: i64) -> Self {
        self.add_subscriber(subscriber, by);
        self
    }

    pub fn add_topic(&mut self, topic: &str, undelivered: i64, dead: i64) {
        if undelivered != 0 {
            *self.undelivered.entry(topic.to_owned()).or_default() += undelivered;
        }
        if dead != 0 {
            *self.dead.entry(topic.to_owned()).or_default() += dead;
        }
    }

    pub fn add_subscriber(&mut self, subscriber: &str, by: i64) {
        *self.backlog.entry(subscriber.to_owned()).or_default() += by;
    }

    /// Applies the change (a count never goes below 0; one at 0 stays listed).
    pub fn apply(&self, d: &mut DepthSnapshot) {
        fn add(map: &mut BTreeMap<String, u64>, total: Option<&mut u64>, key: &str, by: i64) {
            let v = map.entry(key.to_owned()).or_default();
            let before = *v;
            *v = v.saturating_add_signed(by);
            if let Some(total) = total {
                *total = total.saturating_add(*v).saturating_sub(before);
            }
        }
        for (topic, by) in &self.undelivered {
            add(&mut d.topics, Some(&mut d.total), topic, *by);
        }
        for (topic, by) in &self.dead {
            add(&mut d.dlq, Some(&mut d.dlq_total), topic, *by);
        }
        for (sub, by) in &self.backlog {
            add(&mut d.subscribers, None, sub, *by);
        }
    }
}

pub(crate) fn storage(
    context: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> QueueError {
    QueueError::Storage(StorageError::new(context, e))
}

/// `sql` prepared once per pooled connection (deadpool keeps the cache; the
/// pool recycles connections without `DISCARD`, so the statements stay):
/// given text, tokio-postgres would parse and plan the statement on every call,
/// one more round trip each.
pub(crate) async fn prepared<C: deadpool_postgres::GenericClient>(
    client: &C,
    sql: &str,
) -> Result<tokio_postgres::Statement, QueueError> {
    client
        .prepare_cached(sql)
        .await
        .map_err(|e| storage("preparing a statement", e))
}

/// Connects a pool to `url` (no connection is made yet). With `async_commit`,
/// its transactions commit without waiting for the WAL flush: for claims and
/// outcomes, where a change lost in a database crash only means a redelivery
/// (at-least-once allows it), never for publishes.
fn pool(url: &str, async_commit: bool) -> Result<Pool, QueueError> {
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| storage(&format!("invalid postgres URL {url:?}"), e))?;
    if async_commit {
        pg.options("-c synchronous_commit=off");
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| storage("building the connection pool", e))
}

/// Applies the schema's missing migrations (`junction migrate`); returns the
/// versions applied.
pub async fn migrate(url: &str, schema: &str) -> Result<Vec<i32>, QueueError> {
    if !schema::valid_schema(schema) {
        return Err(storage(
            "invalid schema name",
            std::io::Error::other(format!(
                "{schema:?}: use lowercase letters, digits and _ (at most 63)"
            )),
        ));
    }
    let pool = pool(url, false)?;
    let mut conn = pool
        .get()
        .await
        .map_err(|e| storage("connecting to postgres", e))?;
    schema::migrate(&mut conn, schema).await
}

impl PostgresBroker {
    /// This store as the queue contract.
    pub fn into_queue(self: Arc<Self>) -> crate::Queue {
        crate::store::adapter::queue("postgres", self, CAPABILITIES)
    }

    /// Connects, applies missing migrations, and starts the wake-up listener,
    /// the claim renewer and housekeeping. An unreachable database is an error.
    pub async fn connect(cfg: PostgresConfig) -> Result<Arc<Self>, QueueError> {
        migrate(&cfg.url, &cfg.schema).await?;
        let pool = pool(&cfg.url, false)?;
        let sql = Sql::new(&cfg.schema);
        let depth = Arc::new(RwLock::new(DepthSnapshot::default()));
        let limit = cfg
            .max_depth
            .filter(|max| *max > 0)
            .map(|max| publish::Limit {
                max,
                on_full: cfg.on_full,
            });
        let this = Arc::new(Self {
            publisher: publish::Batcher::start(pool.clone(), &sql, limit, depth.clone()),
            settle_pool: self::pool(&cfg.url, true)?,
            pool,
            sql,
            cfg,
            depth,
            notifiers: Mutex::default(),
            held: Mutex::default(),
            closed: AtomicBool::new(false),
        });
        this.refresh_depth().await?;
        listen::start(
            Arc::downgrade(&this),
            this.cfg.url.clone(),
            this.sql.channel.clone(),
        )
        .await?;
        tokio::spawn(housekeeping::run(Arc::downgrade(&this)));
        Ok(this)
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(Ordering::Acquire) {
            Err(QueueError::Closed)
        } else {
            Ok(())
        }
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, QueueError> {
        self.pool
            .get()
            .await
            .map_err(|e| storage("connecting to postgres", e))
    }

    /// A connection committing asynchronously, for claims and outcomes.
    async fn settle_conn(&self) -> Result<deadpool_postgres::Object, QueueError> {
        self.settle_pool
            .get()
            .await
            .map_err(|e| storage("connecting to postgres", e))
    }

    /// Applies this instance's own change to the depth snapshot at once (the
    /// counters in the database changed in the same statement; other instances'
    /// changes arrive with the next re-read).
    fn bump_local(&self, delta: DepthDelta) {
        delta.apply(&mut self.depth.write());
    }

    /// Re-reads the counters into the depth snapshot.
    async fn refresh_depth(&self) -> Result<(), QueueError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(&prepared(&conn, &self.sql.counters).await?, &[])
            .await
            .map_err(|e| storage("reading the counters", e))?;
        let backlogs = conn
            .query(&prepared(&conn, &self.sql.backlogs).await?, &[])
            .await
            .map_err(|e| storage("reading the backlogs", e))?;
        let mut snap = DepthSnapshot::default();
        for row in backlogs {
            let (sub, n): (String, i64) = (row.get(0), row.get(1));
            snap.subscribers.insert(sub, n.max(0) as u64);
        }
        for row in rows {
            let (topic, kind, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            let n = n.max(0) as u64;
            match kind.as_str() {
                "u" => {
                    snap.total += n;
                    snap.topics.insert(topic, n);
                }
                _ => {
                    snap.dlq_total += n;
                    snap.dlq.insert(topic, n);
                }
            }
        }
        *self.depth.write() = snap;
        Ok(())
    }

    fn notifier_of(&self, subscriber: &str) -> Arc<Notify> {
        self.notifiers
            .lock()
            .entry(subscriber.to_owned())
            .or_default()
            .clone()
    }

    /// Wakes this instance's consumers of `subscriber` (every waiter, plus a permit).
    pub(crate) fn wake_local(&self, subscriber: &str) {
        let n = self.notifier_of(subscriber);
        n.notify_waiters();
        n.notify_one();
    }

    /// Wakes every consumer of this instance (after a lost `LISTEN` connection).
    pub(crate) fn wake_all(&self) {
        for n in self.notifiers.lock().values() {
            n.notify_waiters();
            n.notify_one();
        }
    }

    /// Runs one settling statement for the delivery `d` (a no-op when it was
    /// settled before); returns its rows (`topic` and, for dead letters,
    /// `left_count`, when it changed the counters).
    async fn settle(
        &self,
        what: &str,
        stmt: &str,
        d: &Lease,
        attempt: &AttemptRecord,
        extra: Option<(i64, Option<&str>)>,
    ) -> Result<Vec<tokio_postgres::Row>, QueueError> {
        let (id, sub) = (d.message.id.as_str(), d.subscriber.as_str());
        // Whatever happens next, this instance stops renewing the claim: if the
        // outcome is not recorded, the delivery comes due after the visibility timeout.
        self.held.lock().remove(&(id.to_owned(), sub.to_owned()));
        self.check_open()?;
        let conn = self.settle_conn().await?;
        let stmt = prepared(&conn, stmt).await?;
        let (at, took) = (attempt.at_ms as i64, attempt.duration_ms as i64);
        // The outcome and response sample, as one JSON object (see `sql::PUSH_HISTORY`).
        let mut what_happened = serde_json::json!({ "outcome": attempt.outcome });
        if let Some(response) = &attempt.response {
            what_happened["response"] = serde_json::json!(response);
        }
        let what_happened = what_happened.to_string();
        let now = now_ms() as i64;
        let mut deadlocks = 0;
        loop {
            let ran = match extra {
                None => {
                    conn.query(&stmt, &[&id, &sub, &at, &what_happened, &took, &now])
                        .await
                }
                Some((when, None)) => {
                    conn.query(&stmt, &[&id, &sub, &at, &what_happened, &took, &when])
                        .await
                }
                Some((when, Some(reason))) => {
                    conn.query(
                        &stmt,
                        &[&id, &sub, &at, &what_happened, &took, &when, &reason],
                    )
                    .await
                }
            };
            match ran {
                // The statement's counter and backlog upserts may meet a
                // publish's in the other order (see `deadlock.rs`).
                Err(e) if deadlocks < deadlock::RETRIES && deadlock::is_deadlock(&e) => {
                    deadlocks += 1;
                    tracing::debug!(
                        attempt = deadlocks,
                        "outcome statement deadlocked; running it again"
                    );
                }
                ran => return ran.map_err(|e| storage(what, e)),
            }
        }
    }

    /// Replays or purges one dead letter; `false` if it is gone.
    async fn settle_dead(
        &self,
        id: &str,
        sub: &str,
        action: DlqAction,
    ) -> Result<bool, QueueError> {
        let conn = self.conn().await?;
        let rows = match action {
            DlqAction::Replay => {
                conn.query(
                    &prepared(&conn, &self.sql.replay).await?,
                    &[&id, &sub, &(now_ms() as i64)],
                )
                .await
            }
            DlqAction::Purge => {
                conn.query(&prepared(&conn, &self.sql.purge).await?, &[&id, &sub])
                    .await
            }
        }
        .map_err(|e| storage("settling a dead letter", e))?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        let topic: String = row.get(0);
        match action {
            DlqAction::Replay => {
                let left: i32 = row.get(1);
                self.bump_local(
                    DepthDelta::default()
                        .topic(&topic, i64::from(left == 1), -1)
                        .subscriber(sub, 1),
                );
                self.wake_local(sub);
            }
            DlqAction::Purge => self.bump_local(DepthDelta::default().topic(&topic, 0, -1)),
        }
        Ok(true)
    }
}
