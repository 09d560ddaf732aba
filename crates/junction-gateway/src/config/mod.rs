//! The typed configuration: what a YAML file may say, with defaults.
//!
//! Every struct denies unknown keys. Loading ([`load`]) parses the file into a
//! position-aware tree, deserializes it section by section so that every error is
//! reported, then checks references between sections.

mod analyze;
mod defaults;
mod env;
mod load;
mod located;
mod queue;
mod schema;
mod upstream;
mod validate;
mod validate_queue;
mod values;
mod yaml;

pub use analyze::AnalyzeConfig;
pub use load::{load_file, load_str, ConfigError};
pub use queue::{OnFull, QueueConfig, RabbitQueueType};
pub use upstream::{
    AdaptiveConcurrencyConfig, BreakerConfig, RetryCondition, RetryConfig, RetryOn, UpstreamConfig,
    UpstreamTlsConfig,
};
pub use values::{ByteSize, Dur, KeySource, OneOrMany, Rate};

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

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
