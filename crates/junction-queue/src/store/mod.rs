//! The indexed-store contract: the backend side of queues whose storage Junction
//! schedules itself (embedded redb, Redis, PostgreSQL).
//!
//! Such a store keeps every (message, subscriber) delivery as a row with a due
//! time; the caller leases due rows, and records each outcome. [`adapter`] turns
//! any store into the broker-neutral [`crate::contract`] (publisher, subscription
//! with ack handles, ledger), so the gateway never sees this trait. What a store
//! guarantees:
//! - `enqueue` returning `Ok` means the message is durable (survives a crash);
//! - delivery is at-least-once: an ack that is lost (crash, restart) causes a
//!   redelivery, never a loss;
//! - back-pressure is explicit: past `max_depth`, `enqueue` fails with
//!   [`QueueError::Full`], nothing is dropped silently.

pub mod adapter;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::types::*;

/// A durable, fan-out, at-least-once queue backend.
#[async_trait]
pub trait IndexedStore: Send + Sync + 'static {
    /// Whether the backend can take and confirm work now (readiness). The
    /// default answers yes: an in-process backend is as healthy as the process.
    async fn health(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Stores a message for every subscriber; durable when it returns `Ok`.
    async fn enqueue(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError>;

    /// Leases up to `max` deliveries due at `now_ms` that no one holds yet.
    async fn lease_due(
        &self,
        subscriber: &str,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<Lease>, QueueError>;

    /// Earliest due time among unleased pending deliveries, for sleeping.
    async fn next_due_at(&self, subscriber: &str) -> Result<Option<u64>, QueueError>;

    /// Records a successful delivery and drops the lease (idempotent).
    async fn ack(&self, d: &Lease, attempt: AttemptRecord) -> Result<(), QueueError>;

    /// Like [`ack`](Self::ack), but may return once the ack is queued for recording,
    /// in order before every later call (`close` included), instead of once it is
    /// recorded. A failure to record it is then only logged: the delivery stays
    /// leased until restart and is delivered again, which at-least-once allows.
    /// The dispatcher's hot path uses it so that a delivery task need not be woken
    /// again for the answer. The default waits for the recording.
    async fn ack_queued(&self, d: &Lease, attempt: AttemptRecord) -> Result<(), QueueError> {
        self.ack(d, attempt).await
    }

    /// Records a failed attempt and schedules the next one; drops the lease.
    async fn retry_later(
        &self,
        d: &Lease,
        attempt: AttemptRecord,
        next_attempt_at_ms: u64,
    ) -> Result<(), QueueError>;

    /// Records a final failed attempt and moves the delivery to the DLQ; drops the lease.
    async fn dead_letter(
        &self,
        d: &Lease,
        attempt: AttemptRecord,
        reason: String,
    ) -> Result<(), QueueError>;

    /// Drops the lease without recording anything (shutdown): the delivery is due again.
    async fn release(&self, d: &Lease);

    /// Per-subscriber delivery state of a message, while it or its completed record exists.
    async fn message_status(&self, id: &str) -> Result<Option<MessageStatus>, QueueError>;

    /// Dead letters matching `filter`, oldest first, starting after the cursor `after`.
    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError>;

    /// Replays a dead delivery (back to pending, due now, attempts reset) or
    /// purges it (discarded, the delivery stays dead); `NotFound` if absent.
    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError>;

    /// Applies `action` to every dead letter matching `filter`; returns how many.
    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError>;

    /// Exact depth counters (undelivered and dead per topic).
    fn depth(&self) -> DepthSnapshot;

    /// Woken when something becomes due for `subscriber`.
    ///
    /// Every waiting task is woken and one permit is stored, so a check-then-wait loop
    /// never misses a wake-up (it may see a spurious one).
    fn notifier(&self, subscriber: &str) -> Arc<Notify>;

    /// Makes every change durable and stops taking writes (they fail with
    /// `Closed` afterwards); for shutdown, while the runtime still runs.
    async fn close(&self) -> Result<(), QueueError>;
}
