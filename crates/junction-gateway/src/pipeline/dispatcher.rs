//! One dispatcher per subscriber: take deliveries from its subscription, send
//! them, settle each through its ack handle.
//!
//! A subscriber's dispatcher never waits on another's: each has its own tasks
//! (one lane per delivery thread), concurrency cap and rate limit, so one slow
//! or dead subscriber delays no one else. While the upstream's breaker is open
//! the dispatcher leases nothing and sleeps until the next probe, so an outage
//! does not burn attempts.

use super::signing::Signer;
use super::threads::DeliveryThreads;
use crate::body::full;
use crate::config::SubscriberConfig;
use crate::problem::GatewayError;
use crate::proxy::upstream::Upstream;
use crate::telemetry::live::{Live, SubscriberLive};
use crate::telemetry::metrics::{SubscriberLabel, SubscriberOutcome};
use crate::telemetry::trace::next_traceparent;
use crate::telemetry::{otel, Metrics};
use governor::DefaultDirectRateLimiter;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use junction_policy::{
    classify_status, parse_retry_after, Backoff, BreakerState, StatusClass, UpstreamErrorKind,
};
use junction_queue::{AttemptRecord, Delivery, Queue, ResponseSample, Subscription};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A delivery rate of `count` per `per`: evenly spaced, so no window of `per`
/// sees more than `count` (plus `burst - 1` when a burst is configured).
fn rate_limiter(count: u32, per: Duration, burst: Option<u32>) -> DefaultDirectRateLimiter {
    crate::rate::limiter(count, per, burst.unwrap_or(1))
}

/// Attempts before dead-lettering when `max_attempts` is not set.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 20;
/// Backoff when a subscriber has no `retry`: long enough to ride out a vendor outage.
const DEFAULT_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(500),
    max: Duration::from_secs(60),
};
/// Most deliveries taken in one call.
const LEASE_BATCH: usize = 256;
/// Pause after the subscription failed (broker unreachable) before trying again.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pause after the upstream refused a delivery without sending it (breaker, bulkhead).
const REFUSED_PAUSE: Duration = Duration::from_millis(50);
/// How long in-flight deliveries may finish after shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Delivers one subscriber's messages.
pub struct Dispatcher {
    topic: String,
    name: String,
    uri: Uri,
    upstream: Arc<Upstream>,
    queue: Queue,
    max_attempts: u32,
    backoff: Backoff,
    max_age: Option<Duration>,
    disable_after: Option<Duration>,
    failing_since: Mutex<Option<Instant>>,
    /// 4xx statuses retried anyway.
    retry_on: Vec<u16>,
    /// Paused by its upstream's open breaker (logged once per pause and resume).
    paused: std::sync::atomic::AtomicBool,
    /// In-flight deliveries at most, over all lanes.
    concurrency: usize,
    rate: Option<DefaultDirectRateLimiter>,
    signer: Option<Signer>,
    live: Arc<Live>,
    sub_live: Arc<SubscriberLive>,
    delivered: Counter,
    retried: Counter,
    dead: Counter,
    latency: Histogram,
    attempts_hist: Histogram,
}

