//! A delivery and its ack handle.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::types::*;

/// What identifies a delivery to its backend, beyond the message and subscriber.
#[derive(Default)]
pub enum AckToken {
    /// The (message id, subscriber) pair is enough (indexed stores).
    #[default]
    None,
    /// A broker's numeric tag (RabbitMQ delivery tag).
    Tag(u64),
    /// Anything else the backend needs (a JetStream message with its ack subject).
    Other(Box<dyn Any + Send + Sync>),
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Tag(t) => write!(f, "Tag({t})"),
            Self::Other(_) => f.write_str("Other(..)"),
        }
    }
}

/// How a delivery ends.
#[derive(Debug)]
pub enum Settlement {
    /// Delivered. With `queued`, the backend may return once the ack is queued
    /// for recording (in order before later calls) rather than recorded: a lost
    /// ack only causes a redelivery, which at-least-once allows.
    Ack {
        /// The successful attempt.
        attempt: AttemptRecord,
        /// Whether returning before the ack is recorded is fine.
        queued: bool,
    },
    /// Failed; deliver again, not before `after`.
    Retry {
        /// The failed attempt.
        attempt: AttemptRecord,
        /// How long to wait before the next attempt.
        after: Duration,
    },
    /// Given up: into the dead-letter queue with `reason`.
    Dead {
        /// The last attempt.
        attempt: AttemptRecord,
        /// Why it was given up.
        reason: String,
    },
    /// Not attempted (shutdown, open breaker): due again now, nothing recorded.
    Release,
}

/// The backend side of an ack handle.
#[async_trait]
pub trait Settle: Send + Sync + 'static {
    /// Ends `delivery` as `how`.
    async fn settle(&self, delivery: Delivery, how: Settlement) -> Result<(), QueueError>;
}

/// A message handed to one subscriber's consumer, to be settled exactly once.
/// Dropped without settling, it is delivered again after the backend's lease or
/// visibility timeout (or when the connection closes).
pub struct Delivery {
    /// The message (shared, cheap to clone).
    pub message: Arc<Message>,
    /// Who it is for.
    pub subscriber: String,
    /// Attempts made so far (since the last replay).
    pub attempts: u32,
    /// When the message was first accepted (unix ms), for `max_age`.
    pub first_enqueued_ms: u64,
    /// What the backend needs to settle it.
    pub token: AckToken,
    settler: Arc<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.message.id)
            .field("subscriber", &self.subscriber)
            .field("attempts", &self.attempts)
            .field("token", &self.token)
            .finish()
    }
}

impl Delivery {
    /// A delivery settled through `settler` (for backends).
    pub fn new(
        message: Arc<Message>,
        subscriber: String,
        attempts: u32,
        first_enqueued_ms: u64,
        token: AckToken,
        settler: Arc<dyn Settle>,
    ) -> Self {
        Self {
            message,
            subscriber,
            attempts,
            first_enqueued_ms,
            token,
            settler,
        }
    }

    async fn settle(self, how: Settlement) -> Result<(), QueueError> {
        let settler = self.settler.clone();
        settler.settle(self, how).await
    }

    /// Delivered: the backend forgets it (or records it delivered).
    pub async fn ack(self, attempt: AttemptRecord) -> Result<(), QueueError> {
        self.settle(Settlement::Ack {
            attempt,
            queued: false,
        })
        .await
    }

    /// Like [`ack`](Self::ack), but may return once the ack is queued for recording.
    pub async fn ack_queued(self, attempt: AttemptRecord) -> Result<(), QueueError> {
        self.settle(Settlement::Ack {
            attempt,
            queued: true,
        })
        .await
    }

    /// Failed: deliver again after `after`.
    pub async fn retry(self, attempt: AttemptRecord, after: Duration) -> Result<(), QueueError> {
        self.settle(Settlement::Retry { attempt, after }).await
    }

    /// Given up: into the dead-letter queue.
    pub async fn dead_letter(
        self,
        attempt: AttemptRecord,
        reason: String,
    ) -> Result<(), QueueError> {
        self.settle(Settlement::Dead { attempt, reason }).await
    }

    /// Not attempted: due again now, no attempt recorded.
    pub async fn release(self) -> Result<(), QueueError> {
        self.settle(Settlement::Release).await
    }
}
