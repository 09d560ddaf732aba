//! OpenTelemetry export of the real `junction` binary to a collector stand-in:
//! an HTTP server decoding OTLP/HTTP protobuf `POST /v1/traces`. The trace
//! pipeline is process-global, so each test runs Junction as a child process.

use super::client;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use junction_testkit::FakeUpstream;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One span as the collector received it (ids in lowercase hex).
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    kind: i32,
    trace: String,
    span: String,
    parent: String,
    attrs: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The collector stand-in: every export request and span it was sent.
#[derive(Clone, Default)]
struct Collector {
    exports: Arc<Mutex<u32>>,
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Collector {
    /// Serves `POST /v1/traces` on a fresh port; returns its base URL.
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn in_trace(&self, trace: &str) -> Vec<Got> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.trace == trace).cloned().collect()
    }

    /// Waits (bounded) until spans named `names` of `trace` arrived; returns the trace's spans.
    async fn wait_for(&self, trace: &str, names: &[&str], proc: &Proc) -> Vec<Got> {
        let t0 = Instant::now();
        loop {
            let got = self.in_trace(trace);
            if names.iter().all(|n| got.iter().any(|s| s.name == *n)) {
                return got;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "spans {names:?} of {trace} not exported in 15s; got {got:?}\n{}",
                proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(c): State<Collector>, body: Bytes) -> StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    *c.exports.lock().unwrap() += 1;
    let mut spans = c.spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .map(|r| attrs(&r.attributes))
            .and_then(|a| a.into_iter().find(|(k, _)| k == "service.name"))
            .map(|(_, v)| v)
            .unwrap_or_default();
        for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            spans.push(Got {
                service: service.clone(),
                name: s.name,
                kind: s.kind,
                trace: hex(&s.trace_id),
                span: hex(&s.span_id),
                parent: hex(&s.parent_span_id),
                attrs: attrs(&s.attributes),
            });
        }
    }
    StatusCode::OK
}

fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `junction serve` child process; killed and reaped on drop.
struct Proc {
    child: Child,
    log: PathBuf,
    data: String,
    admin: String,
    config: PathBuf,
    head: String,
}

