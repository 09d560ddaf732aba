//! `upstreams:` — one upstream service and the policies protecting it
//! (timeouts, retries, breaker, concurrency).

use super::{defaults, Dur};
use schemars::JsonSchema;
use serde::Deserialize;

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
    #[serde(default = "default_retry_on")]
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

/// Retried by default: failures a retry can fix (no answer, or the upstream
/// said it could not answer now).
fn default_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::Named(RetryCondition::ConnectFailure),
        RetryOn::Named(RetryCondition::Timeout),
        RetryOn::Status(502),
        RetryOn::Status(503),
        RetryOn::Status(504),
    ]
}
