//! The typed configuration: what a YAML file may say, with defaults.
//!
//! Every struct denies unknown keys. Loading ([`load`]) parses the file into a
//! position-aware tree, deserializes it section by section so that every error is
//! reported, then checks references between sections.

mod analyze;
mod env;
mod load;
mod located;
mod schema;
mod validate;
mod values;
mod yaml;

pub use analyze::AnalyzeConfig;
pub use load::{load_file, load_str, ConfigError};
pub use values::{ByteSize, Dur, KeySource, OneOrMany, Rate};

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A whole Junction config file.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data-plane listen address.
    #[serde(default = "defaults::listen")]
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    /// TLS on the data-plane listener (HTTPS; plain HTTP when absent).
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Admin API listen address and auth.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Durable queue backend for async routes.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Response cache backend.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Tracing and dependency-graph settings.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Named upstream services.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched by method and path template.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Graceful shutdown on SIGTERM / Ctrl-C.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Observe mode: recording for recommendations (off by default).
    #[serde(default)]
    pub analyze: AnalyzeConfig,
    /// The file this config was read from (none for config text).
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

impl Config {
    /// Environment variables the config names that are not set, with the key
    /// naming each: `serve` refuses to start without them.
    pub fn missing_env(&self) -> Vec<(String, String)> {
        let mut named = Vec::new();
        if let Some(var) = &self.admin.token_env {
            named.push(("admin.token_env".to_owned(), var.clone()));
        }
        for (i, route) in self.routes.iter().enumerate() {
            let Some(a) = &route.async_ else { continue };
            for (j, sub) in a.subscribers.iter().enumerate() {
                for var in sub.secret_env.iter().flat_map(|names| names.0.iter()) {
                    named.push((
                        format!("routes[{i}].async.subscribers[{j}].secret_env"),
                        var.clone(),
                    ));
                }
            }
        }
        named
            .into_iter()
            .filter(|(_, var)| std::env::var_os(var).is_none())
            .collect()
    }
}

/// Where a config came from, for reloads and for telling configs apart.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSource {
    /// The file.
    pub path: PathBuf,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// How a `SIGTERM` (or Ctrl-C) ends the process.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// `/readyz` answers 503 and both listeners keep accepting this long, so
    /// load balancers stop sending new work before connections are refused.
    #[serde(default = "defaults::drain_delay")]
    pub drain_delay: Dur,
    /// Then in-flight requests and deliveries get at most this long to finish.
    #[serde(default = "defaults::grace")]
    pub grace: Dur,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay: defaults::drain_delay(),
            grace: defaults::grace(),
        }
    }
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin listen address.
    #[serde(default = "defaults::admin_listen")]
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    /// Name of the environment variable holding the bearer token; no auth when absent.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Serve a non-loopback admin address without a token (logged at every start).
    #[serde(default)]
    pub insecure: bool,
    /// Reading dead letters' payloads in the admin API and the dashboard.
    #[serde(default)]
    pub payload_peek: PayloadPeekConfig,
    /// TLS on the admin listener (plain HTTP when absent).
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

/// A listener's certificate: PEM files, read at start and again on every
/// reload (a renewed certificate needs no restart).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM file of the certificate chain, leaf first.
    pub cert_file: String,
    /// PEM file of the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: defaults::admin_listen(),
            token_env: None,
            insecure: false,
            payload_peek: PayloadPeekConfig::default(),
            tls: None,
        }
    }
}

/// How much of a dead letter's payload the admin API shows.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PayloadPeekConfig {
    /// `redacted` (JSON and form fields named in `redact` masked), `full`
    /// (a reader may also ask for the payload unmasked), or `off`.
    #[serde(default)]
    pub mode: PeekMode,
    /// Most payload bytes one read returns.
    #[serde(default = "defaults::peek_max_bytes")]
    pub max_bytes: ByteSize,
    /// Field names whose values are masked (case and `-`/`_` ignored).
    #[serde(default = "defaults::peek_redact")]
    pub redact: Vec<String>,
}

