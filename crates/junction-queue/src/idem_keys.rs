//! Idempotency keys of async routes on brokers with no place of their own to
//! keep them (RabbitMQ, Kafka, SQS): per instance in memory ([`LocalKeys`]), or
//! shared by every instance in Redis when the queue names one
//! (`idempotency_redis`), so a repeat reaching another instance gets the first
//! id too.
//!
//! In Redis a key is claimed before the event is published (`SET NX` of a
//! short-lived "pending" marker) and holds the id only once the broker
//! confirmed the event; a repeat that finds the marker is refused with 503
//! (retry shortly) rather than answered 202 for an event that may yet fail,
//! and a publish that fails takes its marker back. The marker expires on its
//! own if an instance dies between claim and publish. Redis unreachable: the
//! publish is refused (503), as when the broker is.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::local_keys::LocalKeys;
use crate::types::{EnqueueOutcome, EnqueueRequest, MessageId, QueueError, StorageError};

/// How long a claim waits for its publish to be confirmed before it lapses.
const PENDING_TTL: Duration = Duration::from_secs(30);
/// Bound on one Redis call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Marks a claimed key whose event is not confirmed yet.
const PENDING: &str = "pending:";

/// What a claim found.
enum Claim {
    /// No live key: publish under the new id.
    Ours,
    /// The key's first event, to answer as a duplicate.
    Duplicate(MessageId),
}

/// A Redis connection and the key prefix.
pub(crate) struct Shared {
    conn: ConnectionManager,
    prefix: String,
}

/// Where keys live.
pub(crate) enum IdemKeys {
    /// This instance's memory.
    Local(LocalKeys),
    /// Redis, shared by every instance with the same prefix (boxed: the
    /// connection handle is much larger than the local map).
    Redis(Box<Shared>),
}

impl IdemKeys {
    /// In Redis at `url` under `prefix` when a URL is given, else in memory.
    pub async fn open(url: Option<&str>, prefix: &str) -> Result<Self, QueueError> {
        let Some(url) = url else {
            return Ok(Self::Local(LocalKeys::default()));
        };
        let client =
            redis::Client::open(url).map_err(|e| storage("invalid idempotency_redis URL", e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(1_000);
        let conn = tokio::time::timeout(
            CALL_TIMEOUT * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|e| storage("connecting to idempotency_redis", e))?
        .map_err(|e| storage("connecting to idempotency_redis", e))?;
        Ok(Self::Redis(Box::new(Shared {
            conn,
            prefix: format!("{prefix}:idem"),
        })))
    }

    /// Publishes `req` as `id` with `publish` (not started before this runs)
    /// unless its idempotency key already names an event: the one place the
    /// claim, the publish and the confirmation (or the claim's release) meet.
    pub async fn publish_once(
        &self,
        req: &EnqueueRequest,
        id: &MessageId,
        publish: impl std::future::Future<Output = Result<(), QueueError>>,
    ) -> Result<EnqueueOutcome, QueueError> {
        let Some(key) = req.idempotency_key.as_deref() else {
            return publish.await.map(|()| EnqueueOutcome::Accepted(id.clone()));
        };
        if let Claim::Duplicate(prior) = self.claim(req, key, id).await? {
            return Ok(EnqueueOutcome::Duplicate(prior));
        }
        let published = publish.await;
        match &published {
            Ok(()) => self.confirm(req, key, id).await,
            Err(_) => self.abandon(req, key, id).await,
        }
        published.map(|()| EnqueueOutcome::Accepted(id.clone()))
    }

    /// Before publishing `req` (with an idempotency key) as `id`.
    async fn claim(
        &self,
        req: &EnqueueRequest,
        key: &str,
        id: &MessageId,
    ) -> Result<Claim, QueueError> {
        let (mut conn, name) = match self {
            Self::Local(keys) => {
                return Ok(match keys.known(&req.topic, key) {
                    Some(prior) => Claim::Duplicate(prior),
                    None => Claim::Ours,
                })
            }
            Self::Redis(r) => (r.conn.clone(), redis_key(&r.prefix, &req.topic, key)),
        };
        // Twice at most: a key that expires between the two calls is free again.
        for _ in 0..2 {
            let set: Option<String> = redis::cmd("SET")
                .arg(&name)
                .arg(format!("{PENDING}{id}"))
                .arg("NX")
                .arg("PX")
                .arg(PENDING_TTL.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .map_err(|e| storage("claiming an idempotency key in redis", e))?;
            if set.is_some() {
                return Ok(Claim::Ours);
            }
            let held: Option<String> = redis::cmd("GET")
                .arg(&name)
                .query_async(&mut conn)
                .await
                .map_err(|e| storage("reading an idempotency key in redis", e))?;
            match held {
                Some(v) if v.starts_with(PENDING) => {
                    return Err(storage(
                        "idempotency key",
                        std::io::Error::other(
                            "an event with this idempotency key is being published by another request; retry",
                        ),
                    ))
                }
                Some(v) => return Ok(Claim::Duplicate(MessageId::from(v))),
                None => continue,
            }
        }
        Err(storage(
            "claiming an idempotency key in redis",
            std::io::Error::other("the key changed twice while claiming it"),
        ))
    }

    /// The broker confirmed `id`: the key answers with it for `req`'s window.
    /// A key that cannot be recorded now is logged, not an error: the event is
    /// durable, so the 202 stands (a repeat may then be a second event).
    async fn confirm(&self, req: &EnqueueRequest, key: &str, id: &MessageId) {
        match self {
            Self::Local(keys) => keys.remember(&req.topic, key, id, req.idempotency_ttl),
            Self::Redis(r) => {
                let ttl = req.idempotency_ttl.as_millis().max(1) as u64;
                let res: Result<(), _> = redis::cmd("SET")
                    .arg(redis_key(&r.prefix, &req.topic, key))
                    .arg(id.as_str())
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut r.conn.clone())
                    .await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, topic = %req.topic, "could not record an idempotency key in redis; a repeat may be accepted again");
                }
            }
        }
    }

    /// The publish of `id` failed: its claim goes (only if still its own).
    async fn abandon(&self, req: &EnqueueRequest, key: &str, id: &MessageId) {
        let Self::Redis(r) = self else {
            return;
        };
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let res: Result<i64, _> = script
            .key(redis_key(&r.prefix, &req.topic, key))
            .arg(format!("{PENDING}{id}"))
            .invoke_async(&mut r.conn.clone())
            .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "could not release an idempotency claim; it lapses on its own");
        }
    }
}

/// `prefix:<topic length>:<topic>:<key>`: the length keeps topics and keys
/// holding `:` apart.
fn redis_key(prefix: &str, topic: &str, key: &str) -> String {
    format!("{prefix}:{}:{topic}:{key}", topic.len())
}

fn storage(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Storage(StorageError::new(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_keys_with_colons_do_not_collide() {
        assert_ne!(redis_key("p", "a:b", "c"), redis_key("p", "a", "b:c"));
    }
}
