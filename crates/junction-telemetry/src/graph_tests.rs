use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Records `n` calls over an edge, `failures` of them failing, each taking `latency`.
fn calls(
    g: &DependencyGraph,
    t0: Instant,
    edge: (&str, &str, EdgeKind),
    n: u64,
    failures: u64,
    latency: Duration,
) {
    let (from, to, kind) = edge;
    for i in 0..n {
        let call = CallSample {
            latency,
            error: i < failures,
            retried: false,
        };
        g.record_ref_at(t0 + ms(i * 5), from, to, kind, call);
    }
}

fn edge<'a>(s: &'a GraphSnapshot, from: &str, to: &str) -> &'a GraphEdge {
    s.edges
        .iter()
        .find(|e| e.from == from && e.to == to)
        .unwrap_or_else(|| panic!("edge {from} -> {to} in {:?}", s.edges))
}

/// A small ERP: web calls product (sync, via inventory) and orders (async fan-out).
fn erp(t0: Instant) -> DependencyGraph {
    let g = DependencyGraph::new();
    let sync = EdgeKind::Sync;
    calls(
        &g,
        t0,
        ("caller:web", "route:product", sync),
        100,
        10,
        ms(40),
    );
    calls(
        &g,
        t0,
        ("route:product", "upstream:inventory", sync),
        100,
        10,
        ms(35),
    );
    calls(
        &g,
        t0,
        ("caller:web", "route:order-created", sync),
        50,
        0,
        ms(4),
    );
    calls(
        &g,
        t0,
        ("route:order-created", "topic:orders", sync),
        50,
        0,
        ms(3),
    );
    calls(
        &g,
        t0,
        ("topic:orders", "subscriber:fulfillment", EdgeKind::Async),
        50,
        5,
        ms(20),
    );
    calls(
        &g,
        t0,
        ("topic:orders", "subscriber:analytics", EdgeKind::Async),
        50,
        0,
        ms(90),
    );
    g
}

#[test]
fn error_ratio_of_an_edge() {
    let t0 = Instant::now();
    let g = erp(t0);
    let s = g.snapshot_at(t0 + Duration::from_secs(1));
    let e = edge(&s, "caller:web", "route:product");
    assert!((e.error_ratio - 0.1).abs() < 1e-12, "{}", e.error_ratio);
    assert_eq!((e.calls, e.errors), (100, 10));
    assert_eq!(e.kind, EdgeKind::Sync);
    assert!(
        (e.rate_per_sec - 100.0).abs() < 1e-9,
        "100 calls in the first second"
    );
    assert!((e.p99_ms - 40.0).abs() <= 40.0 / 8.0);
    assert_eq!(
        edge(&s, "topic:orders", "subscriber:fulfillment").kind,
        EdgeKind::Async
    );
}

#[test]
fn nodes_get_kinds_and_labels_from_prefixes() {
    let t0 = Instant::now();
    let s = erp(t0).snapshot_at(t0 + Duration::from_secs(1));
    let kinds: Vec<(&str, NodeKind, &str)> = s
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.kind, n.label.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("caller:web", NodeKind::Caller, "web"),
            ("route:order-created", NodeKind::Route, "order-created"),
            ("route:product", NodeKind::Route, "product"),
            ("topic:orders", NodeKind::Topic, "orders"),
            ("upstream:inventory", NodeKind::Upstream, "inventory"),
            ("subscriber:analytics", NodeKind::Subscriber, "analytics"),
            (
                "subscriber:fulfillment",
                NodeKind::Subscriber,
                "fulfillment"
            ),
        ]
    );
}

#[test]
fn kinds_of_plain_ids_are_inferred_or_declared() {
    let t0 = Instant::now();
    let g = DependencyGraph::new();
    calls(&g, t0, ("web", "product", EdgeKind::Sync), 1, 0, ms(1));
    calls(
        &g,
        t0,
        ("product", "inventory", EdgeKind::Sync),
        1,
        0,
        ms(1),
    );
    calls(&g, t0, ("web", "orders", EdgeKind::Sync), 1, 0, ms(1));
    calls(&g, t0, ("orders", "crm", EdgeKind::Async), 1, 0, ms(1));
    g.set_node_kind("erp", NodeKind::Upstream);
    g.set_node_kind("inventory", NodeKind::Upstream);
    let s = g.snapshot_at(t0);
    let kind = |id: &str| s.nodes.iter().find(|n| n.id == id).map(|n| n.kind);
    assert_eq!(kind("web"), Some(NodeKind::Caller));
    assert_eq!(kind("product"), Some(NodeKind::Route));
    assert_eq!(kind("inventory"), Some(NodeKind::Upstream));
    assert_eq!(kind("orders"), Some(NodeKind::Topic));
    assert_eq!(kind("crm"), Some(NodeKind::Subscriber));
    assert_eq!(
        kind("erp"),
        Some(NodeKind::Upstream),
        "declared nodes show without traffic"
    );
    assert_eq!(
        s.nodes
            .iter()
            .find(|n| n.id == "web")
            .map(|n| n.label.as_str()),
        Some("web")
    );
}

#[test]
fn slowest_path_follows_the_largest_p99_sum() {
    let t0 = Instant::now();
    let s = erp(t0).snapshot_at(t0 + Duration::from_secs(1));
    // web→product→inventory ≈ 40 + 35 = 75; web→order-created→orders→analytics ≈ 4 + 3 + 90 = 97.
    assert_eq!(
        s.slowest_path,
        [
            "caller:web",
            "route:order-created",
            "topic:orders",
            "subscriber:analytics"
        ]
    );
    assert!(
        (s.slowest_path_p99_ms - 97.0).abs() <= 97.0 / 8.0,
        "{}",
        s.slowest_path_p99_ms
    );
    let marked: Vec<(&str, &str)> = s
        .edges
        .iter()
        .filter(|e| e.on_slowest_path)
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    assert_eq!(
        marked,
        [
            ("caller:web", "route:order-created"),
            ("route:order-created", "topic:orders"),
            ("topic:orders", "subscriber:analytics"),
        ]
    );
}