impl Default for PayloadPeekConfig {
    fn default() -> Self {
        Self {
            mode: PeekMode::default(),
            max_bytes: defaults::peek_max_bytes(),
            redact: defaults::peek_redact(),
        }
    }
}

/// Whether payloads can be read, and unmasked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeekMode {
    /// Masked fields only.
    #[default]
    Redacted,
    /// Masked by default; unmasked on request.
    Full,
    /// Payloads are not shown.
    Off,
}

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

/// Which store holds cached responses.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum CacheConfig {
    /// In-process, bounded by entries and bytes (default).
    Memory {
        /// Most entries held.
        #[serde(default = "defaults::max_entries")]
        max_entries: u64,
        /// Most bytes held.
        #[serde(default = "defaults::max_cache_bytes")]
        max_bytes: ByteSize,
    },
    /// Shared by every instance using the same Redis and prefix.
    Redis {
        /// e.g. `redis://127.0.0.1:6379`
        url: String,
        /// Key prefix of this instance group.
        #[serde(default = "defaults::redis_prefix")]
        prefix: String,
    },
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig::Memory {
            max_entries: defaults::max_entries(),
            max_bytes: defaults::max_cache_bytes(),
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body; 413 past it.
    #[serde(default = "defaults::max_body")]
    pub max_body: ByteSize,
    /// A request's header must arrive within this; a keep-alive connection
    /// idle this long is closed too (HTTP/1.1).
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: Dur,
    /// Largest request head (request line and headers); 431 past it.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// Open data-plane connections at most; past it a new one gets 503 and is closed.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// A response write to a client that makes no progress this long closes
    /// the connection (a client that never reads does not hold it forever).
    #[serde(default = "defaults::write_timeout")]
    pub write_timeout: Dur,
    /// Bytes of bodies held whole in memory at once (async events, idempotent
    /// writes, cache fills, projections); past it such requests get 503.
    #[serde(default = "defaults::buffer_budget")]
    pub buffer_budget: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body: defaults::max_body(),
            header_read_timeout: defaults::header_read_timeout(),
            max_header_bytes: defaults::max_header_bytes(),
            max_connections: defaults::max_connections(),
            write_timeout: defaults::write_timeout(),
            buffer_budget: defaults::buffer_budget(),
        }
    }
}

/// Tracing and dependency-graph settings.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Header naming the calling system, for the dependency graph.
    #[serde(default = "defaults::caller_header")]
    pub caller_header: String,
    /// OTLP endpoint for traces; off when absent.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Log filter in `RUST_LOG` syntax (`info`, `warn,junction::access=info`);
    /// reloadable; `RUST_LOG`, when set, takes precedence. Default `info`.
    #[serde(default)]
    pub log_level: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            caller_header: defaults::caller_header(),
            otlp_endpoint: None,
            log_level: None,
        }
    }
}

/// One upstream service and the policies protecting it.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, `http://host:port` or `https://host:port`, with an optional path prefix.
    pub url: String,
    /// TLS settings of an `https://` upstream.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Speak HTTP/2 without TLS (prior knowledge) to an `http://` upstream.
    #[serde(default)]
    pub http2: bool,
    /// Per-attempt timeout (to response headers).
    #[serde(default = "defaults::timeout")]
    pub timeout: Dur,
    /// The longest a response body may keep its reader waiting on the
    /// upstream, in total (a slow client does not count); past it the
    /// response is cut off (a trickling or endless body does not hold a
    /// connection forever). Raise it for event streams.
    #[serde(default = "defaults::body_timeout")]
    pub body_timeout: Dur,
    /// Calls in flight past which callers get 503 at once.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Learn the limit of calls in flight from the upstream's answer times,
    /// under `max_concurrency` (load shedding: 503 at once past it).
    #[serde(default)]
    pub adaptive_concurrency: Option<AdaptiveConcurrencyConfig>,
    /// Retry policy; no retries when absent.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// What is retryable.
    #[serde(default = "defaults::retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Circuit breaker; always on, with defaults when absent.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// TLS settings of an `https://` upstream (the Mozilla roots are always trusted).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of extra CA certificates to trust (a private CA, a self-signed server).
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// An upstream's learned concurrency limit (Gradient2, see `junction_policy::adaptive`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConcurrencyConfig {
    /// The limit never goes below this.
    #[serde(default = "defaults::adaptive_min")]
    pub min: usize,
    /// Where the limit starts (at most `max_concurrency`).
    #[serde(default = "defaults::adaptive_initial")]
    pub initial: usize,
    /// Recent answers this many times slower than the long-run average mean
    /// calls are queueing (the limit then shrinks); at least 1.
    #[serde(default = "defaults::adaptive_tolerance")]
    pub tolerance: f64,
}