impl Dispatcher {
    /// Builds the dispatcher of `sub` (a subscriber of `topic`).
    pub fn new(
        topic: &str,
        sub: &SubscriberConfig,
        upstream: Arc<Upstream>,
        queue: Queue,
        metrics: &Metrics,
        live: Arc<Live>,
    ) -> anyhow::Result<Self> {
        let metrics = metrics.set::<super::metrics::PipelineMetrics>();
        let outcome = |o: &'static str| {
            metrics
                .deliveries
                .get_or_create(&SubscriberOutcome {
                    subscriber: sub.name.clone(),
                    outcome: o,
                })
                .clone()
        };
        let label = SubscriberLabel {
            subscriber: sub.name.clone(),
        };
        let latency = metrics.delivery_latency.get_or_create(&label).clone();
        let attempts_hist = metrics.delivery_attempts.get_or_create(&label).clone();
        let rate = sub.rate.map(|r| rate_limiter(r.count, r.per, sub.burst));
        let signer = match &sub.secret_env {
            Some(names) => Some(Signer::from_env(&names.0)?),
            None => None,
        };
        let backoff = match &sub.retry {
            Some(r) => Backoff {
                base: r.backoff.0,
                max: r.max_backoff.0,
            },
            None => DEFAULT_BACKOFF,
        };
        // `retry` sets the backoff only: its `attempts` (an upstream setting,
        // default 3) never caps deliveries, `max_attempts` does.
        let max_attempts = sub.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1);
        Ok(Self {
            topic: topic.to_string(),
            name: sub.name.clone(),
            uri: upstream
                .uri_for(&sub.path)
                .map_err(|e| anyhow::anyhow!("subscriber {}: {e}", sub.name))?,
            upstream,
            queue,
            max_attempts,
            backoff,
            max_age: sub.max_age.map(|d| d.0),
            disable_after: sub.disable_after.map(|d| d.0),
            failing_since: Mutex::new(None),
            retry_on: sub.retry_on.clone(),
            paused: std::sync::atomic::AtomicBool::new(false),
            concurrency: sub.concurrency.max(1),
            rate,
            signer,
            sub_live: live.subscriber(topic, &sub.name),
            live,
            delivered: outcome("delivered"),
            retried: outcome("retry"),
            dead: outcome("dead"),
            latency,
            attempts_hist,
        })
    }

    /// Leases and delivers until `shutdown`, then drains in-flight deliveries.
    ///
    /// Runs as lanes, one per delivery thread (fewer when the concurrency is lower),
    /// each with its share of the concurrency; resolve every returned task to wait
    /// for the drain.
    pub fn start(
        self,
        threads: &DeliveryThreads,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let this = Arc::new(self);
        let lanes = lane_sizes(this.concurrency, threads.len());
        tracing::info!(subscriber = %this.name, topic = %this.topic, lanes = lanes.len(), "dispatcher started");
        lanes
            .into_iter()
            .enumerate()
            .map(|(i, slots)| threads.spawn(i, this.clone().run_lane(slots, shutdown.clone())))
            .collect()
    }

    /// Records (and logs, once for all lanes) a pause by the upstream's
    /// breaker, or the resume after it.
    fn mark_paused(&self, paused: bool) {
        use std::sync::atomic::Ordering;
        if self.paused.swap(paused, Ordering::Relaxed) == paused {
            return;
        }
        if paused {
            self.sub_live.set_paused(true);
            tracing::warn!(subscriber = %self.name, topic = %self.topic, upstream = %self.upstream.name(), "subscriber paused: its upstream's breaker is open (attempts are not spent)");
        } else {
            self.sub_live.set_paused(false);
            tracing::info!(subscriber = %self.name, topic = %self.topic, "subscriber resumed");
        }
    }

    /// Opens this lane's subscription, retrying until the broker answers.
    async fn subscribe(
        &self,
        slots: usize,
        shutdown: &CancellationToken,
    ) -> Option<Box<dyn Subscription>> {
        let mut logged = false;
        loop {
            match self
                .queue
                .consumer
                .subscribe(&self.topic, &self.name, slots)
                .await
            {
                Ok(sub) => return Some(sub),
                Err(e) if !logged => {
                    tracing::warn!(subscriber = %self.name, error = %e, "cannot subscribe; retrying");
                    logged = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    /// One lane: takes and delivers with up to `slots` deliveries in flight.
    async fn run_lane(self: Arc<Self>, slots: usize, shutdown: CancellationToken) {
        let this = self; // cloned into each delivery task below
        let concurrency = Arc::new(Semaphore::new(slots));
        let Some(mut subscription) = this.subscribe(slots, &shutdown).await else {
            return;
        };
        // Deliveries still sending or recording their outcome; shutdown waits for them.
        let in_flight = TaskTracker::new();
        while !shutdown.is_cancelled() {
            // An open breaker pauses this subscriber until the next probe is allowed.
            let snap = this.upstream.breaker().snapshot();
            let probing = match (snap.state, snap.next_probe_in) {
                (BreakerState::Open, Some(wait)) if !wait.is_zero() => {
                    this.mark_paused(true);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
                (BreakerState::Open, _) | (BreakerState::HalfOpen, _) => true,
                (BreakerState::Closed, _) => {
                    this.mark_paused(false);
                    false
                }
            };
            // Half-open: one probe at a time decides whether the upstream is back.
            let free = if probing {
                concurrency.available_permits().min(1)
            } else {
                concurrency.available_permits()
            };
            if free == 0 {
                // Wait for one in-flight delivery to finish.
                tokio::select! {
                    p = concurrency.clone().acquire_owned() => drop(p),
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            // Not raced against shutdown: a cancelled `next` could hold deliveries
            // no one settles; it returns within about a second anyway.
            let batch = match subscription.next(free.min(LEASE_BATCH)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(subscriber = %this.name, error = %e, "taking deliveries failed; retrying");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            };
            for d in batch {
                let permit = concurrency
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closed");
                let me = this.clone();
                in_flight.spawn(async move { me.deliver(d, permit).await });
            }
        }
        // Drain: wait until every delivery and its recording has finished, bounded by the grace period.
        in_flight.close();
        if tokio::time::timeout(DRAIN_GRACE, in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(subscriber = %this.name, "deliveries still in flight after the grace period; they will be redelivered");
        }
        tracing::info!(subscriber = %this.name, "dispatcher lane stopped");
    }

    /// One attempt for one delivery, and its recording. `slot` is this delivery's
    /// share of the subscriber's concurrency: it is given back once the subscriber
    /// has answered, so recording the outcome does not hold up the next send.
    async fn deliver(&self, d: Delivery, slot: OwnedSemaphorePermit) {
        let attempt = d.attempts + 1;
        let started_ms = now_ms();
        if let Some(max_age) = self.max_age {
            if started_ms.saturating_sub(d.first_enqueued_ms) > max_age.as_millis() as u64 {
                let rec = record(
                    attempt,
                    started_ms,
                    "not attempted: max age exceeded".into(),
                    Duration::ZERO,
                );
                return self
                    .finish_dead(
                        d,
                        rec,
                        format!("older than max_age {}", humantime::format_duration(max_age)),
                    )
                    .await;
            }
        }
        if let Some(limit) = self.disable_after {
            if self
                .failing_since
                .lock()
                .is_some_and(|t| t.elapsed() > limit)
            {
                self.sub_live.set_disabled(true);
                let rec = record(
                    attempt,
                    started_ms,
                    "not attempted: subscriber disabled".into(),
                    Duration::ZERO,
                );
                return self
                    .finish_dead(
                        d,
                        rec,
                        format!(
                            "subscriber failing for over {}",
                            humantime::format_duration(limit)
                        ),
                    )
                    .await;
            }
        }
        if let Some(rate) = &self.rate {
            if rate.check().is_err() {
                let _waiting = self.sub_live.rate_waiting();
                rate.until_ready().await;
            }
        }
        self.sub_live
            .last_enqueued_ms
            .store(d.first_enqueued_ms, Ordering::Relaxed);
        let span = otel::delivery_span(
            &self.name,
            &self.topic,
            d.message.id.as_str(),
            attempt,
            &d.message.headers,
        );
        let t0 = Instant::now();
        let result = self.send(&d, attempt).instrument(span.clone()).await;
        let took = t0.elapsed();
        if matches!(&result, Err(GatewayError::Upstream(e)) if e.refused_here()) {
            otel::record_outcome(&span, "refused", None, false);
            // Nothing was sent: this is not an attempt. The lease goes back and the
            // dispatch loop pauses on the open breaker (or the bulkhead frees up);
            // holding the slot a moment keeps a half-open loop from spinning.
            tokio::time::sleep(REFUSED_PAUSE).await;
            drop(slot);
            if let Err(e) = d.release().await {
                tracing::warn!(subscriber = %self.name, error = %e, "could not give a delivery back; it is redelivered after its lease");
            }
            return;
        }
        drop(slot);
        let (ok, outcome, retry_after) = match &result {
            Ok(answer) => (
                (200..300).contains(&answer.status),
                format!("status {}", answer.status),
                answer.retry_after,
            ),
            Err(e) => (false, describe(e), None),
        };
        let status = result.as_ref().ok().map(|a| a.status);
        otel::record_outcome(&span, &outcome, status, !ok);
        self.live.delivery(&self.sub_live, took, !ok, attempt > 1);
        let mut rec = record(attempt, started_ms, outcome.clone(), took);
        rec.response = result.ok().and_then(|a| a.sample);
        if ok {
            *self.failing_since.lock() = None;
            self.sub_live.set_disabled(false);
            self.delivered.inc();
            self.sub_live.finished(d.attempts, true);
            self.latency
                .observe(now_ms().saturating_sub(d.first_enqueued_ms) as f64 / 1000.0);
            self.attempts_hist.observe(attempt as f64);
            // Queued, not awaited: nothing here depends on the recording, and not
            // waking this task again for it saves a cross-thread wake-up per delivery.
            if let Err(e) = d.ack_queued(rec).await {
                tracing::warn!(subscriber = %self.name, error = %e, "could not record an ack; the message will be redelivered");
            }
            return;
        }
        if let Some(status) = status {
            let rejected = classify_status(status) == StatusClass::Rejected;
            if rejected && !self.retry_on.contains(&status) {
                // The subscriber rejected this message: not an outage (no
                // `disable_after`), and no retry can change its answer.
                return self
                    .finish_dead(
                        d,
                        rec,
                        format!("{outcome}: rejected by the subscriber (not retried; list it in retry_on to retry)"),
                    )
                    .await;
            }
        }
        self.failing_since.lock().get_or_insert_with(Instant::now);
        if attempt >= self.max_attempts {
            return self
                .finish_dead(
                    d,
                    rec,
                    format!(
                        "gave up after {attempt} attempt{}; last: {outcome}",
                        if attempt == 1 { "" } else { "s" }
                    ),
                )
                .await;
        }
        let wait = retry_after
            .unwrap_or_default()
            .max(self.backoff.delay(attempt));
        self.retried.inc();
        tracing::debug!(subscriber = %self.name, id = %d.message.id, attempt, ?wait, %outcome, "delivery failed; will retry");
        // A failed recording gives the delivery back (the backend's rule), so it
        // is attempted again rather than lost.
        if let Err(e) = d.retry(rec, wait).await {
            tracing::warn!(subscriber = %self.name, error = %e, "could not schedule a retry");
        }
    }

    async fn finish_dead(&self, d: Delivery, rec: AttemptRecord, reason: String) {
        self.dead.inc();
        self.sub_live.finished(d.attempts, false);
        self.attempts_hist.observe(rec.attempt as f64);
        tracing::warn!(subscriber = %self.name, id = %d.message.id, %reason, "dead-lettered");
        if let Err(e) = d.dead_letter(rec, reason).await {
            tracing::warn!(subscriber = %self.name, error = %e, "could not dead-letter");
        }
    }

    /// Sends the message; returns what the subscriber answered.
    async fn send(&self, d: &Delivery, attempt: u32) -> Result<Answer, GatewayError> {
        let msg = &d.message;
        let mut h = HeaderMap::new();
        if let Some(ct) = msg
            .content_type
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert(header::CONTENT_TYPE, ct);
        }
        for (k, v) in &msg.headers {
            let value = if k == "traceparent" {
                next_traceparent(Some(v))
            } else {
                v.clone()
            };
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                h.insert(k, v);
            }
        }
        h.insert(
            "x-junction-message-id",
            HeaderValue::from_str(msg.id.as_str()).expect("uuid is ASCII"),
        );
        h.insert("x-junction-attempt", HeaderValue::from(attempt));
        h.insert(
            "x-junction-topic",
            HeaderValue::from_str(&msg.topic).unwrap_or(HeaderValue::from_static("-")),
        );
        if let Some(signer) = &self.signer {
            let ts = now_ms() / 1000;
            h.insert(
                "webhook-id",
                HeaderValue::from_str(msg.id.as_str()).expect("uuid is ASCII"),
            );
            h.insert("webhook-timestamp", HeaderValue::from(ts));
            if let Ok(v) = HeaderValue::from_str(&signer.sign(msg.id.as_str(), ts, &msg.body)) {
                h.insert("webhook-signature", v);
            }
        }
        let resp = self
            .upstream
            .send_once(Method::POST, self.uri.clone(), h, full(msg.body.clone()))
            .await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let (parts, body) = resp.into_parts();
        // Read the body so the connection returns to the pool; a failure's
        // answer is kept (its first bytes) for the message page and the DLQ.
        let failed = !(200..300).contains(&status);
        let (first, total) = drain(body, if failed { SAMPLED_BODY } else { 0 }).await;
        let sample = failed.then(|| {
            let headers = parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()));
            let mut sample = ResponseSample::new(status, headers, &first);
            sample.body_bytes = total;
            sample
        });
        Ok(Answer {
            status,
            retry_after,
            sample,
        })
    }
}

/// Body bytes read into a failed attempt's sample: one more than it keeps,
/// so a longer body shows as cut.
const SAMPLED_BODY: usize = junction_queue::response::MAX_BODY + 1;

/// Reads `body` to its end (or its first error), keeping its first `keep`
/// bytes; returns them and how many bytes arrived in all.
async fn drain<B: http_body::Body<Data = bytes::Bytes>>(body: B, keep: usize) -> (Vec<u8>, u64) {
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let (mut first, mut total) = (Vec::new(), 0u64);
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            let room = keep.saturating_sub(first.len());
            first.extend_from_slice(&data[..data.len().min(room)]);
            total += data.len() as u64;
        }
    }
    (first, total)
}