#[test]
fn no_traffic_in_the_window_means_no_slowest_path() {
    let t0 = Instant::now();
    let s = erp(t0).snapshot_at(t0 + Duration::from_secs(120));
    assert!(s.slowest_path.is_empty());
    assert!(s
        .edges
        .iter()
        .all(|e| !e.on_slowest_path && e.rate_per_sec == 0.0));
    assert_eq!(
        edge(&s, "caller:web", "route:product").calls,
        100,
        "totals stay"
    );
}

#[test]
fn cycles_do_not_hang_the_path_search() {
    let t0 = Instant::now();
    let g = DependencyGraph::new();
    calls(
        &g,
        t0,
        ("caller:a", "route:b", EdgeKind::Sync),
        3,
        0,
        ms(10),
    );
    calls(&g, t0, ("route:b", "route:c", EdgeKind::Sync), 3, 0, ms(10));
    calls(&g, t0, ("route:c", "route:b", EdgeKind::Sync), 3, 0, ms(10));
    calls(&g, t0, ("route:c", "route:c", EdgeKind::Sync), 3, 0, ms(10));
    let s = g.snapshot_at(t0);
    assert_eq!(s.slowest_path, ["caller:a", "route:b", "route:c"]);
}

#[test]
fn a_full_graph_folds_new_callers_then_drops() {
    let t0 = Instant::now();
    let g = DependencyGraph::with_limits(DEFAULT_WINDOW, 2);
    for caller in ["caller:a", "caller:b", "caller:c", "caller:d"] {
        calls(&g, t0, (caller, "route:r", EdgeKind::Sync), 2, 0, ms(1));
    }
    // Two edges fit; c and d share the overflow caller's edge (the third).
    calls(&g, t0, ("caller:e", "route:s", EdgeKind::Sync), 1, 0, ms(1));
    calls(&g, t0, ("caller:f", "route:t", EdgeKind::Sync), 1, 0, ms(1));
    let s = g.snapshot_at(t0);
    let froms: Vec<(&str, &str, u64)> = s
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str(), e.calls))
        .collect();
    assert_eq!(
        froms,
        [
            ("caller:(other)", "route:r", 4),
            ("caller:(other)", "route:s", 1),
            ("caller:a", "route:r", 2),
            ("caller:b", "route:r", 2),
        ]
    );
    assert_eq!(
        s.dropped_samples, 1,
        "past twice the cap, samples are dropped"
    );
}

#[test]
fn dot_draws_every_edge_with_its_style() {
    let t0 = Instant::now();
    let dot = erp(t0).snapshot_at(t0 + Duration::from_secs(1)).to_dot();
    assert!(dot.starts_with("digraph junction {"));
    assert!(dot.contains("rankdir=LR"));
    let line = |from: &str, to: &str| {
        dot.lines()
            .find(|l| l.contains(&format!("\"{from}\" -> \"{to}\"")))
            .unwrap_or_else(|| panic!("edge {from} -> {to} in:\n{dot}"))
            .to_owned()
    };
    let product = line("caller:web", "route:product");
    assert!(
        product.contains("style=solid")
            && product.contains("10.0% err")
            && product.contains("100.0 rps")
    );
    assert!(!product.contains("#d93025"), "not on the slowest path");
    let delivery = line("topic:orders", "subscriber:analytics");
    assert!(
        delivery.contains("style=dashed")
            && delivery.contains("#d93025")
            && delivery.contains("penwidth")
    );
    assert_eq!(dot.matches(" -> ").count(), 6);
    assert!(dot.contains("\"upstream:inventory\" [label=\"inventory\\nupstream\""));
}

#[test]
fn dot_escapes_quotes() {
    let g = DependencyGraph::new();
    g.record(
        EdgeKey::new("caller:say \"hi\"", "route:r", EdgeKind::Sync),
        ms(1),
        false,
        false,
    );
    assert!(g
        .to_dot()
        .contains("\"caller:say \\\"hi\\\"\" -> \"route:r\""));
}

#[test]
fn snapshot_serializes_to_the_documented_shape() {
    let t0 = Instant::now();
    let g = erp(t0);
    g.record_ref_at(
        t0,
        "caller:web",
        "route:product",
        EdgeKind::Sync,
        CallSample {
            latency: ms(1),
            error: false,
            retried: true,
        },
    );
    let v = serde_json::to_value(g.snapshot_at(t0 + Duration::from_secs(1))).expect("serialize");
    assert_eq!(
        v["nodes"][0],
        serde_json::json!({"id": "caller:web", "kind": "caller", "label": "web"})
    );
    let e = &v["edges"][0];
    for key in [
        "from",
        "to",
        "kind",
        "rate_per_sec",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "error_ratio",
        "retry_ratio",
        "calls",
        "errors",
        "retries",
        "on_slowest_path",
    ] {
        assert!(e.get(key).is_some(), "edge has {key}: {e}");
    }
    assert_eq!(v["window_s"], 30);
    assert!(v["slowest_path"].is_array());
    let product = v["edges"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["to"] == "route:product"));
    assert_eq!(
        product.map(|e| e["retries"].clone()),
        Some(serde_json::json!(1))
    );
    assert_eq!(node_id(NodeKind::Subscriber, "crm"), "subscriber:crm");
}
