//! Junction's durable queue: the [`Broker`] contract behind the async pipeline, and
//! its embedded backend.
//!
//! The gateway answers `202 Accepted` for an async route only after
//! [`Broker::enqueue`] returned `Ok`, i.e. after the message is durable. A dispatcher
//! then leases due deliveries per subscriber ([`Broker::lease_due`]), delivers them
//! and records the outcome ([`Broker::ack`], [`Broker::retry_later`],
//! [`Broker::dead_letter`]). Delivery is at-least-once, with fan-out to a fixed set
//! of subscribers, idempotent enqueue, per-key ordering, a dead-letter queue with
//! replay, and explicit back-pressure ([`QueueError::Full`]).
//!
//! Backends: [`embedded`] (one redb file, group commit) and [`redis`] (shared by
//! several instances). Others implement the same
//! trait and must pass the same suite (`conformance`, behind the `conformance`
//! feature).

pub mod broker;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embedded;
pub mod redis;

pub use self::redis::{RedisBroker, RedisConfig};
pub use broker::{
    dead_letter_id, split_dead_letter_id, AttemptRecord, Broker, DeadLetter, Delivery,
    DeliveryState, DepthSnapshot, DlqFilter, DlqPage, EnqueueOutcome, EnqueueRequest, Message,
    MessageId, MessageStatus, QueueError, StorageError, SubscriberStatus, MAX_HISTORY,
};
pub use embedded::{CommitStats, EmbeddedBroker, EmbeddedConfig};
