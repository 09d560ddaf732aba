//! The dependency graph: who calls whom through Junction, how often, how slow, how flaky.
//!
//! Why: the first thing an operator of a tangle of integrations needs is the
//! map — which caller depends on which route, which upstream or subscriber sits
//! behind it, and which chain is the slow one. The graph is built from live
//! traffic only: the gateway records one edge per hop and this module keeps a
//! [`RouteStats`] per edge.
//!
//! What it promises:
//! - Recording an edge that already exists takes two map lookups with borrowed
//!   keys and one short lock: no allocation ([`DependencyGraph::record_ref`]).
//! - Memory is bounded: past `max_edges` distinct edges, new edges are folded
//!   into the caller node [`OTHER_CALLER`]; past twice that, samples are dropped
//!   and counted in [`GraphSnapshot::dropped_samples`] (caller ids come from a
//!   request header, so they must not grow the graph without limit).
//! - Node ids are free strings. The recommended ids are namespaced with
//!   [`node_id`] (`"caller:web"`, `"route:product"`, `"topic:orders"`,
//!   `"upstream:inventory"`, `"subscriber:fulfillment"`) so a route and an
//!   upstream may share a name; the prefix gives the node's kind and is dropped
//!   from its label. A kind can also be set with [`DependencyGraph::set_node_kind`]
//!   (that also shows configured nodes before any traffic), else it is inferred
//!   from the shape: no incoming edge → caller, outgoing async → topic, leaf
//!   reached async → subscriber, other leaf → upstream, else route.
//!
//! Recording convention (the gateway decides the caller id): a sync request
//! records caller → route and route → upstream (kind `Sync`); an async event
//! records caller → route and route → topic, then one topic → subscriber
//! edge (kind `Async`) per delivery attempt outcome.

use crate::stats::{RouteStats, DEFAULT_WINDOW};
use parking_lot::RwLock;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[path = "graph_render.rs"]
mod render;

/// Default cap on distinct edges.
pub const DEFAULT_MAX_EDGES: usize = 512;
/// The caller node that absorbs new edges once the graph is full.
pub const OTHER_CALLER: &str = "caller:(other)";

/// Whether a hop blocks its caller (`sync`) or is delivered later (`async`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// The caller waits for the answer.
    Sync,
    /// Queued and delivered later.
    Async,
}

/// What a node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A system calling Junction.
    Caller,
    /// A Junction route.
    Route,
    /// A topic of the queue.
    Topic,
    /// An upstream service.
    Upstream,
    /// A subscriber of a topic.
    Subscriber,
}

impl NodeKind {
    /// Every kind, in layer order.
    pub const ALL: [NodeKind; 5] = [
        NodeKind::Caller,
        NodeKind::Route,
        NodeKind::Topic,
        NodeKind::Upstream,
        NodeKind::Subscriber,
    ];

    /// The lowercase name, also the id prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Caller => "caller",
            NodeKind::Route => "route",
            NodeKind::Topic => "topic",
            NodeKind::Upstream => "upstream",
            NodeKind::Subscriber => "subscriber",
        }
    }

    /// The kind named by an id prefix (`"route:x"` → `Route`), and the rest of the id.
    pub fn from_prefix(id: &str) -> Option<(NodeKind, &str)> {
        let (prefix, rest) = id.split_once(':')?;
        NodeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == prefix)
            .map(|k| (k, rest))
    }
}

/// The recommended node id: `"<kind>:<name>"`.
pub fn node_id(kind: NodeKind, name: &str) -> String {
    format!("{}:{name}", kind.as_str())
}

/// What one call along an edge was like.
#[derive(Clone, Copy, Debug)]
pub struct CallSample {
    /// How long it took.
    pub latency: Duration,
    /// Whether it failed.
    pub error: bool,
    /// Whether it needed a retry.
    pub retried: bool,
}

/// One directed hop.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EdgeKey {
    /// Calling node id.
    pub from: String,
    /// Called node id.
    pub to: String,
    /// Sync or async.
    pub kind: EdgeKind,
}

