//! OpenTelemetry traces: a span per request, per upstream attempt and per
//! delivery attempt, exported over OTLP/HTTP (protobuf) when
//! `telemetry.otlp_endpoint` is set.
//!
//! Off (the default) no exporter runs and the span helpers return
//! [`Span::none`] after one atomic load, so the hot path formats and allocates
//! nothing for tracing. `traceparent` is then still propagated by
//! [`next_traceparent`] (same trace id, new span id per hop).
//!
//! `serve` installs the layer once ([`layer`]) over a switchable span
//! processor, so a config reload can start, move or stop the export
//! ([`set_endpoint`]) without touching the subscriber. On, the pipeline is a
//! batch export on the Tokio runtime (service name `junction`, `OTEL_BSP_*`
//! variables honoured) and the helpers make real spans with the target
//! [`TARGET`], which only the OTel layer listens to (the log output does not
//! change):
//! - `request` (server): parent is the caller's `traceparent`/`tracestate`;
//!   attributes `http.request.method`, `url.path`, `http.route` (route name),
//!   `http.response.status_code`, `junction.cache`.
//! - `upstream_attempt` (client), child of the request or delivery span:
//!   `junction.upstream`, `http.request.method`, `http.response.status_code`,
//!   `junction.outcome` (success, failure, timeout, connect_error, error,
//!   breaker_open, rejected). The `traceparent` sent upstream carries this
//!   span's id ([`inject_current`]); `tracestate` is passed along unchanged.
//! - `delivery` (producer): parent is the `traceparent` stored with the message;
//!   `junction.subscriber`, `junction.topic`, `junction.message_id`,
//!   `junction.attempt`, `junction.outcome`, `http.response.status_code`.
//!
//! A caller's "not sampled" flag is respected: nothing is exported for that
//! trace and the flag travels on. The [`OtelGuard`] flushes buffered spans when
//! dropped; drop it while the Tokio runtime still runs.

use super::trace::next_traceparent;
use arc_swap::ArcSwapOption;
use http::{HeaderMap, HeaderValue, Method, Response};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::field::Empty;
use tracing::{Span, Subscriber};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Target of every span made here; only the OTel layer listens to it.
pub const TARGET: &str = "junction::otel";

/// Service name reported with every span.
pub const SERVICE_NAME: &str = "junction";

/// Set once the export pipeline is built; spans are made only then.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OTel layer as installed: only [`TARGET`] spans reach it.
pub type OtelLayer<S> = Filtered<OpenTelemetryLayer<S, SdkTracer>, Targets, S>;

/// Keeps the export pipeline alive; flushes and shuts it down when dropped.
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

/// The processor the installed layer feeds: the current export's batch
/// processor, or none while tracing is off.
static SWITCH: OnceLock<Arc<Switch>> = OnceLock::new();

/// A span processor whose target can be replaced while spans flow.
#[derive(Debug, Default)]
struct Switch {
    current: ArcSwapOption<Box<dyn SpanProcessor>>,
    /// The provider's resource (service name), given to every new processor.
    resource: Mutex<Option<Resource>>,
}

/// The provider's handle on the shared [`Switch`].
#[derive(Debug)]
struct SwitchHandle(Arc<Switch>);

impl SpanProcessor for SwitchHandle {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        if let Some(p) = self.0.current.load().as_ref() {
            p.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        if let Some(p) = self.0.current.load().as_ref() {
            p.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self.0.current.load().as_ref() {
            Some(p) => p.force_flush(),
            None => Ok(()),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self.0.current.swap(None) {
            Some(p) => p.shutdown_with_timeout(timeout),
            None => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self.0.resource.lock() = Some(resource.clone());
    }
}

/// A batch processor exporting to `endpoint`.
fn exporting_to(
    endpoint: &str,
    resource: Option<&Resource>,
) -> anyhow::Result<Box<dyn SpanProcessor>> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint))
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint {endpoint}: {e}"))?;
    let mut processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    if let Some(r) = resource {
        processor.set_resource(r);
    }
    Ok(Box::new(processor))
}

