//! Any [`IndexedStore`] as a [`Queue`]: the store's leases become deliveries
//! with ack handles, and the scheduling the store leaves to its caller (when
//! is something due, when to look again) happens here, once for every store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::IndexedStore;
use crate::contract::*;
use crate::types::*;

/// Longest wait for new work before a subscription returns an empty batch.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The contract over `store`.
pub fn queue(
    backend: &'static str,
    store: Arc<dyn IndexedStore>,
    capabilities: Capabilities,
) -> Queue {
    let this = Arc::new(StoreQueue { store });
    Queue {
        backend,
        publisher: this.clone(),
        consumer: this.clone(),
        ledger: this,
        capabilities,
    }
}

struct StoreQueue {
    store: Arc<dyn IndexedStore>,
}

#[async_trait]
impl Publisher for StoreQueue {
    async fn publish(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        self.store.enqueue(req).await
    }

    async fn health(&self) -> Result<(), QueueError> {
        self.store.health().await
    }

    async fn close(&self) -> Result<(), QueueError> {
        self.store.close().await
    }
}

#[async_trait]
impl Consumer for StoreQueue {
    async fn subscribe(
        &self,
        _topic: &str,
        subscriber: &str,
        _prefetch: usize,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        Ok(Box::new(StoreSubscription {
            store: self.store.clone(),
            settler: Arc::new(StoreSettler {
                store: self.store.clone(),
            }),
            notify: self.store.notifier(subscriber),
            subscriber: subscriber.to_owned(),
        }))
    }
}

#[async_trait]
impl Ledger for StoreQueue {
    async fn message_status(&self, id: &str) -> Result<Option<MessageStatus>, QueueError> {
        self.store.message_status(id).await
    }

    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        self.store.dlq_list(filter, after, limit).await
    }

    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError> {
        self.store.dlq_apply(dead_letter_id, action).await
    }

    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError> {
        self.store.dlq_apply_all(filter, action).await
    }

    fn depth(&self) -> DepthSnapshot {
        self.store.depth()
    }
}

/// Leases due rows of one subscriber; sleeps until the next is due or the store
/// announces new work.
struct StoreSubscription {
    store: Arc<dyn IndexedStore>,
    settler: Arc<dyn Settle>,
    notify: Arc<Notify>,
    subscriber: String,
}

impl StoreSubscription {
    async fn lease(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let leases = self
            .store
            .lease_due(&self.subscriber, now_ms(), max)
            .await?;
        Ok(leases
            .into_iter()
            .map(|l| {
                Delivery::new(
                    l.message,
                    l.subscriber,
                    l.attempts,
                    l.first_enqueued_ms,
                    AckToken::None,
                    self.settler.clone(),
                )
            })
            .collect())
    }
}

#[async_trait]
impl Subscription for StoreSubscription {
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let batch = self.lease(max).await?;
        if !batch.is_empty() {
            return Ok(batch);
        }
        let wait = match self.store.next_due_at(&self.subscriber).await? {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE_POLL),
            None => IDLE_POLL,
        };
        // The notifier stores a permit, so work announced since the lease above
        // is not missed.
        tokio::select! {
            _ = self.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        self.lease(max).await
    }
}

/// Records outcomes in the store; a failed recording gives the lease back so the
/// delivery is due again at once rather than after a restart.
struct StoreSettler {
    store: Arc<dyn IndexedStore>,
}

#[async_trait]
impl Settle for StoreSettler {
    async fn settle(&self, d: Delivery, how: Settlement) -> Result<(), QueueError> {
        let lease = Lease {
            message: d.message,
            subscriber: d.subscriber,
            attempts: d.attempts,
            first_enqueued_ms: d.first_enqueued_ms,
        };
        let result = match how {
            Settlement::Ack {
                attempt,
                queued: true,
            } => return self.store.ack_queued(&lease, attempt).await,
            Settlement::Ack {
                attempt,
                queued: false,
            } => return self.store.ack(&lease, attempt).await,
            Settlement::Release => {
                self.store.release(&lease).await;
                return Ok(());
            }
            Settlement::Retry { attempt, after } => {
                let at = now_ms() + after.as_millis() as u64;
                self.store.retry_later(&lease, attempt, at).await
            }
            Settlement::Dead { attempt, reason } => {
                self.store.dead_letter(&lease, attempt, reason).await
            }
        };
        if result.is_err() {
            self.store.release(&lease).await;
        }
        result
    }
}
