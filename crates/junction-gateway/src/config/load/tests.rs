use super::*;

const GOOD: &str = r#"
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090 }
upstreams:
  inventory:
    url: http://127.0.0.1:7001
    timeout: 3s
    retry: { attempts: 3, backoff: 100ms, max_backoff: 2s }
    breaker: { error_threshold_percentage: 50, min_requests: 20, window: 10s, reset_timeout: 10s }
routes:
  - name: product
    match: { method: GET, path: /products/{id} }
    upstream: inventory
    cache: { ttl: 300s, tags: ["product:{id}"] }
  - name: order-created
    match: { method: POST, path: /orders }
    async:
      topic: orders
      subscribers:
        - { name: fulfillment, upstream: inventory, path: /orders }
"#;

#[test]
fn good_config_loads() {
    let c = load_str(GOOD, "good.yaml").unwrap();
    assert_eq!(c.routes.len(), 2);
    assert_eq!(
        c.upstreams["inventory"].timeout.0,
        std::time::Duration::from_secs(3)
    );
    assert_eq!(c.limits.max_body.0, 10 << 20);
}

#[test]
fn every_error_is_reported_with_file_line_col_and_key() {
    let bad = r#"
listen: 127.0.0.1:8080
bogus: 1
upstreams:
  inventory:
    url: http://127.0.0.1:7001
    timeout: fast
  other:
    url: ftp://x
    colour: red
routes:
  - name: product
    match: { method: GET, path: /products/{id} }
    upstream: nowhere
  - name: product
    match: { method: FETCH, path: /x }
    upstream: inventory
"#;
    let errs = load_str(bad, "bad.yaml").unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = text.join("\n");
    assert!(
        all.contains("bad.yaml:3:1: bogus: unknown field `bogus`"),
        "{all}"
    );
    assert!(
        all.contains("bad.yaml:7:5: upstreams.inventory.timeout: invalid duration"),
        "{all}"
    );
    assert!(
        all.contains("bad.yaml:10:5: upstreams.other.colour: unknown field"),
        "{all}"
    );
    assert!(
        all.contains("bad.yaml:14:5: routes[0].upstream: unknown upstream \"nowhere\""),
        "{all}"
    );
    assert!(
        all.contains("bad.yaml:15:5: routes[1].name: route name \"product\" is used twice"),
        "{all}"
    );
    assert!(
        all.contains("routes[1].match.method: unknown method \"FETCH\""),
        "{all}"
    );
    // ftp:// is only reported when the upstream deserialized; `other` did not.
    assert_eq!(errs.len(), 6, "{all}");
}

#[test]
fn the_unmatched_route_name_is_reserved() {
    let bad = r#"
upstreams: { a: { url: "http://127.0.0.1:1" } }
routes:
  - { name: unmatched, match: { path: "/u" }, upstream: a }
"#;
    let errs = load_str(bad, "r.yaml").unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter().any(|e| e.starts_with("r.yaml:4:")
            && e.contains("routes[0].name: route name \"unmatched\" is reserved")),
        "{all:?}"
    );
}

#[test]
fn a_path_with_too_many_params_is_a_located_error() {
    let path: String = (0..30).map(|i| format!("/{{p{i}}}")).collect();
    let bad = format!(
        "upstreams: {{ a: {{ url: \"http://127.0.0.1:1\" }} }}\nroutes:\n  - {{ name: r, match: {{ path: \"{path}\" }}, upstream: a }}\n"
    );
    let errs = load_str(&bad, "p.yaml").unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter().any(|e| e.starts_with("p.yaml:3:")
            && e.contains("routes[0].match.path")
            && e.contains("30 path parameters")),
        "{all:?}"
    );
}

#[test]
fn syntax_errors_are_located() {
    let errs = load_str("routes: [\n  - a\n", "s.yaml").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].to_string().starts_with("s.yaml:"), "{}", errs[0]);
    assert!(errs[0].message.contains("YAML syntax error"));
}

