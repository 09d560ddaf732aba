//! An upstream service and the policies protecting it.
//!
//! One call goes through, in order:
//! 1. the retry loop (outermost, so each retry passes every check below again);
//! 2. the bulkhead (refuse at once when too many calls are in flight);
//! 3. the circuit breaker (refuse at once while open; count the outcome);
//! 4. the timeout (to response headers), then a pooled connection (plain
//!    HTTP/1.1, see `pool.rs`; HTTP/2 without TLS for `http2: true`, see
//!    `h2c.rs`; or HTTPS with HTTP/2 by ALPN for `https://` upstreams, see
//!    `tls.rs`).
//!
//! Retries happen only before a response is handed to the client, so never
//! after its body started; they need a replayable request body (see
//! [`RequestBody`]), a retryable outcome, an allowed method, and budget.

mod metrics;

pub use junction_policy::error_chain;
pub use metrics::UpstreamMetrics;

use super::client_body::{BodyWatch, ClientFault};
use super::pool::{self, UpstreamBody};
use crate::body::Body;
use crate::config::{RetryCondition, RetryOn, UpstreamConfig};
use crate::problem::GatewayError;
use crate::telemetry::metrics::{UpstreamLabel, UpstreamOutcome};
use crate::telemetry::{otel, Metrics};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, Uri};
use junction_policy::{
    parse_retry_after, Backoff, BreakerState, Bulkhead, CircuitBreaker, RetryBudget,
    RetryBudgetConfig, RetrySafety, UpstreamError, UpstreamErrorKind,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// A request body as the retry loop sees it.
pub enum RequestBody {
    /// Buffered: can be sent again.
    Replayable(Bytes),
    /// Streaming from the client: can be sent once; the watch tells a
    /// client's fault from the upstream's.
    Once(Body, Arc<BodyWatch>),
}

/// How a call may be retried, decided by the route.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// Whether the method (or the route's opt-in) allows retries.
    pub retry_allowed: bool,
    /// The request body limit, reported when a streamed body exceeds it.
    pub body_limit: u64,
}

/// Per-upstream retry settings.
struct RetryPolicy {
    attempts: u32,
    backoff: Backoff,
    budget: RetryBudget,
}

/// One upstream: its address and policies. Shared by every route using it.
pub struct Upstream {
    name: String,
    /// Where plain `http://` upstreams are connected to.
    target: pool::Target,
    /// Set for `https://` upstreams.
    tls: Option<super::tls::UpstreamTls>,
    /// HTTP/2 without TLS (`http2: true`), instead of the HTTP/1.1 pool.
    h2c: bool,
    scheme_authority: String,
    base_path: String,
    timeout: Duration,
    /// The longest a response body may take after its headers.
    body_timeout: Duration,
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    retry: Option<RetryPolicy>,
    retry_on: Vec<RetryOn>,
    failure_statuses: Option<Vec<u16>>,
    outcomes: Outcomes,
    /// Attempt latency (`junction_upstream_request_duration_seconds`).
    latency: Histogram,
    retries: Counter,
}

/// Pre-resolved `junction_upstream_requests_total` counters.
struct Outcomes {
    success: Counter,
    failure: Counter,
    timeout: Counter,
    connect_error: Counter,
    error: Counter,
    breaker_open: Counter,
    rejected: Counter,
    /// Response bodies cut off at `body_timeout` (the attempt itself counted as it ended).
    body_timeout: Counter,
}

