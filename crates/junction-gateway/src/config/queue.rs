//! `queue:` — which durable queue holds accepted events, per backend.

use super::{defaults, Dur};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which durable queue holds accepted events.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum QueueConfig {
    /// The embedded on-disk queue (default).
    Embedded {
        /// Directory of the queue's files.
        #[serde(default = "defaults::queue_path")]
        path: PathBuf,
        /// Most events waiting for one subscriber (its backlog); past it that
        /// subscriber sheds as `on_full` says, and an event whose every
        /// subscriber is full gets 503.
        #[serde(default)]
        max_depth: Option<u64>,
        /// What a subscriber whose backlog is full does with a new event.
        #[serde(default)]
        on_full: OnFull,
    },
    /// A queue in Redis, shared by every instance using the same `prefix`.
    Redis {
        /// `redis://host:port/db`.
        url: String,
        /// Key prefix of the shared queue.
        #[serde(default = "defaults::queue_prefix")]
        prefix: String,
        /// Most events waiting for one subscriber (its backlog); past it that
        /// subscriber sheds as `on_full` says, and an event whose every
        /// subscriber is full gets 503.
        #[serde(default)]
        max_depth: Option<u64>,
        /// What a subscriber whose backlog is full does with a new event.
        #[serde(default)]
        on_full: OnFull,
        /// How long a lease lasts unless renewed: how soon the deliveries of an
        /// instance that died (or a lease whose reply was lost) go out again.
        #[serde(default = "defaults::lease_ttl")]
        lease_ttl: Dur,
    },
    /// A queue in PostgreSQL tables (applied by migrations at start or by
    /// `junction migrate`), shared by every instance using the same `schema`.
    Postgres {
        /// `postgres://user@host:port/database`.
        url: String,
        /// Schema holding the queue's tables (lowercase letters, digits, `_`).
        #[serde(default = "defaults::queue_schema")]
        schema: String,
        /// Most events waiting for one subscriber (its backlog); past it that
        /// subscriber sheds as `on_full` says, and an event whose every
        /// subscriber is full gets 503.
        #[serde(default)]
        max_depth: Option<u64>,
        /// What a subscriber whose backlog is full does with a new event.
        #[serde(default)]
        on_full: OnFull,
        /// Visibility timeout of a claimed delivery, renewed every third of it
        /// while its instance lives: how soon a dead instance's deliveries go out again.
        #[serde(default = "defaults::lease_ttl")]
        lease_ttl: Dur,
    },
    /// NATS JetStream: per topic a stream, per subscriber a durable pull
    /// consumer, a dead-letter stream, idempotency keys in a stream.
    Nats {
        /// `nats://host:4222`.
        url: String,
        /// Prefix of stream names and subjects.
        #[serde(default = "defaults::queue_schema")]
        prefix: String,
        /// How long a taken delivery may stay unsettled before JetStream
        /// redelivers it (to this instance or another).
        #[serde(default = "defaults::lease_ttl")]
        ack_wait: Dur,
        /// Most events waiting for one subscriber (checked every 2 s); past it
        /// its oldest waiting events move to its dead letters.
        #[serde(default)]
        max_depth: Option<u64>,
        /// Past `max_depth`: only `dead_letter_oldest` on NATS (a publish
        /// reaches every subscriber's consumer; one cannot refuse it alone).
        #[serde(default)]
        on_full: OnFull,
        /// Partitions an ordering key hashes into, per subscriber: one key's
        /// events go one at a time through its partition (so a retrying event
        /// holds up the other keys of its partition). 1 to 256.
        #[serde(default = "defaults::ordering_partitions")]
        ordering_partitions: u16,
    },
    /// RabbitMQ: per topic a fanout exchange, per subscriber a durable queue
    /// (competing consumers across instances), delay queues for retries and a
    /// dead-letter queue per subscriber.
    Rabbitmq {
        /// `amqp://user:pass@host:5672/vhost` (`%2f` is the default vhost).
        url: String,
        /// Prefix of every exchange and queue name.
        #[serde(default = "defaults::queue_schema")]
        prefix: String,
        /// `quorum` (replicated, default) or `classic` subscriber queues.
        #[serde(default)]
        queue_type: RabbitQueueType,
        /// Per-subscriber backlog bound (`x-max-length` of its queue).
        #[serde(default)]
        max_depth: Option<u64>,
        /// Past it: `reject` refuses the publish (503; RabbitMQ's
        /// `reject-publish`), `dead_letter_oldest` moves the queue's oldest
        /// message to its dead letters (`drop-head`), so no publish is refused.
        #[serde(default)]
        on_full: OnFull,
        /// Redis URL (`redis://host:6379`) where idempotency keys of async
        /// routes are shared by every instance; each instance keeps its own
        /// when absent.
        #[serde(default)]
        idempotency_redis: Option<String>,
        /// Partitions an ordering key hashes into, per subscriber: one key's
        /// events go one at a time through its partition (so a retrying event
        /// holds up the other keys of its partition). 1 to 256.
        #[serde(default = "defaults::ordering_partitions")]
        ordering_partitions: u16,
    },
    /// Apache Kafka: per topic a Kafka topic, per subscriber a consumer group
    /// (instances share its partitions) and a compacted dead-letter topic.
    Kafka {
        /// `kafka://host:9092[,host:9092...]` (bootstrap servers).
        url: String,
        /// Prefix of topic and consumer-group names.
        #[serde(default = "defaults::queue_schema")]
        prefix: String,
        /// Partitions of a topic Junction creates.
        #[serde(default = "defaults::kafka_partitions")]
        partitions: i32,
        /// Replication factor of a topic Junction creates; the broker's default when absent.
        #[serde(default)]
        replication_factor: Option<i32>,
        /// How long a silent instance keeps its partitions before the group
        /// hands them to another (6s to 5m).
        #[serde(default = "defaults::kafka_session_timeout")]
        session_timeout: Dur,
        /// Extra librdkafka client settings (`security.protocol`, `sasl.mechanism`, ...).
        #[serde(default)]
        client: BTreeMap<String, String>,
        /// Redis URL (`redis://host:6379`) where idempotency keys of async
        /// routes are shared by every instance; each instance keeps its own
        /// when absent.
        #[serde(default)]
        idempotency_redis: Option<String>,
    },
    /// Amazon SQS: per topic an SNS topic, per subscriber an SQS queue
    /// subscribed to it (competing consumers across instances) and a
    /// dead-letter queue. Credentials come from the standard AWS chain.
    Sqs {
        /// AWS region; the standard chain's (`AWS_REGION`, profile) when absent.
        #[serde(default)]
        region: Option<String>,
        /// Endpoint of a local or compatible server (`http://127.0.0.1:4566`);
        /// AWS's own when absent.
        #[serde(default)]
        endpoint: Option<String>,
        /// Prefix of every queue and topic name.
        #[serde(default = "defaults::queue_schema")]
        prefix: String,
        /// FIFO topics and queues, so ordering keys hold per subscriber.
        #[serde(default)]
        fifo: bool,
        /// How long a received delivery stays hidden before SQS gives it out
        /// again (to this instance or another); whole seconds, 1s to 12h.
        #[serde(default = "defaults::lease_ttl")]
        visibility_timeout: Dur,
        /// Approximate per-subscriber backlog past which new events get 503.
        #[serde(default)]
        max_depth: Option<u64>,
        /// Redis URL (`redis://host:6379`) where idempotency keys of async
        /// routes are shared by every instance; each instance keeps its own
        /// when absent.
        #[serde(default)]
        idempotency_redis: Option<String>,
    },
}

/// What a subscriber whose backlog reached `queue.max_depth` does with a new event
/// (what it sheds becomes a dead letter, reason "backlog full").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The new event is dead-lettered for that subscriber (the others get it).
    #[default]
    Reject,
    /// Its oldest waiting event is dead-lettered; the new one is queued.
    DeadLetterOldest,
}

impl From<OnFull> for junction_queue::OnFull {
    fn from(o: OnFull) -> Self {
        match o {
            OnFull::Reject => Self::Reject,
            OnFull::DeadLetterOldest => Self::DeadLetterOldest,
        }
    }
}

/// RabbitMQ queue type of subscriber queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RabbitQueueType {
    /// Replicated (Raft).
    #[default]
    Quorum,
    /// Single-node.
    Classic,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::Embedded {
            path: defaults::queue_path(),
            max_depth: None,
            on_full: OnFull::Reject,
        }
    }
}