impl Proc {
    /// Starts `junction serve` with `rest` of the config and `env`, waits for `/readyz`.
    async fn start(dir: &Path, rest: &str, env: &[(&str, &str)]) -> Proc {
        let (data, admin) = (free_addr(), free_addr());
        let head = format!(
            "listen: {data}\nadmin: {{ listen: {admin} }}\nqueue: {{ backend: embedded, path: {} }}\n",
            dir.join("q").display()
        );
        let config = dir.join("junction.yaml");
        std::fs::write(&config, format!("{head}{rest}")).unwrap();
        let log = dir.join("junction.log");
        let child = Command::new(env!("CARGO_BIN_EXE_junction"))
            .args(["serve", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn junction");
        let mut proc = Proc {
            child,
            log,
            data,
            admin: admin.clone(),
            config,
            head,
        };
        let t0 = Instant::now();
        loop {
            let ready = client()
                .get(format!("http://{admin}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return proc;
            }
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("junction exited at start-up: {status}\n{}", proc.stderr());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "junction not ready in 15s\n{}",
                proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// Rewrites the config after its ports and queue, and reloads it.
    async fn reload(&self, rest: &str) {
        std::fs::write(&self.config, format!("{}{rest}", self.head)).unwrap();
        let r = client()
            .post(format!("http://{}/admin/reload", self.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `routes` (config text) with OTLP export to `endpoint` turned on.
fn with_otlp(endpoint: &str, routes: &str) -> String {
    format!("telemetry: {{ otlp_endpoint: \"{endpoint}\" }}\n{routes}")
}

fn sync_route(upstream: &str) -> String {
    format!(
        "upstreams:\n  inv: {{ url: \"{upstream}\" }}\nroutes:\n  - name: product\n    match: {{ method: GET, path: /products/{{id}} }}\n    upstream: inv\n"
    )
}

/// Sends `GET /products/1` as a caller in trace `trace` (span `caller`, sampled).
async fn get_product(proc: &Proc, trace: &str, caller: &str) {
    let resp = client()
        .get(format!("http://{}/products/1", proc.data))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .header("tracestate", "vendor=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// `(trace id, span id)` of the `traceparent` an upstream received.
fn received(up: &FakeUpstream, i: usize) -> (String, String) {
    let seen = up.seen();
    let tp = seen[i].headers["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    (parts[1].to_string(), parts[2].to_string())
}

const BATCH_FAST: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

#[tokio::test]
async fn sync_request_and_attempt_spans_continue_the_callers_trace() {
    let (trace, caller) = ("5af7183fb1d4cf5f0f1a2b3c4d5e6f70", "1122334455667788");
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rest = with_otlp(&endpoint, &sync_route(&up.url()));
    let proc = Proc::start(dir.path(), &rest, &[BATCH_FAST]).await;
    get_product(&proc, trace, caller).await;

    let (up_trace, up_span) = received(&up, 0);
    assert_eq!(up_trace, trace, "the upstream continues the caller's trace");
    assert_eq!(up.seen()[0].headers["tracestate"], "vendor=abc");

    let got = collector
        .wait_for(trace, &["request", "upstream_attempt"], &proc)
        .await;
    let req = got.iter().find(|s| s.name == "request").unwrap();
    let att = got.iter().find(|s| s.name == "upstream_attempt").unwrap();
    assert_eq!(req.service, "junction");
    assert_eq!(
        req.parent, caller,
        "the request span's parent is the caller"
    );
    assert_eq!(req.kind, SpanKind::Server as i32);
    assert_eq!(req.attr("http.request.method"), Some("GET"));
    assert_eq!(req.attr("url.path"), Some("/products/1"));
    assert_eq!(req.attr("http.route"), Some("product"));
    assert_eq!(req.attr("http.response.status_code"), Some("200"));
    assert_eq!(
        att.parent, req.span,
        "the attempt is a child of the request"
    );
    assert_eq!(att.kind, SpanKind::Client as i32);
    assert_eq!(att.attr("junction.upstream"), Some("inv"));
    assert_eq!(att.attr("junction.outcome"), Some("success"));
    assert_eq!(
        up_span, att.span,
        "the upstream's parent is the attempt span"
    );
}

#[tokio::test]
async fn deliveries_continue_the_stored_trace() {
    let (trace, caller) = ("6b08294fc2e5d0601f2a3b4c5d6e7f81", "2233445566778899");
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let sub = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rest = with_otlp(
        &endpoint,
        &format!(
            "upstreams:\n  hooks: {{ url: \"{}\" }}\nroutes:\n  - name: orders\n    match: {{ method: POST, path: /orders }}\n    async:\n      topic: orders\n      subscribers:\n        - {{ name: billing, upstream: hooks, path: /hook }}\n",
            sub.url()
        ),
    );
    let proc = Proc::start(dir.path(), &rest, &[BATCH_FAST]).await;
    let resp = client()
        .post(format!("http://{}/orders", proc.data))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .header("tracestate", "vendor=abc")
        .body(r#"{"order":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let got = collector
        .wait_for(trace, &["request", "delivery", "upstream_attempt"], &proc)
        .await;
    let (sub_trace, sub_span) = received(&sub, 0);
    assert_eq!(
        sub_trace, trace,
        "the subscriber continues the caller's trace"
    );
    assert_eq!(sub.seen()[0].headers["tracestate"], "vendor=abc");
    let req = got.iter().find(|s| s.name == "request").unwrap();
    let del = got.iter().find(|s| s.name == "delivery").unwrap();
    let att = got.iter().find(|s| s.name == "upstream_attempt").unwrap();
    assert_eq!(req.parent, caller);
    assert_eq!(req.attr("http.response.status_code"), Some("202"));
    assert_eq!(del.kind, SpanKind::Producer as i32);
    assert_eq!(del.attr("junction.subscriber"), Some("billing"));
    assert_eq!(del.attr("junction.topic"), Some("orders"));
    assert_eq!(del.attr("junction.attempt"), Some("1"));
    assert_eq!(del.attr("junction.outcome"), Some("status 200"));
    assert!(
        del.parent.len() == 16 && del.parent != "0000000000000000",
        "the delivery's parent is the stored traceparent: {del:?}"
    );
    assert_eq!(
        att.parent, del.span,
        "the attempt is a child of the delivery"
    );
    assert_eq!(sub_span, att.span, "the subscriber's parent is the attempt");
}

#[tokio::test]
async fn buffered_spans_are_flushed_on_shutdown() {
    let (trace, caller) = ("7c193a50d3f6e1712a3b4c5d6e7f8092", "33445566778899aa");
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rest = with_otlp(&endpoint, &sync_route(&up.url()));
    // A batch delay far longer than the test: only the exit flush can send the spans.
    let mut proc = Proc::start(dir.path(), &rest, &[("OTEL_BSP_SCHEDULE_DELAY", "600000")]).await;
    get_product(&proc, trace, caller).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(collector.in_trace(trace).is_empty(), "exported before exit");

    let pid = proc.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM\n{}",
            proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}\n{}", proc.stderr());
    let got = collector.in_trace(trace);
    assert!(
        got.iter().any(|s| s.name == "request") && got.iter().any(|s| s.name == "upstream_attempt"),
        "spans lost at exit: {got:?}\n{}",
        proc.stderr()
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported() {
    let (trace, caller) = ("8d2a4b61e4a7f2823b4c5d6e7f8091a3", "445566778899aabb");
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The standard OTel variables alone do not turn export on.
    let env = [
        BATCH_FAST,
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_EXPORTER", "otlp"),
    ];
    let proc = Proc::start(dir.path(), &sync_route(&up.url()), &env).await;
    get_product(&proc, trace, caller).await;
    let (up_trace, up_span) = received(&up, 0);
    assert_eq!(up_trace, trace, "the trace id still travels");
    assert_ne!(up_span, caller, "each hop gets its own span id");
    assert_eq!(up.seen()[0].headers["tracestate"], "vendor=abc");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        *collector.exports.lock().unwrap(),
        0,
        "exported with no otlp_endpoint"
    );
}

#[tokio::test]
async fn a_reload_starts_and_stops_the_export() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = sync_route(&up.url());
    let proc = Proc::start(dir.path(), &routes, &[BATCH_FAST]).await;
    let before = "0a000000000000000000000000000001";
    get_product(&proc, before, "0a00000000000001").await;

    proc.reload(&with_otlp(&endpoint, &routes)).await;
    let during = "0b000000000000000000000000000002";
    get_product(&proc, during, "0b00000000000002").await;
    collector
        .wait_for(during, &["request", "upstream_attempt"], &proc)
        .await;

    proc.reload(&routes).await;
    let after = "0c000000000000000000000000000003";
    get_product(&proc, after, "0c00000000000003").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        collector.in_trace(before).is_empty(),
        "nothing before the export was on"
    );
    assert!(
        collector.in_trace(after).is_empty(),
        "nothing after it was turned off"
    );
}
