//! Junction's durable queue: the broker-neutral [`contract`] behind the async
//! pipeline, and its backends.
//!
//! The gateway answers `202 Accepted` for an async route only after
//! [`Publisher::publish`] returned `Ok`, i.e. after the broker confirmed the
//! message durable. Each subscriber's dispatcher lanes open a [`Subscription`]
//! and settle every [`Delivery`] through its ack handle (`ack`, `retry(after)`,
//! `dead_letter(reason)`); the admin API reads the [`Ledger`]. Delivery is
//! at-least-once, with fan-out to the subscribers named at publish, idempotent
//! publish, a dead-letter queue with replay and purge, and explicit
//! back-pressure ([`QueueError::Full`]).
//!
//! Backends: [`embedded`] (one redb file, group commit) and [`redis`] (shared by
//! several instances) are [`store::IndexedStore`]s scheduled by Junction and
//! adapted to the contract by [`store::adapter`]. Every backend must pass the
//! same suites (`conformance`, behind the `conformance` feature).

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod contract;
pub mod embedded;
mod envelope;
mod idem_keys;
pub mod kafka;
mod local_keys;
pub mod nats;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod response;
pub mod sqs;
pub mod store;
pub mod types;

pub use self::kafka::{KafkaBroker, KafkaConfig};
pub use self::nats::{NatsBroker, NatsConfig};
pub use self::postgres::{PostgresBroker, PostgresConfig};
pub use self::rabbitmq::{RabbitBroker, RabbitConfig};
pub use self::redis::{RedisBroker, RedisConfig};
pub use self::sqs::{SqsBroker, SqsConfig};
pub use contract::{
    AckToken, Capabilities, Consumer, Delivery, Ledger, Publisher, Queue, Settle, Settlement,
    Subscription,
};
pub use embedded::{CommitStats, EmbeddedBroker, EmbeddedConfig};
pub use response::ResponseSample;
pub use store::IndexedStore;
pub use types::{
    backlog_full_reason, dead_letter_id, ordering_partition, split_dead_letter_id, AttemptRecord,
    DeadLetter, DeliveryState, DepthSnapshot, DlqAction, DlqFilter, DlqPage, EnqueueOutcome,
    EnqueueRequest, Lease, Message, MessageId, MessageStatus, OnFull, QueueError, StorageError,
    SubscriberStatus, BACKLOG_FULL, DEFAULT_ORDERING_PARTITIONS, MAX_HISTORY,
};