impl AdaptiveConcurrencyConfig {
    /// As the policy crate takes it.
    pub fn to_policy(&self) -> junction_policy::AdaptiveConfig {
        junction_policy::AdaptiveConfig {
            min: self.min,
            initial: self.initial,
            tolerance: self.tolerance,
        }
    }
}

/// Retries with exponential backoff, full jitter and a budget.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts including the first.
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,
    /// Ceiling of the first retry's wait.
    #[serde(default = "defaults::backoff")]
    pub backoff: Dur,
    /// Largest wait.
    #[serde(default = "defaults::max_backoff")]
    pub max_backoff: Dur,
    /// Retries allowed as a percentage of requests over the last 10 s.
    #[serde(default = "defaults::budget_percent")]
    pub budget_percent: f64,
    /// Retries always allowed per second.
    #[serde(default = "defaults::budget_min_per_sec")]
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: defaults::attempts(),
            backoff: defaults::backoff(),
            max_backoff: defaults::max_backoff(),
            budget_percent: defaults::budget_percent(),
            budget_min_per_sec: defaults::budget_min_per_sec(),
        }
    }
}

/// A retryable condition: a status code, `connect-failure` or `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOn {
    /// An upstream status.
    Status(u16),
    /// A named condition.
    Named(RetryCondition),
}

/// Named retryable conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryCondition {
    /// The TCP connection could not be made.
    ConnectFailure,
    /// The attempt timed out.
    Timeout,
}

/// Circuit-breaker knobs (the seed's opossum names plus window and min_requests).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Calls slower than this count as failures (and are cut); defaults to the upstream timeout.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Failure percentage over the window at which it opens.
    #[serde(default = "defaults::error_threshold")]
    pub error_threshold_percentage: f64,
    /// Calls needed in the window before it may open.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u64,
    /// Rolling window length.
    #[serde(default = "defaults::window")]
    pub window: Dur,
    /// Time open before probes.
    #[serde(default = "defaults::reset_timeout")]
    pub reset_timeout: Dur,
    /// Probes allowed at once while half-open.
    #[serde(default = "defaults::half_open_probes")]
    pub half_open_probes: u32,
    /// Statuses counted as failures; default every 5xx.
    #[serde(default)]
    pub failure_statuses: Option<Vec<u16>>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            timeout: None,
            error_threshold_percentage: defaults::error_threshold(),
            min_requests: defaults::min_requests(),
            window: defaults::window(),
            reset_timeout: defaults::reset_timeout(),
            half_open_probes: defaults::half_open_probes(),
            failure_statuses: None,
        }
    }
}

/// One route: a match, and either an upstream (sync) or an async topic.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and logs.
    pub name: String,
    /// Method and path template.
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// Upstream for sync routes.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Upstream path template (defaults to the request path).
    #[serde(default)]
    pub path: Option<String>,
    /// Response caching for GET/HEAD.
    #[serde(default)]
    pub cache: Option<RouteCacheConfig>,
    /// Cache tags dropped after a 2xx answer.
    #[serde(default)]
    pub invalidate: Vec<String>,
    /// Per-route rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Sync writes executed once per `Idempotency-Key`.
    #[serde(default)]
    pub idempotency: Option<IdempotencyConfig>,
    /// Allow retries of non-idempotent methods.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Default JSON projection.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Makes this an async route.
    #[serde(default, rename = "async")]
    pub async_: Option<AsyncConfig>,
}

