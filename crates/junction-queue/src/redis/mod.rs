//! The Redis backend: several Junction instances share one queue in Redis.
//!
//! Why it exists: the embedded queue lives on one machine's disk. With the
//! queue in Redis, any instance can accept an event and any instance can
//! deliver it; a dispatcher that dies leaves leases that expire and are
//! delivered by another instance.
//!
//! Why sorted sets and Lua rather than Redis Streams: the contract needs a due
//! time per delivery (retries with backoff), per-key ordering per subscriber,
//! a dead-letter queue listed in order and replayed one by one, and a status
//! per (message, subscriber); consumer groups give none of those directly.
//! Each state change is one Lua script (see `scripts`), so it is atomic.
//!
//! What it promises, beyond the [`IndexedStore`] contract:
//! - Durability is Redis's own: an event is "accepted" once Redis has it in
//!   memory; it survives a Redis restart only as far as Redis persistence is
//!   configured (`appendonly yes` with `appendfsync always` to survive a crash
//!   of Redis itself). Say so to users (README).
//! - A lease lasts [`RedisConfig::lease_ttl`] ([`LEASE_TTL`] by default) and the
//!   instance holding it renews it until the outcome is recorded (see
//!   `leases`); a delivery leased by an instance that died is
//!   due again after that (at-least-once: it may be delivered twice).
//! - [`IndexedStore::depth`] is exact for this instance's own changes at once and for
//!   other instances' within [`DEPTH_REFRESH`], per topic and per subscriber
//!   (its backlog: deliveries waiting, retrying or leased, across topics).
//! - `max_depth` bounds each subscriber's backlog, not the whole queue, and
//!   is decided inside the enqueue script, so it is exact whatever other
//!   instances do at once. A subscriber at its limit sheds as
//!   [`RedisConfig::on_full`] says: `reject` gets the new event as a dead letter
//!   at once; `dead_letter_oldest` dead-letters its oldest pending delivery no
//!   dispatcher holds and takes the new one (when it holds them all, the new
//!   one is shed). Either way the reason starts with [`BACKLOG_FULL`] and the
//!   event's other subscribers still get it; only when every subscriber of an
//!   event sheds it is the enqueue refused ([`QueueError::Full`]), storing
//!   nothing. A repeated idempotency key is answered as a duplicate first.
//! - An outcome (ack, retry, dead letter, release) that cannot reach Redis is
//!   kept in memory, in order, and recorded when Redis answers again (see
//!   `backlog`); enqueues are not kept: they fail, and the gateway answers 503.
//! - Wake-ups reach every instance through a pub/sub channel; a dispatcher
//!   also polls at least once a second, so a lost announcement only delays.
//! - Keys are computed inside scripts, so this targets a standalone Redis (or
//!   a proxy pinning one prefix to one node), not Redis Cluster.
//!
//! Layout: this file holds the broker and its [`IndexedStore`] methods; `scripts`
//! the Lua and the key layout, `outcomes` recording outcomes (with the
//! `backlog` and `leases` renewal), `read` the admin reads, `codec`
//! reply parsing, `tasks` the background loops.

mod backlog;
mod codec;
mod leases;
mod outcomes;
mod read;
mod scripts;
mod tasks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;
use tokio::sync::Notify;

use crate::store::IndexedStore;
use crate::types::*;
use backlog::{Backlog, Held, Op};
use codec::{
    backlog_full_reason_parts, bytes, message_from, num, on_full_arg, parse_depth, status_of,
    storage, text, Meta,
};
use leases::HeldLeases;
use scripts::Scripts;
use tasks::{
    listen_for_wakeups, refresh_depth_forever, renew_leases_forever, retry_backlog_forever,
};

/// How long a lease lasts unless its instance renews it (every third of it), by default.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often the depth snapshot is re-read, for other instances' changes.
pub const DEPTH_REFRESH: Duration = Duration::from_secs(1);
/// Bound on every Redis call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often outcomes Redis could not take are tried again.
const BACKLOG_RETRY: Duration = Duration::from_millis(250);

/// Settings of a [`RedisBroker`].
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix; instances sharing a queue use the same one.
    pub prefix: String,
    /// Most events waiting for one subscriber (its backlog); past it the
    /// subscriber sheds as `on_full` says ([`QueueError::Full`] when every
    /// subscriber of an event is full).
    pub max_depth: Option<u64>,
    /// What a subscriber whose backlog is full does with a new event.
    pub on_full: crate::types::OnFull,
    /// How long a completed message's record is kept.
    pub completed_retention: Duration,
    /// How long a lease lasts unless renewed; the instance holding it renews it
    /// every third of that, so this is how soon a dead instance's deliveries go out again.
    pub lease_ttl: Duration,
}

