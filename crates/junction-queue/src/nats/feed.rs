//! The pulls of a subscriber's ordering partitions.
//!
//! Keyed events travel on the topic's partition subjects `k.{i}`, each read by
//! the subscriber's partition consumer `{sub}~{i}` with `max_ack_pending: 1`
//! (see `Shared::ensure_ordered`): JetStream hands one message of a partition
//! to one puller at a time, across every instance, so they cannot be pulled
//! by asking and waiting as the subscriber's own consumer is (one lane would
//! wait on one partition while another has work). Each partition gets a task
//! pulling into one channel with room for one message per partition — the
//! most a partition ever has out — so a puller never waits to hand one over.
//!
//! A message buffered here counts against its `ack_wait` before the dispatcher
//! sees it (the subscriber may be paused). One that waited past half of it is
//! given back (`nak`) and counted as a release, not an attempt; one past all
//! of it has been redelivered already (so the partition moved on to that
//! copy) and is dropped without a word, since a `nak` would send a third copy.
//! When the feed closes, the pullers give back what they hold.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{partition_consumer, storage, Shared};
use crate::types::QueueError;

/// How long one pull request waits on the server for a message.
const EXPIRES: Duration = Duration::from_secs(5);
/// How much longer than `EXPIRES` a pull may stay unanswered before it counts
/// as lost (a request sent just before the connection dropped is never answered).
const SLACK: Duration = Duration::from_secs(2);
/// Pause after a failed pull before the next.
const BACKOFF: Duration = Duration::from_secs(1);

/// Releases per stream sequence, shared with the settler: JetStream counts a
/// give-back as a delivery, the attempts must not.
pub(super) type Released = Arc<Mutex<HashMap<u64, u32>>>;

/// A pulled message and when it came.
struct Pulled {
    message: jetstream::Message,
    received: Instant,
}

pub(super) struct Feed {
    rx: mpsc::Receiver<Pulled>,
    stop: CancellationToken,
    released: Released,
    ack_wait: Duration,
}

impl Feed {
    /// Creates any missing partition consumer of `sub` and starts pulling
    /// from each.
    pub async fn start(
        shared: &Arc<Shared>,
        topic: &str,
        sub: &str,
        released: Released,
    ) -> Result<Self, QueueError> {
        shared.ensure_ordered(topic, &[sub.to_owned()]).await?;
        let stream = shared
            .js
            .get_stream(shared.stream_name(topic))
            .await
            .map_err(|e| storage("opening a jetstream stream", e))?;
        let mut consumers = Vec::new();
        for i in 0..shared.cfg.ordering_partitions {
            let c: jetstream::consumer::PullConsumer = stream
                .get_consumer(&partition_consumer(sub, i))
                .await
                .map_err(|e| storage("opening a jetstream partition consumer", e))?;
            consumers.push(c);
        }
        let (tx, rx) = mpsc::channel(consumers.len().max(1));
        let stop = CancellationToken::new();
        for c in consumers {
            tokio::spawn(pull_forever(c, tx.clone(), stop.clone()));
        }
        Ok(Self {
            rx,
            stop,
            released,
            ack_wait: shared.cfg.ack_wait,
        })
    }

    /// Up to `max` buffered messages, waiting up to `wait` for the first.
    pub async fn take(&mut self, max: usize, wait: Duration) -> Vec<jetstream::Message> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < max {
            let next = match self.rx.try_recv() {
                Ok(p) => p,
                Err(_) if !out.is_empty() || wait.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(p)) => p,
                    _ => break,
                },
            };
            let age = next.received.elapsed();
            if age > self.ack_wait {
                // Redelivered already: its partition went on with that copy.
                continue;
            }
            if age > self.ack_wait / 2 {
                self.give_back(next.message);
                continue;
            }
            out.push(next.message);
        }
        out
    }

    fn give_back(&self, m: jetstream::Message) {
        if let Ok(info) = m.info() {
            *self
                .released
                .lock()
                .entry(info.stream_sequence)
                .or_default() += 1;
        }
        nak_later(m);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.cancel();
        // Buffered, never handed out: back to JetStream now rather than after
        // `ack_wait` (its partition's next message waits for it).
        while let Ok(p) = self.rx.try_recv() {
            nak_later(p.message);
        }
    }
}

fn nak_later(m: jetstream::Message) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        });
    }
}

/// Pulls from one partition consumer into `tx`, one message at a time, until
/// `stop`; what it holds then goes back to JetStream.
async fn pull_forever(
    consumer: jetstream::consumer::PullConsumer,
    tx: mpsc::Sender<Pulled>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let pull = consumer.batch().max_messages(1).expires(EXPIRES).messages();
        let mut pulled = tokio::select! {
            r = tokio::time::timeout(SLACK, pull) => match r {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "pulling a jetstream partition failed; again shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(BACKOFF) => {}
                        _ = stop.cancelled() => return,
                    }
                    continue;
                }
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let deadline = tokio::time::Instant::now() + EXPIRES + SLACK;
        let message = tokio::select! {
            r = tokio::time::timeout_at(deadline, pulled.next()) => match r {
                Ok(Some(Ok(m))) => m,
                // Expired, an error (a missed heartbeat, the connection) or no
                // answer: the next request starts afresh.
                _ => continue,
            },
            _ = stop.cancelled() => return,
        };
        if stop.is_cancelled() {
            nak_later(message);
            return;
        }
        // Room for one per partition: this never waits.
        let p = Pulled {
            message,
            received: Instant::now(),
        };
        if let Err(mpsc::error::SendError(p)) = tx.send(p).await {
            nak_later(p.message);
            return;
        }
    }
}
