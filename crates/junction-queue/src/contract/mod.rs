//! The queue contract the gateway speaks, split the way real brokers are:
//!
//! - a [`Publisher`]: `publish` returns once the broker confirmed the message
//!   durable (the async route's 202 waits for it);
//! - a [`Consumer`] opening one [`Subscription`] per dispatcher lane; each
//!   [`Delivery`] it yields carries its own ack handle (`ack`, `retry(after)`,
//!   `dead_letter(reason)`, `release`), so a backend keeps whatever identifies a
//!   delivery to it (a store row, a RabbitMQ delivery tag, a JetStream ack
//!   subject) and owns redelivery timing;
//! - a [`Ledger`]: the admin read model (message status, dead letters listed,
//!   replayed and purged, depth), native where the backend can, or a small
//!   status record beside a broker-native dead-letter queue otherwise.
//!
//! What every backend guarantees: a confirmed publish is never lost; delivery is
//! at-least-once (a delivery neither acked nor retried is delivered again, to
//! this instance or another); fan-out reaches every subscriber named at publish;
//! back-pressure is explicit ([`QueueError::Full`], never a silent drop). What
//! differs is declared in [`Capabilities`].
//!
//! Stores Junction schedules itself (embedded, redis, postgres) implement the
//! narrower [`crate::store::IndexedStore`] and get this contract from
//! [`crate::store::adapter`].

mod delivery;

pub use delivery::{AckToken, Delivery, Settle, Settlement};

use std::sync::Arc;

use async_trait::async_trait;

use crate::types::*;

/// What a backend gives beyond the common guarantees; the README's backend table
/// says the same in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// Messages sharing an ordering key reach each subscriber one at a time, in order.
    pub ordering_per_key: bool,
    /// `retry(after)` waits exactly `after` (else: the nearest of fixed tiers).
    pub exact_retry_delay: bool,
    /// `Ledger::depth` counts exactly (else: the broker's own, possibly stale, counts).
    pub exact_depth: bool,
    /// Several instances may share it (competing consumers).
    pub shared: bool,
    /// `Ledger::message_status` answers (else: `QueueError::Unsupported`).
    pub message_status: bool,
}

/// The publishing side of a queue.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Stores `req` for every subscriber it names; `Ok` only once durable.
    async fn publish(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError>;

    /// Whether the backend can take and confirm work now (readiness).
    async fn health(&self) -> Result<(), QueueError>;

    /// Makes every change durable and stops taking work (later calls fail with
    /// `Closed`); for shutdown, while the runtime still runs.
    async fn close(&self) -> Result<(), QueueError>;
}

/// Opens subscriptions.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// A competing consumer of `subscriber` (of `topic`) holding at most
    /// `prefetch` unsettled deliveries.
    async fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        prefetch: usize,
    ) -> Result<Box<dyn Subscription>, QueueError>;
}

/// One consumer's stream of deliveries.
#[async_trait]
pub trait Subscription: Send + 'static {
    /// Up to `max` deliveries. Waits while nothing is available, but returns
    /// (maybe empty) within about a second so the caller can check for shutdown.
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError>;
}

/// The admin read model of a queue.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Per-subscriber delivery state of a message, while it or its record exists.
    async fn message_status(&self, id: &str) -> Result<Option<MessageStatus>, QueueError>;

    /// Dead letters matching `filter`, oldest first, after the cursor `after`.
    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError>;

    /// Replays or purges one dead letter; `NotFound` if absent.
    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError>;

    /// One dead letter, body included; `None` if absent. Reads the
    /// subscriber's dead letters page by page (no backend keeps a second
    /// index for this admin read).
    async fn dead_letter(&self, dead_letter_id: &str) -> Result<Option<DeadLetter>, QueueError> {
        let Some((_, subscriber)) = split_dead_letter_id(dead_letter_id) else {
            return Ok(None);
        };
        let filter = DlqFilter {
            topic: None,
            subscriber: Some(subscriber.to_owned()),
        };
        let mut after = None;
        loop {
            let page = self.dlq_list(filter.clone(), after.clone(), 100).await?;
            if let Some(found) = page.items.into_iter().find(|d| d.id == dead_letter_id) {
                return Ok(Some(found));
            }
            match page.next {
                // A cursor that does not move would read the same page forever.
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => return Ok(None),
            }
        }
    }

    /// Replays or purges every dead letter matching `filter`; returns how many.
    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError>;

    /// Depth counters (undelivered and dead per topic).
    fn depth(&self) -> DepthSnapshot;
}

/// An open queue: its three sides and what it can do.
#[derive(Clone)]
pub struct Queue {
    /// Backend name, for logs and metrics labels (`embedded`, `redis`, ...).
    pub backend: &'static str,
    /// Publishing side.
    pub publisher: Arc<dyn Publisher>,
    /// Opens subscriptions.
    pub consumer: Arc<dyn Consumer>,
    /// Admin read model.
    pub ledger: Arc<dyn Ledger>,
    /// What the backend gives.
    pub capabilities: Capabilities,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("backend", &self.backend)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}