impl EdgeKey {
    /// An edge `from` → `to`.
    pub fn new(from: impl Into<String>, to: impl Into<String>, kind: EdgeKind) -> Self {
        EdgeKey {
            from: from.into(),
            to: to.into(),
            kind,
        }
    }
}

/// A node of the snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GraphNode {
    /// Node id, as recorded.
    pub id: String,
    /// What it stands for.
    pub kind: NodeKind,
    /// Display name (the id without its kind prefix).
    pub label: String,
}

/// An edge of the snapshot, with its live numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GraphEdge {
    /// Calling node id.
    pub from: String,
    /// Called node id.
    pub to: String,
    /// Sync or async.
    pub kind: EdgeKind,
    /// Calls per second over the window.
    pub rate_per_sec: f64,
    /// Median latency over the window, ms.
    pub p50_ms: f64,
    /// 95th percentile latency over the window, ms.
    pub p95_ms: f64,
    /// 99th percentile latency over the window, ms.
    pub p99_ms: f64,
    /// Failed / all calls over the window.
    pub error_ratio: f64,
    /// Retried / all calls over the window.
    pub retry_ratio: f64,
    /// Calls since start.
    pub calls: u64,
    /// Failed calls since start.
    pub errors: u64,
    /// Retried calls since start.
    pub retries: u64,
    /// True when the edge lies on [`GraphSnapshot::slowest_path`].
    pub on_slowest_path: bool,
}

/// The graph as served by `GET /admin/dependencies`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GraphSnapshot {
    /// Length of the rolling window behind rates and quantiles, seconds.
    pub window_s: u64,
    /// Every node, sorted by kind then id.
    pub nodes: Vec<GraphNode>,
    /// Every edge, sorted by from, to, kind.
    pub edges: Vec<GraphEdge>,
    /// Node ids from a caller to a leaf with the largest sum of edge p99s; empty without traffic.
    pub slowest_path: Vec<String>,
    /// That sum, ms.
    pub slowest_path_p99_ms: f64,
    /// Samples dropped because the graph was full.
    pub dropped_samples: u64,
}

/// Per-edge stats, indexed `from` → `to` → kind, so lookups borrow.
type EdgeMap = HashMap<String, HashMap<String, [Option<Arc<RouteStats>>; 2]>>;

#[derive(Default)]
struct Edges {
    map: EdgeMap,
    count: usize,
}

/// The live dependency graph; share it behind an `Arc`.
pub struct DependencyGraph {
    window: Duration,
    max_edges: usize,
    edges: RwLock<Edges>,
    kinds: RwLock<HashMap<String, NodeKind>>,
    dropped: AtomicU64,
}

// === impl DependencyGraph ===

impl Default for DependencyGraph {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DependencyGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DependencyGraph")
            .field("edges", &self.edges.read().count)
            .field("max_edges", &self.max_edges)
            .finish_non_exhaustive()
    }
}

fn slot(kind: EdgeKind) -> usize {
    match kind {
        EdgeKind::Sync => 0,
        EdgeKind::Async => 1,
    }
}