impl RedisConfig {
    /// Settings with no depth limit and completed records kept one hour.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            max_depth: None,
            on_full: crate::types::OnFull::Reject,
            completed_retention: Duration::from_secs(3600),
            lease_ttl: LEASE_TTL,
        }
    }
}

/// What the Redis queue gives: exact scheduling, counts exact for this
/// instance's own changes and refreshed for the others', shared by instances.
pub const CAPABILITIES: crate::Capabilities = crate::Capabilities {
    ordering_per_key: true,
    exact_retry_delay: true,
    exact_depth: true,
    shared: true,
    message_status: true,
};

/// An [`IndexedStore`] in Redis; cheap to share (`Arc`).
pub struct RedisBroker {
    conn: ConnectionManager,
    client: redis::Client,
    cfg: RedisConfig,
    scripts: Scripts,
    depth: RwLock<DepthSnapshot>,
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Outcomes recorded while Redis was unreachable, to record when it is back.
    backlog: Backlog,
    /// Leases this instance holds (renewed until their outcome is recorded).
    leases: HeldLeases,
    closed: AtomicBool,
}

impl RedisBroker {
    /// This store as the queue contract.
    pub fn into_queue(self: Arc<Self>) -> crate::Queue {
        crate::store::adapter::queue("redis", self, CAPABILITIES)
    }

    /// Connects (an unreachable Redis is an error: the gateway does not start
    /// without its queue) and starts the depth refresher and wake-up listener.
    pub async fn connect(cfg: RedisConfig) -> Result<Arc<Self>, QueueError> {
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| storage(&format!("invalid redis URL {:?}", cfg.url), e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(1_000);
        let conn = tokio::time::timeout(
            CALL_TIMEOUT * 2,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|e| storage(&format!("connecting to {}", cfg.url), e))?
        .map_err(|e| storage(&format!("connecting to {}", cfg.url), e))?;
        let broker = Arc::new(Self {
            conn,
            client,
            cfg,
            scripts: Scripts::new(),
            depth: RwLock::new(DepthSnapshot::default()),
            notifiers: Mutex::new(HashMap::new()),
            backlog: Backlog::default(),
            leases: HeldLeases::default(),
            closed: AtomicBool::new(false),
        });
        broker.refresh_depth().await?;
        tokio::spawn(refresh_depth_forever(Arc::downgrade(&broker)));
        tokio::spawn(listen_for_wakeups(Arc::downgrade(&broker)));
        tokio::spawn(retry_backlog_forever(Arc::downgrade(&broker)));
        tokio::spawn(renew_leases_forever(Arc::downgrade(&broker)));
        Ok(broker)
    }

    /// Leases this instance holds and renews, and outcomes waiting for Redis
    /// (diagnostics; both fall to 0 once every outcome is recorded).
    pub fn held(&self) -> (usize, usize) {
        (self.leases.count(), self.backlog.len())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.cfg.prefix)
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        Ok(())
    }

    /// Runs one script invocation and returns its reply, within [`CALL_TIMEOUT`].
    async fn run(
        &self,
        what: &str,
        script: &redis::Script,
        args: Vec<Vec<u8>>,
    ) -> Result<Value, QueueError> {
        self.try_run(what, script, args).await.map_err(|f| f.error)
    }

    /// Runs a plain command within [`CALL_TIMEOUT`].
    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, QueueError> {
        let mut conn = self.conn.clone();
        tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<T>(&mut conn))
            .await
            .map_err(|e| storage(what, e))?
            .map_err(|e| storage(what, e))
    }

    /// Replaces the depth snapshot with a script's trailing `HGETALL` reply, if it has one.
    fn take_depth(&self, reply: &Value) {
        if let Value::Array(items) = reply {
            if let Some(last @ (Value::Array(_) | Value::Map(_))) = items.last() {
                *self.depth.write() = parse_depth(last);
            }
        }
    }

    async fn refresh_depth(&self) -> Result<(), QueueError> {
        let reply: Value = self
            .query(
                "reading the queue depth",
                redis::cmd("HGETALL").arg(self.key("depth")),
            )
            .await?;
        *self.depth.write() = parse_depth(&reply);
        Ok(())
    }

    /// Wakes `subscriber`'s dispatchers in this instance; the scripts that make
    /// work due announce it to the others (`P:wake`).
    fn wake_local(&self, subscriber: &str) {
        let n = self.notifier_of(subscriber);
        n.notify_waiters();
        n.notify_one();
    }

    fn notifier_of(&self, subscriber: &str) -> Arc<Notify> {
        self.notifiers
            .lock()
            .entry(subscriber.to_owned())
            .or_default()
            .clone()
    }

    /// Replays (or purges) one dead letter; `false` if it is gone.
    async fn settle_dead(
        &self,
        id: &str,
        sub: &str,
        action: DlqAction,
    ) -> Result<bool, QueueError> {
        let (what, script) = match action {
            DlqAction::Replay => ("replaying a dead letter", &self.scripts.replay),
            DlqAction::Purge => ("purging a dead letter", &self.scripts.purge),
        };
        let reply = self.run(what, script, vec![id.into(), sub.into()]).await?;
        self.take_depth(&reply);
        let done = status_of(&reply) == "ok";
        if done && action == DlqAction::Replay {
            self.wake_local(sub);
        }
        Ok(done)
    }
}