/// Starts, moves or stops the export after a reload (`None`: off). The
/// previous export is flushed in the background. Call inside a Tokio runtime.
pub fn set_endpoint(endpoint: Option<&str>) -> anyhow::Result<()> {
    let switch = SWITCH
        .get()
        .ok_or_else(|| anyhow::anyhow!("trace export is not set up in this process"))?;
    let next = match endpoint {
        Some(e) => Some(Arc::new(exporting_to(e, switch.resource.lock().as_ref())?)),
        None => None,
    };
    ENABLED.store(next.is_some(), Ordering::Relaxed);
    if let Some(old) = switch.current.swap(next) {
        // Its batch may wait on the collector: not on this thread.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = old.shutdown() {
                tracing::warn!("flushing the previous trace export failed: {e}");
            }
        });
    }
    tracing::info!(
        otlp_endpoint = endpoint.unwrap_or("-"),
        "trace export changed"
    );
    Ok(())
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: flushing trace spans failed: {e}");
        }
    }
}

/// Builds the layer to install once and its provider, exporting over
/// OTLP/HTTP to `endpoint` (the collector's base URL, e.g.
/// `http://127.0.0.1:4318`) when given; [`set_endpoint`] changes that later.
/// From the moment an endpoint is set, the span helpers make real spans.
/// Call inside a Tokio runtime, at most once per process.
pub fn layer<S>(endpoint: Option<&str>) -> anyhow::Result<(OtelLayer<S>, OtelGuard)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let switch = Arc::new(Switch::default());
    SWITCH
        .set(switch.clone())
        .map_err(|_| anyhow::anyhow!("trace export is already set up"))?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(SwitchHandle(switch))
        .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
        .build();
    let layer = layer_for(&provider);
    if endpoint.is_some() {
        set_endpoint(endpoint)?;
    }
    Ok((layer, OtelGuard { provider }))
}

/// The tracing layer feeding `provider`, filtered to [`TARGET`].
fn layer_for<S>(provider: &SdkTracerProvider) -> OtelLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SERVICE_NAME))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE))
}

/// The OTLP/HTTP traces URL for a collector base URL (`/v1/traces` appended once).
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The span of one request, continuing the caller's trace; `Span::none()` when off.
pub fn request_span(method: &Method, path: &str, headers: &HeaderMap) -> Span {
    if !enabled() {
        return Span::none();
    }
    new_request_span(method, path, headers)
}

fn new_request_span(method: &Method, path: &str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "request",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        url.path = path,
        http.route = Empty,
        http.response.status_code = Empty,
        junction.cache = Empty,
    );
    set_remote_parent(&span, &HeaderExtractor(headers));
    span
}

/// Names the matched route on the current request span (no-op when off).
pub fn record_route(route: &str) {
    if enabled() {
        Span::current().record("http.route", route);
    }
}

/// Records the answer's status and cache outcome on a request span.
pub fn record_response<B>(span: &Span, resp: &Response<B>) {
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    if let Some(cache) = resp
        .headers()
        .get("x-junction-cache")
        .and_then(|v| v.to_str().ok())
    {
        span.record("junction.cache", cache);
    }
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span of one upstream attempt, child of the current span; `Span::none()` when off.
pub fn attempt_span(upstream: &str, method: &Method) -> Span {
    if !enabled() {
        return Span::none();
    }
    new_attempt_span(upstream, method)
}

fn new_attempt_span(upstream: &str, method: &Method) -> Span {
    tracing::info_span!(
        target: TARGET,
        "upstream_attempt",
        otel.kind = "client",
        otel.status_code = Empty,
        junction.upstream = upstream,
        http.request.method = method.as_str(),
        http.response.status_code = Empty,
        junction.outcome = Empty,
    )
}

/// The span of one delivery attempt, continuing the trace stored with the
/// message (`traceparent`/`tracestate` in `stored`); `Span::none()` when off.
pub fn delivery_span(
    subscriber: &str,
    topic: &str,
    message_id: &str,
    attempt: u32,
    stored: &[(String, String)],
) -> Span {
    if !enabled() {
        return Span::none();
    }
    new_delivery_span(subscriber, topic, message_id, attempt, stored)
}

fn new_delivery_span(
    subscriber: &str,
    topic: &str,
    message_id: &str,
    attempt: u32,
    stored: &[(String, String)],
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "delivery",
        otel.kind = "producer",
        otel.status_code = Empty,
        junction.subscriber = subscriber,
        junction.topic = topic,
        junction.message_id = message_id,
        junction.attempt = attempt,
        http.response.status_code = Empty,
        junction.outcome = Empty,
    );
    set_remote_parent(&span, &PairExtractor(stored));
    span
}