impl DependencyGraph {
    /// An empty graph: 30 s window, at most [`DEFAULT_MAX_EDGES`] edges.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_WINDOW, DEFAULT_MAX_EDGES)
    }

    /// An empty graph with its own window and edge cap.
    pub fn with_limits(window: Duration, max_edges: usize) -> Self {
        DependencyGraph {
            window,
            max_edges: max_edges.max(1),
            edges: RwLock::new(Edges::default()),
            kinds: RwLock::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Declares what node `id` stands for (overrides prefix and inference; shown even without traffic).
    pub fn set_node_kind(&self, id: &str, kind: NodeKind) {
        self.kinds.write().insert(id.to_owned(), kind);
    }

    /// Records one call over `edge`.
    pub fn record(&self, edge: EdgeKey, latency: Duration, error: bool, retried: bool) {
        self.record_ref(&edge.from, &edge.to, edge.kind, latency, error, retried);
    }

    /// Records one call `from` → `to`; allocates only the first time an edge is seen.
    pub fn record_ref(
        &self,
        from: &str,
        to: &str,
        kind: EdgeKind,
        latency: Duration,
        error: bool,
        retried: bool,
    ) {
        let call = CallSample {
            latency,
            error,
            retried,
        };
        self.record_ref_at(Instant::now(), from, to, kind, call);
    }

    /// [`record_ref`](Self::record_ref) with the clock given (tests).
    pub fn record_ref_at(
        &self,
        now: Instant,
        from: &str,
        to: &str,
        kind: EdgeKind,
        call: CallSample,
    ) {
        let CallSample {
            latency,
            error,
            retried,
        } = call;
        match self.edge_stats(from, to, kind) {
            Some(stats) => stats.record_at(now, latency, error, retried),
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The stats of the edge `from` → `to`, created when missing and the
    /// graph has room: a caller that records on a fixed edge for every call
    /// (a route and what it calls) holds it instead of looking it up each time.
    pub fn edge(&self, from: &str, to: &str, kind: EdgeKind) -> Option<Arc<RouteStats>> {
        self.edge_stats(from, to, kind)
    }

    /// Counts a call whose edge the full graph could not take (after
    /// [`edge`](Self::edge) gave none).
    pub fn note_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The stats of an edge, created when missing and the graph has room.
    fn edge_stats(&self, from: &str, to: &str, kind: EdgeKind) -> Option<Arc<RouteStats>> {
        let found = |edges: &Edges, from: &str| {
            edges
                .map
                .get(from)
                .and_then(|tos| tos.get(to))
                .and_then(|kinds| kinds[slot(kind)].clone())
        };
        if let Some(s) = found(&self.edges.read(), from) {
            return Some(s);
        }
        let mut edges = self.edges.write();
        if let Some(s) = found(&edges, from) {
            return Some(s);
        }
        let from = if edges.count < self.max_edges {
            from
        } else if let Some(s) = found(&edges, OTHER_CALLER) {
            return Some(s);
        } else if edges.count < self.max_edges.saturating_mul(2) {
            OTHER_CALLER
        } else {
            return None;
        };
        let stats = Arc::new(RouteStats::with_window(self.window, Instant::now()));
        let kinds = edges
            .map
            .entry(from.to_owned())
            .or_default()
            .entry(to.to_owned())
            .or_default();
        kinds[slot(kind)] = Some(Arc::clone(&stats));
        edges.count += 1;
        Some(stats)
    }

    /// The graph now.
    pub fn snapshot(&self) -> GraphSnapshot {
        self.snapshot_at(Instant::now())
    }

    /// The graph with rates and quantiles over the window ending at `now`.
    pub fn snapshot_at(&self, now: Instant) -> GraphSnapshot {
        let mut raw = Vec::new();
        {
            let edges = self.edges.read();
            for (from, tos) in &edges.map {
                for (to, kinds) in tos {
                    for (kind, stats) in [EdgeKind::Sync, EdgeKind::Async].iter().zip(kinds) {
                        if let Some(stats) = stats {
                            raw.push((from.clone(), to.clone(), *kind, Arc::clone(stats)));
                        }
                    }
                }
            }
        }
        let declared = self.kinds.read().clone();
        let edges: Vec<GraphEdge> = raw
            .into_iter()
            .map(|(from, to, kind, stats)| {
                let s = stats.snapshot(now);
                GraphEdge {
                    from,
                    to,
                    kind,
                    rate_per_sec: s.rps,
                    p50_ms: s.p50_ms,
                    p95_ms: s.p95_ms,
                    p99_ms: s.p99_ms,
                    error_ratio: s.error_ratio,
                    retry_ratio: s.retry_ratio,
                    calls: s.count_total,
                    errors: s.errors_total,
                    retries: s.retries_total,
                    on_slowest_path: false,
                }
            })
            .collect();
        let mut snap = render::assemble(edges, &declared);
        snap.window_s = self.window.as_secs();
        snap.dropped_samples = self.dropped.load(Ordering::Relaxed);
        snap
    }

    /// Graphviz DOT of the graph now (see [`GraphSnapshot::to_dot`]).
    pub fn to_dot(&self) -> String {
        self.snapshot().to_dot()
    }
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