impl Upstream {
    /// Builds an upstream from its config; `url` was validated by config loading.
    pub fn new(name: &str, cfg: &UpstreamConfig, metrics: &Metrics) -> anyhow::Result<Self> {
        let uri: Uri = cfg.url.parse()?;
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("upstream {name}: URL has no host"))?;
        let base_path = uri.path().trim_end_matches('/').to_string();
        let timeout = match cfg.breaker.timeout {
            Some(t) => t.0.min(cfg.timeout.0),
            None => cfg.timeout.0,
        };
        let retry = cfg
            .retry
            .as_ref()
            .filter(|r| r.attempts > 1)
            .map(|r| RetryPolicy {
                attempts: r.attempts,
                backoff: Backoff {
                    base: r.backoff.0,
                    max: r.max_backoff.0,
                },
                budget: RetryBudget::new(RetryBudgetConfig {
                    ratio: r.budget_percent / 100.0,
                    min_per_sec: r.budget_min_per_sec,
                    window: Duration::from_secs(10),
                }),
            });
        let metrics = metrics.set::<UpstreamMetrics>();
        let outcome = |o: &'static str| {
            metrics
                .requests
                .get_or_create(&UpstreamOutcome {
                    upstream: name.to_string(),
                    outcome: o,
                })
                .clone()
        };
        let outcomes = Outcomes {
            success: outcome("success"),
            failure: outcome("failure"),
            timeout: outcome("timeout"),
            connect_error: outcome("connect_error"),
            error: outcome("error"),
            breaker_open: outcome("breaker_open"),
            rejected: outcome("rejected"),
            body_timeout: outcome("body_timeout"),
        };
        let latency = metrics
            .duration
            .get_or_create(&UpstreamLabel {
                upstream: name.to_string(),
            })
            .clone();
        let retries = metrics
            .retries
            .get_or_create(&UpstreamLabel {
                upstream: name.to_string(),
            })
            .clone();
        let tls = match uri.scheme_str() {
            Some("https") => {
                let ca = cfg.tls.as_ref().and_then(|t| t.ca_file.as_deref());
                Some(super::tls::UpstreamTls::new(ca.map(std::path::Path::new))?)
            }
            _ => None,
        };
        Ok(Self {
            name: name.to_string(),
            target: pool::Target::new(authority),
            tls,
            h2c: cfg.http2,
            scheme_authority: format!("{}://{}", uri.scheme_str().unwrap_or("http"), authority),
            base_path,
            timeout,
            body_timeout: cfg.body_timeout.0,
            breaker: CircuitBreaker::observed(cfg.breaker.to_policy(), {
                let upstream = name.to_owned();
                move |from, to| log_breaker(&upstream, from, to)
            }),
            bulkhead: match &cfg.adaptive_concurrency {
                Some(a) => Bulkhead::adaptive(cfg.max_concurrency, a.to_policy()),
                None => Bulkhead::new(cfg.max_concurrency),
            },
            retry,
            retry_on: cfg.retry_on.clone(),
            failure_statuses: cfg.breaker.failure_statuses.clone(),
            outcomes,
            latency,
            retries,
        })
    }

    /// The upstream's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The upstream's breaker (for the admin API and metrics).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The upstream's bulkhead.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The longest [`call`](Self::call) can wait for response headers: every
    /// attempt's timeout plus the longest wait between them (a honoured
    /// `Retry-After` included, which is never above the backoff's maximum).
    pub fn longest_call(&self) -> Duration {
        match &self.retry {
            Some(r) => self.timeout * r.attempts + r.backoff.max * r.attempts.saturating_sub(1),
            None => self.timeout,
        }
    }

    /// Whether responses with `status` count as failures for the breaker.
    pub fn is_failure_status(&self, status: u16) -> bool {
        match &self.failure_statuses {
            Some(list) => list.contains(&status),
            None => status >= 500,
        }
    }

    /// The absolute URI for `path_and_query` on this upstream.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        // Pushed, not `format!`ed: this runs for every proxied request.
        let mut uri = String::with_capacity(
            self.scheme_authority.len() + self.base_path.len() + path_and_query.len(),
        );
        uri.push_str(&self.scheme_authority);
        uri.push_str(&self.base_path);
        uri.push_str(path_and_query);
        Uri::try_from(uri)
            .map_err(|e| GatewayError::BadRequest(format!("cannot build upstream URI: {e}")))
    }

    fn retryable(&self, cond: RetryCondition) -> bool {
        self.retry_on.contains(&RetryOn::Named(cond))
    }

    /// Sends a request with every policy applied; returns the response and the attempts made.
    pub async fn call(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: RequestBody,
        opts: CallOptions,
    ) -> Result<(Response<UpstreamBody>, u32), GatewayError> {
        let max_attempts = match (&self.retry, &body) {
            (Some(r), RequestBody::Replayable(_)) => r.attempts,
            _ => 1,
        };
        if let Some(r) = &self.retry {
            r.budget.deposit();
        }
        let (replay, mut once, watch) = match body {
            RequestBody::Replayable(b) => (Some(b), None, None),
            RequestBody::Once(b, watch) => (None, Some(b), Some(watch)),
        };
        let mut attempt = 1u32;
        let mut parts = Some((method, uri, headers));
        loop {
            let body = match (&replay, once.take()) {
                (Some(bytes), _) => crate::body::full(bytes.clone()),
                (None, Some(stream)) => stream,
                // A streamed body allows one attempt only (max_attempts is 1).
                (None, None) => crate::body::empty(),
            };
            // The last attempt takes the request's parts; earlier ones send copies.
            let (method, uri, headers) = if attempt < max_attempts {
                parts.clone()
            } else {
                parts.take()
            }
            .expect("no attempt after the last");
            let outcome = self
                .attempt(method, uri, headers, body, watch.as_deref())
                .await;
            let (retry_wanted, retry_after) = match &outcome {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let wanted = self.retry_on.contains(&RetryOn::Status(status));
                    let after = resp
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    (wanted && opts.retry_allowed, after)
                }
                Err(AttemptError::Upstream(e)) => {
                    let safe = match e.retry {
                        RetrySafety::Safe => true,
                        RetrySafety::IfIdempotent => opts.retry_allowed,
                        RetrySafety::No => false,
                    };
                    let condition = match e.kind {
                        UpstreamErrorKind::Connect => Some(RetryCondition::ConnectFailure),
                        UpstreamErrorKind::Timeout { .. } => Some(RetryCondition::Timeout),
                        _ => None,
                    };
                    (safe && condition.is_some_and(|c| self.retryable(c)), None)
                }
                Err(AttemptError::Client(_)) => (false, None),
            };
            if retry_wanted && attempt < max_attempts {
                let policy = self
                    .retry
                    .as_ref()
                    .expect("max_attempts > 1 implies a policy");
                let mut wait = policy.backoff.delay(attempt);
                let honoured = match retry_after {
                    Some(after) if after > policy.backoff.max => false,
                    Some(after) => {
                        wait = wait.max(after);
                        true
                    }
                    None => true,
                };
                if honoured && policy.budget.try_withdraw() {
                    self.retries.inc();
                    tracing::debug!(upstream = %self.name, attempt, ?wait, "retrying");
                    drop(outcome);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
            }
            return match outcome {
                Ok(resp) => Ok((resp, attempt)),
                Err(e) => Err(e.into_gateway_error(self.timeout, opts.body_limit)),
            };
        }
    }

    /// One attempt, no retries (the dispatcher retries through the queue instead).
    pub async fn send_once(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response<UpstreamBody>, GatewayError> {
        self.attempt(method, uri, headers, body, None)
            .await
            .map_err(|e| e.into_gateway_error(self.timeout, u64::MAX))
    }

    /// One attempt, in its own trace span when tracing is on.
    async fn attempt(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Body,
        watch: Option<&BodyWatch>,
    ) -> Result<Response<UpstreamBody>, AttemptError> {
        if !otel::enabled() {
            return self.attempt_inner(method, uri, headers, body, watch).await;
        }
        let span = otel::attempt_span(&self.name, &method);
        let result = self
            .attempt_inner(method, uri, headers, body, watch)
            .instrument(span.clone())
            .await;
        let (outcome, status) = match &result {
            Ok(resp) if self.is_failure_status(resp.status().as_u16()) => {
                ("failure", Some(resp.status().as_u16()))
            }
            Ok(resp) => ("success", Some(resp.status().as_u16())),
            Err(AttemptError::Upstream(e)) => (
                match e.kind {
                    UpstreamErrorKind::Connect => "connect_error",
                    UpstreamErrorKind::Timeout { .. } => "timeout",
                    UpstreamErrorKind::BreakerOpen { .. } => "breaker_open",
                    UpstreamErrorKind::Overloaded { .. } => "rejected",
                    UpstreamErrorKind::Broken => "error",
                },
                None,
            ),
            Err(AttemptError::Client(_)) => ("client_error", None),
        };
        otel::record_outcome(&span, outcome, status, outcome != "success");
        result
    }

    /// One attempt through bulkhead, breaker and timeout.
    async fn attempt_inner(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Body,
        watch: Option<&BodyWatch>,
    ) -> Result<Response<UpstreamBody>, AttemptError> {
        let slot = self.bulkhead.try_acquire().map_err(|full| {
            self.outcomes.rejected.inc();
            AttemptError::Upstream(UpstreamError::new(
                &self.name,
                UpstreamErrorKind::Overloaded { max: full.max },
            ))
        })?;
        let permit = self.breaker.try_acquire().map_err(|open| {
            self.outcomes.breaker_open.inc();
            AttemptError::Upstream(UpstreamError::new(
                &self.name,
                UpstreamErrorKind::BreakerOpen {
                    retry_in: open.retry_in,
                },
            ))
        })?;
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        otel::inject_current(req.headers_mut());
        let sent = async {
            match &self.tls {
                Some(tls) => tls
                    .request(req)
                    .await
                    .map(|resp| resp.map(UpstreamBody::unpooled))
                    .map_err(ClientError::Tls),
                None if self.h2c => super::h2c::send(&self.target, req)
                    .await
                    .map_err(ClientError::Plain),
                None => pool::send(&self.target, req)
                    .await
                    .map_err(ClientError::Plain),
            }
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, sent).await;
        // The client's fault (its body broke, was too large, or kept us waiting):
        // the upstream did nothing wrong, so its breaker and counters hear nothing.
        if let Some(fault) = match &outcome {
            Ok(Ok(_)) => None,
            Ok(Err(_)) => watch.and_then(|w| w.fault(false)),
            Err(_elapsed) => watch.and_then(|w| w.fault(true)),
        } {
            drop(permit);
            return Err(AttemptError::Client(fault));
        }
        let took = started.elapsed();
        self.latency.observe(took.as_secs_f64());
        // What teaches an adaptive limit: an answer's time (not when the
        // client's body streamed through: a slow upload is not the upstream's
        // time), or no answer at all.
        match &outcome {
            Ok(Ok(_)) if watch.is_none() => slot.answered(took),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_connect() => slot.dropped(),
            Err(_) => slot.dropped(),
            Ok(Err(_)) => {}
        }
        match outcome {
            Ok(Ok(resp)) => {
                let resp = resp.map(|b| {
                    b.with_deadline(self.body_timeout, self.outcomes.body_timeout.clone())
                });
                if self.is_failure_status(resp.status().as_u16()) {
                    self.outcomes.failure.inc();
                    permit.failure();
                } else {
                    self.outcomes.success.inc();
                    permit.success();
                }
                Ok(resp)
            }
            Ok(Err(e)) if e.is_connect() => {
                self.outcomes.connect_error.inc();
                permit.failure();
                Err(AttemptError::Upstream(
                    UpstreamError::new(&self.name, UpstreamErrorKind::Connect).with_source(e),
                ))
            }
            Ok(Err(e)) => {
                self.outcomes.error.inc();
                permit.failure();
                Err(AttemptError::Upstream(
                    UpstreamError::new(&self.name, UpstreamErrorKind::Broken).with_source(e),
                ))
            }
            Err(_elapsed) => {
                self.outcomes.timeout.inc();
                permit.failure();
                Err(AttemptError::Upstream(UpstreamError::new(
                    &self.name,
                    UpstreamErrorKind::Timeout {
                        after: self.timeout,
                    },
                )))
            }
        }
    }
}

