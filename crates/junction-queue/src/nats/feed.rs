//! The pulls of a subscription whose topic carries keyed events.
//!
//! Keyed events travel on the topic's partition subjects `k.{i}`, each read by
//! the subscriber's partition consumer `{sub}~{i}` with `max_ack_pending: 1`
//! (see `Shared::ensure_ordered`): JetStream hands one message of a partition
//! to one puller at a time, across every instance, so the pulls cannot be the
//! request-then-wait of an unkeyed subscription (one lane would wait on one
//! partition while another has work). Each consumer — the partitions and the
//! subscriber's own — gets a task pulling into one bounded channel, which
//! `next` drains.
//!
//! A message buffered here counts against its `ack_wait` before the dispatcher
//! even sees it, so one that waited past half of it (the subscriber was paused)
//! is given back (`nak`) rather than delivered late beside a redelivered copy;
//! what is still buffered when the subscription closes is given back too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{partition_consumer, storage, token, Shared};
use crate::types::QueueError;

/// How long one pull request waits on the server for messages.
const EXPIRES: Duration = Duration::from_secs(5);
/// How much longer than `EXPIRES` a pull may stay unanswered before it counts
/// as lost (a request sent just before the connection dropped is never answered).
const SLACK: Duration = Duration::from_secs(2);
/// Pause after a failed pull before the next.
const BACKOFF: Duration = Duration::from_secs(1);

/// A pulled message, where it came from and when.
pub(super) struct Pulled {
    pub message: jetstream::Message,
    /// From a partition consumer (else the subscriber's own consumer, which
    /// also sees the keyed subjects and skips them).
    pub partition: bool,
    received: Instant,
}

pub(super) struct Feed {
    rx: mpsc::Receiver<Pulled>,
    tasks: Vec<JoinHandle<()>>,
    /// A buffered message older than this is given back rather than delivered.
    stale_after: Duration,
}

impl Feed {
    /// Creates any missing partition consumer of `sub` and starts pulling from
    /// them and from `sub`'s own consumer, buffering up to `prefetch`.
    pub async fn start(
        shared: &Arc<Shared>,
        topic: &str,
        sub: &str,
        prefetch: usize,
    ) -> Result<Self, QueueError> {
        shared.ensure_ordered(topic, &[sub.to_owned()]).await?;
        let stream = shared
            .js
            .get_stream(shared.stream_name(topic))
            .await
            .map_err(|e| storage("opening a jetstream stream", e))?;
        let partitions = shared.cfg.ordering_partitions;
        let (tx, rx) = mpsc::channel(prefetch.max(1) + usize::from(partitions));
        let mut tasks = Vec::with_capacity(usize::from(partitions) + 1);
        for i in 0..partitions {
            let c: jetstream::consumer::PullConsumer = stream
                .get_consumer(&partition_consumer(sub, i))
                .await
                .map_err(|e| storage("opening a jetstream partition consumer", e))?;
            tasks.push(tokio::spawn(pull_forever(c, tx.clone(), 1, true)));
        }
        let own: jetstream::consumer::PullConsumer = stream
            .get_consumer(&token(sub))
            .await
            .map_err(|e| storage("opening a jetstream consumer", e))?;
        tasks.push(tokio::spawn(pull_forever(own, tx, prefetch.max(1), false)));
        Ok(Self {
            rx,
            tasks,
            stale_after: shared.cfg.ack_wait / 2,
        })
    }

    /// Up to `max` buffered messages, waiting up to `wait` for the first.
    pub async fn take(&mut self, max: usize, wait: Duration) -> Vec<Pulled> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < max {
            let next = match self.rx.try_recv() {
                Ok(p) => p,
                Err(_) if !out.is_empty() => break,
                Err(_) => match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(p)) => p,
                    _ => break,
                },
            };
            if next.received.elapsed() > self.stale_after {
                give_back(next.message);
                continue;
            }
            out.push(next);
        }
        out
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Buffered, never handed out: back to JetStream now rather than after
        // `ack_wait` (a partition's next message waits for it).
        while let Ok(p) = self.rx.try_recv() {
            give_back(p.message);
        }
    }
}

fn give_back(m: jetstream::Message) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        });
    }
}

/// Pulls from `consumer` into `tx` until the receiver is gone, `batch` at a
/// time (fewer when the buffer has less room), each message forwarded as it
/// arrives.
async fn pull_forever(
    consumer: jetstream::consumer::PullConsumer,
    tx: mpsc::Sender<Pulled>,
    batch: usize,
    partition: bool,
) {
    while !tx.is_closed() {
        let want = batch.min(tx.capacity()).max(1);
        let pull = consumer
            .batch()
            .max_messages(want)
            .expires(EXPIRES)
            .messages();
        let mut pulled = match tokio::time::timeout(SLACK, pull).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "pulling from jetstream failed; again shortly");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let deadline = tokio::time::Instant::now() + EXPIRES + SLACK;
        loop {
            match tokio::time::timeout_at(deadline, pulled.next()).await {
                Ok(Some(Ok(message))) => {
                    let p = Pulled {
                        message,
                        partition,
                        received: Instant::now(),
                    };
                    if let Err(mpsc::error::SendError(p)) = tx.send(p).await {
                        give_back(p.message);
                        return;
                    }
                }
                // Expired, done, or an error (a missed heartbeat, the
                // connection): the next request starts afresh.
                Ok(Some(Err(_))) | Ok(None) => break,
                Err(_) => break,
            }
        }
    }
}