/// Method and path template of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// HTTP method; any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Path template such as `/products/{id}`.
    pub path: String,
}

/// Caching of one route's responses.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheConfig {
    /// Freshness when the upstream gives none.
    pub ttl: Dur,
    /// Tag templates such as `product:{id}`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Request headers that split the cache key.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Serve stale while refreshing in the background for this long.
    #[serde(default)]
    pub stale_while_revalidate: Option<Dur>,
    /// Serve stale when the upstream fails (or its breaker is open) for this long.
    #[serde(default)]
    pub stale_if_error: Option<Dur>,
    /// Also cache non-2xx answers.
    #[serde(default)]
    pub cache_errors: bool,
    /// Use `ttl` even when the origin sends freshness of its own (dangerous).
    #[serde(default, rename = "override")]
    pub override_ttl: bool,
    /// Variants kept per URI (by `Vary` and `vary`); the oldest go first.
    #[serde(default = "defaults::max_variants")]
    pub max_variants: u32,
    /// Ignore clients' `Cache-Control` (`no-cache`, `max-age`, `only-if-cached`, ...).
    #[serde(default)]
    pub ignore_request_cache_control: bool,
    /// Treat a request `Cookie` like `Authorization`: no shared answer unless the origin allows it.
    #[serde(default)]
    pub cookie_is_credential: bool,
}

/// A token-bucket rate limit.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed per period.
    pub requests: u32,
    /// The period.
    pub per: Dur,
}

/// Idempotency window for sync writes.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a key is remembered.
    pub ttl: Dur,
}

/// An async route: enqueue durably, answer 202, fan out to subscribers.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncConfig {
    /// Topic name.
    pub topic: String,
    /// How long an `Idempotency-Key` is remembered.
    #[serde(default = "defaults::idempotency_window")]
    pub idempotency_window: Dur,
    /// Where the event is delivered.
    pub subscribers: Vec<SubscriberConfig>,
}

/// A subscriber of an async topic.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    /// Unique name (metrics, DLQ).
    pub name: String,
    /// Upstream receiving deliveries.
    pub upstream: String,
    /// Path on the upstream.
    pub path: String,
    /// Backoff between attempts (attempts from `max_attempts`).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Attempts before dead-lettering.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Age past which a message is dead-lettered.
    #[serde(default)]
    pub max_age: Option<Dur>,
    /// Delivery rate cap.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// 4xx statuses to retry anyway (by default a 4xx other than 408 and 429
    /// is dead-lettered at once: repeating a rejected request cannot help).
    #[serde(default)]
    pub retry_on: Vec<u16>,
    /// Deliveries allowed at once beyond the even spacing of `rate` (default 1: none).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Per-key ordering source.
    #[serde(default)]
    pub ordering_key: Option<KeySource>,
    /// Standard Webhooks signing secrets (env var names; first signs, all listed for rotation).
    #[serde(default)]
    pub secret_env: Option<OneOrMany>,
    /// Stop delivering (dead-letter at once) after failing continuously this long.
    #[serde(default)]
    pub disable_after: Option<Dur>,
    /// Deliveries in flight at once.
    #[serde(default = "defaults::subscriber_concurrency")]
    pub concurrency: usize,
}

impl BreakerConfig {
    /// Converts to the policy crate's breaker tuning.
    pub fn to_policy(&self) -> junction_policy::BreakerConfig {
        junction_policy::BreakerConfig {
            error_threshold: self.error_threshold_percentage / 100.0,
            min_requests: self.min_requests,
            window: self.window.0,
            reset_timeout: self.reset_timeout.0,
            half_open_probes: self.half_open_probes.max(1),
        }
    }
}

mod defaults {
    use super::*;