#[test]
fn conflicting_routes_and_bad_cache_method() {
    let bad = r#"
upstreams: { a: { url: "http://127.0.0.1:1" } }
routes:
  - { name: r1, match: { method: GET, path: "/p/{id}" }, upstream: a }
  - { name: r2, match: { method: GET, path: "/p/{id}" }, upstream: a }
  - { name: r3, match: { method: POST, path: "/q" }, upstream: a, cache: { ttl: 1s } }
"#;
    let errs = load_str(bad, "c.yaml").unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter()
            .any(|e| e.contains("routes[1].match.path: invalid or conflicting path")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("routes[2].cache: only GET or HEAD")),
        "{all:?}"
    );
}

#[test]
fn idempotency_is_for_sync_routes_with_a_ttl() {
    let bad = r#"
upstreams: { a: { url: "http://127.0.0.1:1" } }
routes:
  - { name: pay, match: { method: POST, path: "/p" }, upstream: a, idempotency: { ttl: 0s } }
  - name: ev
    match: { method: POST, path: "/e" }
    idempotency: { ttl: 1h }
    async: { topic: t, subscribers: [{ name: s, upstream: a, path: /x }] }
"#;
    let errs = load_str(bad, "i.yaml").unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2, "{all:?}");
    assert!(all[0].starts_with("i.yaml:4:"), "{all:?}");
    assert!(
        all[0].contains("routes[0].idempotency.ttl: must be above zero"),
        "{all:?}"
    );
    assert!(all[1].starts_with("i.yaml:7:"), "{all:?}");
    assert!(
        all[1].contains("routes[1].idempotency: async routes"),
        "{all:?}"
    );
}

#[test]
fn http2_without_tls_is_for_http_upstreams() {
    let bad = "upstreams:\n  a: { url: \"https://example.com\", http2: true }\n";
    let errs = load_str(bad, "h.yaml").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].key, "upstreams.a.http2");
    assert!(errs[0].to_string().starts_with("h.yaml:2:"), "{}", errs[0]);
    assert!(load_str(
        "upstreams:\n  a: { url: \"http://127.0.0.1:1\", http2: true }\n",
        "h.yaml"
    )
    .is_ok());
}

#[test]
fn redis_backends_need_a_redis_url() {
    let bad = "queue: { backend: redis, url: \"http://x\" }\ncache: { backend: redis, url: \"127.0.0.1\" }\n";
    let errs = load_str(bad, "r.yaml").unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["queue.url", "cache.url"], "{errs:?}");
    assert!(errs[0].to_string().starts_with("r.yaml:1:"), "{}", errs[0]);
    let good = "queue: { backend: redis, url: \"redis://127.0.0.1:6379\", prefix: app, max_depth: 10, lease_ttl: 10s }\n";
    assert!(load_str(good, "r.yaml").is_ok());
    let short = "queue: { backend: redis, url: \"redis://x\", lease_ttl: 100ms }\n";
    let errs = load_str(short, "r.yaml").unwrap_err();
    assert_eq!(errs[0].key, "queue.lease_ttl", "{errs:?}");
}

#[test]
fn kafka_settings_are_checked_where_they_are_written() {
    let good = "queue: { backend: kafka, url: \"kafka://k1:9092,k2:9092\", prefix: erp, partitions: 12, replication_factor: 3, session_timeout: 30s, client: { security.protocol: SASL_SSL } }\n";
    assert!(load_str(good, "k.yaml").is_ok());
    let bad = "queue:\n  backend: kafka\n  url: \"127.0.0.1:9092\"\n  partitions: 0\n  replication_factor: 0\n  session_timeout: 1s\n";
    let errs = load_str(bad, "k.yaml").unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "queue.url",
            "queue.partitions",
            "queue.replication_factor",
            "queue.session_timeout"
        ],
        "{errs:?}"
    );
    assert!(errs[0].to_string().starts_with("k.yaml:3:"), "{}", errs[0]);
}