/// What a subscriber answered to one attempt.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    /// The response of a failed attempt, bounded.
    sample: Option<ResponseSample>,
}

/// Splits `concurrency` slots over at most `threads` lanes, as evenly as possible;
/// a concurrency below the thread count gets one lane per slot.
fn lane_sizes(concurrency: usize, threads: usize) -> Vec<usize> {
    let lanes = threads.clamp(1, concurrency.max(1));
    (0..lanes)
        .map(|i| concurrency / lanes + usize::from(i < concurrency % lanes))
        .collect()
}

fn record(attempt: u32, at_ms: u64, outcome: String, took: Duration) -> AttemptRecord {
    AttemptRecord {
        attempt,
        at_ms,
        outcome,
        duration_ms: took.as_millis() as u64,
        response: None,
    }
}

fn describe(e: &GatewayError) -> String {
    let GatewayError::Upstream(e) = e else {
        return e.to_string();
    };
    match e.kind {
        UpstreamErrorKind::Timeout { .. } => "timeout".into(),
        UpstreamErrorKind::Connect | UpstreamErrorKind::Broken => {
            format!("connect error: {}", e.cause())
        }
        UpstreamErrorKind::BreakerOpen { .. } => "breaker open".into(),
        UpstreamErrorKind::Overloaded { .. } => "upstream concurrency limit".into(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{lane_sizes, rate_limiter};
    use std::time::Duration;

    #[test]
    fn a_rate_allows_no_burst_unless_one_is_configured() {
        let admitted_at_once = |burst| {
            let limiter = rate_limiter(10, Duration::from_secs(1), burst);
            (0..50).filter(|_| limiter.check().is_ok()).count()
        };
        // 10/s spaced evenly: 1 now, the next 100 ms later (so at most 10 in any second).
        assert_eq!(admitted_at_once(None), 1);
        assert_eq!(admitted_at_once(Some(5)), 5);
    }

    #[test]
    fn lanes_share_the_concurrency_evenly_and_never_exceed_it() {
        assert_eq!(lane_sizes(32, 2), vec![16, 16]);
        assert_eq!(lane_sizes(5, 2), vec![3, 2]);
        assert_eq!(lane_sizes(1, 2), vec![1]);
        assert_eq!(lane_sizes(3, 8), vec![1, 1, 1]);
        assert_eq!(lane_sizes(7, 1), vec![7]);
        for (c, t) in [(1, 1), (2, 3), (33, 4), (1024, 2)] {
            assert_eq!(lane_sizes(c, t).iter().sum::<usize>(), c, "{c} over {t}");
        }
    }
}