    pub fn listen() -> SocketAddr {
        "127.0.0.1:8080".parse().expect("valid")
    }
    pub fn admin_listen() -> SocketAddr {
        "127.0.0.1:9090".parse().expect("valid")
    }
    pub fn peek_max_bytes() -> ByteSize {
        ByteSize(64 * 1024)
    }
    pub fn peek_redact() -> Vec<String> {
        [
            "password",
            "secret",
            "token",
            "access_token",
            "refresh_token",
            "api_key",
            "authorization",
            "card_number",
            "cvv",
            "ssn",
            "iban",
        ]
        .map(String::from)
        .to_vec()
    }
    pub fn queue_path() -> PathBuf {
        PathBuf::from("./data/queue")
    }
    pub fn max_entries() -> u64 {
        100_000
    }
    pub fn header_read_timeout() -> Dur {
        Dur(Duration::from_secs(10))
    }
    pub fn write_timeout() -> Dur {
        Dur(Duration::from_secs(30))
    }
    pub fn body_timeout() -> Dur {
        Dur(Duration::from_secs(300))
    }

    pub fn max_header_bytes() -> ByteSize {
        ByteSize(64 << 10)
    }

    pub fn max_connections() -> usize {
        10_000
    }

    pub fn drain_delay() -> Dur {
        Dur(Duration::from_secs(5))
    }

    pub fn grace() -> Dur {
        Dur(Duration::from_secs(30))
    }

    pub fn max_variants() -> u32 {
        16
    }

    pub fn max_cache_bytes() -> ByteSize {
        ByteSize(256 << 20)
    }
    pub fn redis_prefix() -> String {
        "junction".into()
    }
    pub fn max_body() -> ByteSize {
        ByteSize(10 << 20)
    }
    pub fn buffer_budget() -> ByteSize {
        ByteSize(256 << 20)
    }
    pub fn caller_header() -> String {
        "x-junction-caller".into()
    }
    pub fn timeout() -> Dur {
        Dur(Duration::from_secs(30))
    }
    pub fn max_concurrency() -> usize {
        1024
    }
    pub fn adaptive_min() -> usize {
        4
    }
    pub fn adaptive_initial() -> usize {
        20
    }
    pub fn adaptive_tolerance() -> f64 {
        1.5
    }
    pub fn retry_on() -> Vec<RetryOn> {
        vec![
            RetryOn::Named(RetryCondition::ConnectFailure),
            RetryOn::Named(RetryCondition::Timeout),
            RetryOn::Status(502),
            RetryOn::Status(503),
            RetryOn::Status(504),
        ]
    }
    pub fn attempts() -> u32 {
        3
    }
    pub fn backoff() -> Dur {
        Dur(Duration::from_millis(100))
    }
    pub fn max_backoff() -> Dur {
        Dur(Duration::from_secs(2))
    }
    pub fn budget_percent() -> f64 {
        20.0
    }
    pub fn budget_min_per_sec() -> u32 {
        10
    }
    pub fn error_threshold() -> f64 {
        50.0
    }
    pub fn min_requests() -> u64 {
        20
    }
    pub fn window() -> Dur {
        Dur(Duration::from_secs(10))
    }
    pub fn reset_timeout() -> Dur {
        Dur(Duration::from_secs(10))
    }
    pub fn half_open_probes() -> u32 {
        1
    }
    pub fn lease_ttl() -> Dur {
        Dur(junction_queue::redis::LEASE_TTL)
    }
    pub fn queue_prefix() -> String {
        "junction:q".into()
    }
    pub fn ordering_partitions() -> u16 {
        junction_queue::DEFAULT_ORDERING_PARTITIONS
    }
    pub fn kafka_partitions() -> i32 {
        6
    }
    pub fn kafka_session_timeout() -> Dur {
        Dur(std::time::Duration::from_secs(10))
    }
    pub fn queue_schema() -> String {
        "junction".into()
    }
    pub fn idempotency_window() -> Dur {
        Dur(Duration::from_secs(24 * 3600))
    }
    pub fn subscriber_concurrency() -> usize {
        32
    }
}