/// Records how an attempt or delivery ended (`failed` marks the span as an error).
pub fn record_outcome(span: &Span, outcome: &str, status: Option<u16>, failed: bool) {
    span.record("junction.outcome", outcome);
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    if failed {
        span.record("otel.status_code", "ERROR");
    }
}

/// Sets `traceparent` to the current span's context when tracing is on; leaves
/// the headers (and `tracestate`) as they are otherwise.
pub fn inject_current(headers: &mut HeaderMap) {
    if enabled() {
        inject(&Span::current(), headers);
    }
}

fn inject(span: &Span, headers: &mut HeaderMap) {
    if let Some(tp) = span_traceparent(span) {
        if let Ok(v) = HeaderValue::from_str(&tp) {
            headers.insert("traceparent", v);
        }
    }
}

/// The `traceparent` for the next hop: the current span's when tracing is on,
/// else [`next_traceparent`] of `incoming` (same trace, new span id).
pub fn hop_traceparent(incoming: Option<&str>) -> String {
    if enabled() {
        if let Some(tp) = span_traceparent(&Span::current()) {
            return tp;
        }
    }
    next_traceparent(incoming)
}

/// The trace id of the current span, when tracing is on and it has one.
pub fn current_trace_id() -> Option<super::trace::TraceId> {
    if !enabled() {
        return None;
    }
    let cx = Span::current().context();
    let span_ref = cx.span();
    let sc = span_ref.span_context();
    sc.is_valid()
        .then(|| super::trace::TraceId::of(&traceparent(sc)))
        .flatten()
}

/// The W3C `traceparent` of `span`, when it has a valid OTel context.
fn span_traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    let span_ref = cx.span();
    let sc = span_ref.span_context();
    sc.is_valid().then(|| traceparent(sc))
}

/// Formats a span context as a version-00 `traceparent`.
pub fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// Makes the remote context in `carrier` (when valid) the parent of `span`.
fn set_remote_parent(span: &Span, carrier: &dyn Extractor) {
    let cx: Context = TraceContextPropagator::new().extract(carrier);
    if cx.span().span_context().is_valid() {
        // Fails only for a disabled span, which has no parent to set.
        let _ = span.set_parent(cx);
    }
}