#[test]
fn nats_and_rabbitmq_settings_are_checked_where_they_are_written() {
    let good = "queue: { backend: nats, url: \"nats://127.0.0.1:4222\", ordering_partitions: 16, max_depth: 1000, on_full: dead_letter_oldest }\n";
    assert!(load_str(good, "n.yaml").is_ok());
    let good = "queue: { backend: rabbitmq, url: \"amqp://127.0.0.1\", ordering_partitions: 1 }\n";
    assert!(load_str(good, "q.yaml").is_ok());
    let bad = "queue:\n  backend: nats\n  url: \"nats://127.0.0.1:4222\"\n  ordering_partitions: 0\n  max_depth: 10\n";
    let errs = load_str(bad, "n.yaml").unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["queue.ordering_partitions", "queue.max_depth"],
        "{errs:?}"
    );
    assert!(errs[0].to_string().starts_with("n.yaml:4:"), "{}", errs[0]);
    assert!(errs[1].to_string().starts_with("n.yaml:5:"), "{}", errs[1]);
    assert!(
        errs[1].to_string().contains("dead_letter_oldest"),
        "{}",
        errs[1]
    );
    let bad = "queue: { backend: rabbitmq, url: \"amqp://127.0.0.1\", ordering_partitions: 300 }\n";
    let errs = load_str(bad, "q.yaml").unwrap_err();
    assert_eq!(errs[0].key, "queue.ordering_partitions", "{errs:?}");
}

#[test]
fn sqs_settings_are_checked_where_they_are_written() {
    let good = "queue: { backend: sqs, region: eu-west-1, prefix: erp, fifo: true, visibility_timeout: 45s, max_depth: 1000 }\n";
    assert!(load_str(good, "s.yaml").is_ok());
    let local = "queue: { backend: sqs, endpoint: \"http://127.0.0.1:4566\" }\n";
    assert!(
        load_str(local, "s.yaml").is_ok(),
        "region may come from the AWS chain"
    );
    let bad = "queue:\n  backend: sqs\n  endpoint: \"127.0.0.1:4566\"\n  prefix: \"erp.prod\"\n  visibility_timeout: 500ms\n";
    let errs = load_str(bad, "s.yaml").unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["queue.endpoint", "queue.prefix", "queue.visibility_timeout"],
        "{errs:?}"
    );
    assert!(errs[0].to_string().starts_with("s.yaml:3:"), "{}", errs[0]);
    assert!(errs[2].to_string().starts_with("s.yaml:5:"), "{}", errs[2]);
}

#[test]
fn otlp_endpoint_must_be_a_url() {
    let errs = load_str("telemetry: { otlp_endpoint: \"not a url\" }\n", "o.yaml").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].to_string().starts_with("o.yaml:1:"), "{}", errs[0]);
    assert_eq!(errs[0].key, "telemetry.otlp_endpoint");
    assert!(load_str(
        "telemetry: { otlp_endpoint: \"http://127.0.0.1:4318\" }\n",
        "o.yaml"
    )
    .is_ok());
}

#[test]
fn adaptive_concurrency_and_peek_bounds_are_located_errors() {
    let bad = r#"
admin: { payload_peek: { max_bytes: 0 } }
limits: { max_body: 1MiB, buffer_budget: 512KiB }
upstreams:
  a:
    url: "http://127.0.0.1:1"
    max_concurrency: 10
    adaptive_concurrency: { min: 20, initial: 1, tolerance: 0.5 }
"#;
    let errs = load_str(bad, "a.yaml").unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 5, "{all:?}");
    assert!(
        all[0].starts_with("a.yaml:2:") && all[0].contains("admin.payload_peek.max_bytes"),
        "{all:?}"
    );
    assert!(
        all[1].starts_with("a.yaml:3:") && all[1].contains("limits.buffer_budget"),
        "{all:?}"
    );
    for (e, key) in all[2..].iter().zip(["min", "initial", "tolerance"]) {
        assert!(e.starts_with("a.yaml:8:"), "{e}");
        assert!(
            e.contains(&format!("upstreams.a.adaptive_concurrency.{key}")),
            "{e}"
        );
    }
    // The default start (20) above a smaller max_concurrency starts at the max.
    let good = "upstreams: { a: { url: \"http://127.0.0.1:1\", max_concurrency: 8, adaptive_concurrency: {} } }\n";
    let cfg = load_str(good, "g.yaml").unwrap();
    let a = cfg.upstreams["a"].adaptive_concurrency.as_ref().unwrap();
    assert_eq!((a.min, a.initial, a.tolerance), (4, 20, 1.5));
}