#[async_trait]
impl IndexedStore for RedisBroker {
    async fn health(&self) -> Result<(), QueueError> {
        self.check_open()?;
        self.query::<()>("ping", &redis::cmd("PING")).await
    }

    async fn enqueue(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        self.check_open()?;
        let mut subscribers: Vec<String> = Vec::with_capacity(req.subscribers.len());
        for s in req.subscribers {
            if !subscribers.contains(&s) {
                subscribers.push(s);
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        let meta = Meta {
            content_type: req.content_type,
            headers: req.headers,
            enqueued_at_ms: now_ms(),
            subscribers: subscribers.clone(),
        };
        let meta = serde_json::to_vec(&meta).map_err(|e| storage("encoding a message", e))?;
        let (why_head, why_tail) =
            backlog_full_reason_parts(self.cfg.max_depth.unwrap_or(0), self.cfg.on_full);
        let mut args: Vec<Vec<u8>> = vec![
            id.clone().into_bytes(),
            req.topic.clone().into_bytes(),
            req.ordering_key.clone().unwrap_or_default().into_bytes(),
            meta,
            req.body.to_vec(),
            req.idempotency_key.clone().unwrap_or_default().into_bytes(),
            (req.idempotency_ttl.as_millis() as u64)
                .to_string()
                .into_bytes(),
            self.cfg.max_depth.unwrap_or(0).to_string().into_bytes(),
            on_full_arg(self.cfg.on_full).into(),
            why_head.into_bytes(),
            why_tail.into_bytes(),
            SHED_OUTCOME.into(),
        ];
        args.extend(subscribers.iter().map(|s| s.clone().into_bytes()));
        let reply = self
            .run("storing a message", &self.scripts.enqueue, args)
            .await?;
        self.take_depth(&reply);
        let detail = match &reply {
            Value::Array(items) => items.get(1).map(text).unwrap_or_default(),
            _ => String::new(),
        };
        match status_of(&reply).as_str() {
            "ok" => {
                for s in &subscribers {
                    self.wake_local(s);
                }
                Ok(EnqueueOutcome::Accepted(MessageId::new(id)))
            }
            "dup" => Ok(EnqueueOutcome::Duplicate(MessageId::new(detail))),
            "full" => Err(QueueError::Full {
                depth: detail.parse().unwrap_or(0),
                max: self.cfg.max_depth.unwrap_or(0),
            }),
            other => Err(storage(
                "storing a message",
                std::io::Error::other(format!("unexpected script reply {other:?}")),
            )),
        }
    }

    async fn lease_due(
        &self,
        subscriber: &str,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<Lease>, QueueError> {
        self.check_open()?;
        let reply = self
            .run(
                "leasing deliveries",
                &self.scripts.lease,
                vec![
                    subscriber.into(),
                    now_ms.to_string().into_bytes(),
                    max.to_string().into_bytes(),
                    (self.cfg.lease_ttl.as_millis() as u64)
                        .to_string()
                        .into_bytes(),
                ],
            )
            .await?;
        let Value::Array(rows) = reply else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Value::Array(f) = row else { continue };
            let [id, meta, body, attempts, topic, okey] = &f[..] else {
                continue;
            };
            let message = message_from(
                &text(id),
                text(topic),
                Some(text(okey)),
                &text(meta),
                bytes(body),
            )?;
            out.push(Lease {
                first_enqueued_ms: message.enqueued_at_ms,
                message: Arc::new(message),
                subscriber: subscriber.to_owned(),
                attempts: text(attempts).parse().unwrap_or(0),
            });
        }
        self.leases
            .add(subscriber, out.iter().map(|d| d.message.id.as_str()));
        Ok(out)
    }

    async fn next_due_at(&self, subscriber: &str) -> Result<Option<u64>, QueueError> {
        let first: Vec<(String, f64)> = self
            .query(
                "reading the next due time",
                redis::cmd("ZRANGE")
                    .arg(self.key(&format!("due:{subscriber}")))
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES"),
            )
            .await?;
        Ok(first.first().map(|(_, at)| *at as u64))
    }

    async fn ack(&self, d: &Lease, attempt: AttemptRecord) -> Result<(), QueueError> {
        self.settle(d, "ack", &attempt, 0, "").await
    }

    async fn retry_later(
        &self,
        d: &Lease,
        attempt: AttemptRecord,
        next_attempt_at_ms: u64,
    ) -> Result<(), QueueError> {
        self.settle(d, "retry", &attempt, next_attempt_at_ms, "")
            .await
    }

    async fn dead_letter(
        &self,
        d: &Lease,
        attempt: AttemptRecord,
        reason: String,
    ) -> Result<(), QueueError> {
        self.settle(d, "dead", &attempt, 0, &reason).await
    }

    async fn release(&self, d: &Lease) {
        let outcome = Held {
            op: Op::Release,
            args: vec![
                d.message.id.as_str().into(),
                d.subscriber.as_bytes().to_vec(),
            ],
            subscriber: d.subscriber.clone(),
        };
        match self.record(outcome).await {
            Ok(true) => self.wake_local(&d.subscriber),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "lease not released; it expires by itself"),
        }
    }

    async fn message_status(&self, id: &str) -> Result<Option<MessageStatus>, QueueError> {
        // Not the body: a status does not show it (and it need not be UTF-8).
        let (meta, topic, okey, done): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<u64>,
        ) = self
            .query(
                "reading a message",
                redis::cmd("HMGET")
                    .arg(self.key(&format!("m:{id}")))
                    .arg(&["meta", "topic", "okey", "done"]),
            )
            .await?;
        let (Some(meta), Some(topic)) = (meta, topic) else {
            return Ok(None);
        };
        let meta: Meta =
            serde_json::from_str(&meta).map_err(|e| storage("decoding a message", e))?;
        let mut subscribers = Vec::with_capacity(meta.subscribers.len());
        for sub in &meta.subscribers {
            let (d, history) = self.delivery(id, sub).await?;
            let at = num(d.get("at"));
            let state = match d.get("st").map(String::as_str) {
                Some("d") => DeliveryState::Delivered,
                Some("x") => DeliveryState::Dead {
                    reason: d.get("why").cloned().unwrap_or_default(),
                },
                _ => DeliveryState::Pending {
                    next_attempt_at_ms: at,
                },
            };
            subscribers.push(SubscriberStatus {
                subscriber: sub.clone(),
                next_attempt_at_ms: matches!(state, DeliveryState::Pending { .. }).then_some(at),
                state,
                attempts: num(d.get("n")) as u32,
                history,
                leased: d.get("ls").is_some_and(|v| v == "1"),
            });
        }
        Ok(Some(MessageStatus {
            id: MessageId::new(id),
            topic,
            ordering_key: okey.filter(|k| !k.is_empty()),
            enqueued_at_ms: meta.enqueued_at_ms,
            completed_at_ms: done,
            subscribers,
        }))
    }

    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        let limit = limit.max(1);
        let mut items = self.dead_letters(&filter, after, limit).await?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DlqPage { items, next })
    }

    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError> {
        self.check_open()?;
        let (id, sub) = split_dead_letter_id(dead_letter_id).ok_or(QueueError::NotFound)?;
        if self.settle_dead(id, sub, action).await? {
            Ok(())
        } else {
            Err(QueueError::NotFound)
        }
    }

    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError> {
        self.check_open()?;
        let mut done = 0;
        loop {
            let page = self.dead_letters(&filter, None, 500).await?;
            if page.is_empty() {
                return Ok(done);
            }
            for letter in page {
                if self
                    .settle_dead(letter.message.id.as_str(), &letter.subscriber, action)
                    .await?
                {
                    done += 1;
                }
            }
        }
    }

    fn depth(&self) -> DepthSnapshot {
        self.depth.read().clone()
    }

    fn notifier(&self, subscriber: &str) -> Arc<Notify> {
        self.notifier_of(subscriber)
    }

    async fn close(&self) -> Result<(), QueueError> {
        // Accepted events are in Redis already; only outcomes kept while Redis
        // was unreachable may still wait.
        self.closed.store(true, Ordering::Release);
        self.drain_backlog().await;
        match self.backlog.len() {
            0 => Ok(()),
            n => Err(storage(
                "flushing on shutdown",
                std::io::Error::other(format!(
                    "{n} delivery outcomes could not be recorded; those deliveries go out again when their leases expire"
                )),
            )),
        }
    }
}