/// Reads trace context from HTTP headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Reads trace context from the headers stored with a message.
struct PairExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, SpanKind, Status};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";

    /// Keeps every exported span.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// Runs `f` under a subscriber with the OTel layer; returns the spans exported.
    fn traced(f: impl FnOnce()) -> Vec<SpanData> {
        let out = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(out.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(layer_for(&provider));
        tracing::subscriber::with_default(subscriber, f);
        provider.force_flush().unwrap();
        let spans = std::mem::take(&mut *out.0.lock().unwrap());
        spans
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:?}"))
    }

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    fn caller_headers(flags: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let tp = format!("00-{TRACE}-{CALLER}-{flags}");
        h.insert("traceparent", tp.parse().unwrap());
        h.insert("tracestate", "vendor=abc".parse().unwrap());
        h
    }

    #[test]
    fn off_by_default_nothing_is_made_or_exported() {
        assert!(!enabled(), "no test may build the real pipeline");
        let incoming = format!("00-{TRACE}-{CALLER}-01");
        let mut h = caller_headers("01");
        let spans = traced(|| {
            let req = request_span(&Method::GET, "/x", &h);
            assert!(req.is_none());
            req.in_scope(|| {
                record_route("r");
                assert!(attempt_span("up", &Method::GET).is_none());
                inject_current(&mut h);
            });
            assert!(delivery_span("s", "t", "id", 1, &[]).is_none());
            let next = hop_traceparent(Some(&incoming));
            assert!(next.starts_with(&format!("00-{TRACE}-")), "{next}");
            assert_ne!(next, incoming);
        });
        assert!(spans.is_empty(), "{spans:?}");
        assert_eq!(h["traceparent"], incoming.as_str());
    }

    #[test]
    fn request_continues_the_caller_and_the_attempt_is_its_child() {
        let mut sent = HeaderMap::new();
        sent.insert("tracestate", "vendor=abc".parse().unwrap());
        let spans = traced(|| {
            let req = new_request_span(&Method::GET, "/products/1", &caller_headers("01"));
            req.in_scope(|| {
                Span::current().record("http.route", "product");
                let attempt = new_attempt_span("inv", &Method::GET);
                attempt.in_scope(|| inject(&Span::current(), &mut sent));
                record_outcome(&attempt, "success", Some(200), false);
            });
            let resp = Response::builder()
                .status(200)
                .header("x-junction-cache", "miss")
                .body(())
                .unwrap();
            record_response(&req, &resp);
        });
        assert_eq!(spans.len(), 2, "{spans:?}");
        let req = named(&spans, "request");
        let att = named(&spans, "upstream_attempt");
        assert_eq!(req.span_context.trace_id().to_string(), TRACE);
        assert_eq!(req.parent_span_id.to_string(), CALLER);
        assert!(req.parent_span_is_remote);
        assert_eq!(req.span_kind, SpanKind::Server);
        assert_eq!(req.span_context.trace_state().header(), "vendor=abc");
        assert_eq!(attr(req, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(attr(req, "url.path").as_deref(), Some("/products/1"));
        assert_eq!(attr(req, "http.route").as_deref(), Some("product"));
        assert_eq!(
            attr(req, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(attr(req, "junction.cache").as_deref(), Some("miss"));
        assert_eq!(att.span_context.trace_id().to_string(), TRACE);
        assert_eq!(att.parent_span_id, req.span_context.span_id());
        assert_eq!(att.span_kind, SpanKind::Client);
        assert_eq!(attr(att, "junction.upstream").as_deref(), Some("inv"));
        assert_eq!(attr(att, "junction.outcome").as_deref(), Some("success"));
        assert_eq!(
            sent["traceparent"],
            format!("00-{TRACE}-{}-01", att.span_context.span_id()).as_str()
        );
        assert_eq!(
            sent["tracestate"], "vendor=abc",
            "tracestate is not rewritten"
        );
    }

    #[test]
    fn without_a_valid_caller_context_a_new_trace_starts() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", "garbage".parse().unwrap());
        let spans = traced(|| {
            new_request_span(&Method::POST, "/", &h);
        });
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
        assert!(spans[0].span_context.is_valid());
    }

    #[test]
    fn an_unsampled_caller_stays_unsampled() {
        let mut sent = HeaderMap::new();
        let spans = traced(|| {
            let req = new_request_span(&Method::GET, "/", &caller_headers("00"));
            req.in_scope(|| {
                let attempt = new_attempt_span("inv", &Method::GET);
                attempt.in_scope(|| inject(&Span::current(), &mut sent));
            });
        });
        assert!(spans.is_empty(), "{spans:?}");
        let tp = sent["traceparent"].to_str().unwrap();
        assert!(tp.starts_with(&format!("00-{TRACE}-")), "{tp}");
        assert!(tp.ends_with("-00"), "{tp}");
        assert!(!tp.contains(CALLER), "{tp}");
    }

    #[test]
    fn delivery_continues_the_stored_trace() {
        let stored = vec![
            ("traceparent".to_string(), format!("00-{TRACE}-{CALLER}-01")),
            ("tracestate".to_string(), "k=v".to_string()),
        ];
        let spans = traced(|| {
            let d = new_delivery_span("sub-a", "orders", "m-1", 3, &stored);
            d.in_scope(|| {
                let attempt = new_attempt_span("a", &Method::POST);
                record_outcome(&attempt, "failure", Some(503), true);
            });
            record_outcome(&d, "status 503", Some(503), true);
        });
        let d = named(&spans, "delivery");
        let att = named(&spans, "upstream_attempt");
        assert_eq!(d.span_context.trace_id().to_string(), TRACE);
        assert_eq!(d.parent_span_id.to_string(), CALLER);
        assert_eq!(d.span_kind, SpanKind::Producer);
        assert_eq!(d.span_context.trace_state().header(), "k=v");
        assert_eq!(attr(d, "junction.subscriber").as_deref(), Some("sub-a"));
        assert_eq!(attr(d, "junction.topic").as_deref(), Some("orders"));
        assert_eq!(attr(d, "junction.message_id").as_deref(), Some("m-1"));
        assert_eq!(attr(d, "junction.attempt").as_deref(), Some("3"));
        assert_eq!(attr(d, "junction.outcome").as_deref(), Some("status 503"));
        assert!(matches!(d.status, Status::Error { .. }), "{:?}", d.status);
        assert_eq!(att.parent_span_id, d.span_context.span_id());
        assert_eq!(
            attr(att, "http.response.status_code").as_deref(),
            Some("503")
        );
    }

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