/// An error of either client.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error(transparent)]
    Plain(pool::SendError),
    #[error(transparent)]
    Tls(hyper_util::client::legacy::Error),
}

impl ClientError {
    fn is_connect(&self) -> bool {
        match self {
            ClientError::Plain(e) => e.is_connect(),
            ClientError::Tls(e) => e.is_connect(),
        }
    }
}

/// Why one attempt produced no response.
enum AttemptError {
    /// The upstream (or Junction's protection of it) failed the call.
    Upstream(UpstreamError),
    /// The client's request body, not the upstream, made the attempt fail.
    Client(ClientFault),
}

impl AttemptError {
    fn into_gateway_error(self, timeout: Duration, body_limit: u64) -> GatewayError {
        match self {
            AttemptError::Upstream(e) => {
                let too_large =
                    std::error::Error::source(&e).is_some_and(crate::body::is_length_limit);
                if too_large {
                    // A streamed request body ran past the limit: the client's fault.
                    return GatewayError::BodyTooLarge { limit: body_limit };
                }
                GatewayError::Upstream(e)
            }
            AttemptError::Client(ClientFault::TooLarge) => {
                GatewayError::BodyTooLarge { limit: body_limit }
            }
            AttemptError::Client(ClientFault::Broken) => GatewayError::BadBody(
                "the request body broke off or was malformed while being forwarded".into(),
            ),
            AttemptError::Client(ClientFault::TooSlow) => GatewayError::ClientTimeout { timeout },
        }
    }
}

/// One log line per breaker transition, named by upstream.
fn log_breaker(upstream: &str, from: BreakerState, to: BreakerState) {
    match to {
        BreakerState::Open => {
            tracing::warn!(%upstream, from = from.as_str(), "circuit breaker opened: calls refused until the reset timeout")
        }
        BreakerState::HalfOpen => tracing::info!(%upstream, "circuit breaker half-open: probing"),
        BreakerState::Closed => {
            tracing::info!(%upstream, "circuit breaker closed: the upstream recovered")
        }
    }
}
