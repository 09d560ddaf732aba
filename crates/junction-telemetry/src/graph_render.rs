//! Turning raw edges into a [`GraphSnapshot`]: node kinds, the slowest path, DOT.
//!
//! Kept apart from recording so the hot path's file stays small; everything
//! here runs on the read side only.

use super::{EdgeKind, GraphEdge, GraphNode, GraphSnapshot, NodeKind};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

/// Builds the snapshot: nodes with kinds and labels, sorted edges, slowest path marked.
pub(super) fn assemble(
    mut edges: Vec<GraphEdge>,
    declared: &HashMap<String, NodeKind>,
) -> GraphSnapshot {
    edges.sort_by(|a, b| (&a.from, &a.to, a.kind).cmp(&(&b.from, &b.to, b.kind)));
    let mut ids: BTreeSet<&str> = declared.keys().map(String::as_str).collect();
    let mut incoming: HashMap<&str, (bool, bool)> = HashMap::new();
    let mut outgoing: HashMap<&str, (bool, bool)> = HashMap::new();
    for e in &edges {
        ids.insert(&e.from);
        ids.insert(&e.to);
        let is_async = e.kind == EdgeKind::Async;
        let inc = incoming.entry(&e.to).or_default();
        inc.0 |= !is_async;
        inc.1 |= is_async;
        let out = outgoing.entry(&e.from).or_default();
        out.0 |= !is_async;
        out.1 |= is_async;
    }
    let mut nodes: Vec<GraphNode> = ids
        .iter()
        .map(|id| {
            let prefixed = NodeKind::from_prefix(id);
            let kind = declared
                .get(*id)
                .copied()
                .or(prefixed.map(|(k, _)| k))
                .unwrap_or_else(|| infer(incoming.get(id).copied(), outgoing.get(id).copied()));
            let label = prefixed.map_or(*id, |(_, rest)| rest).to_owned();
            GraphNode {
                id: (*id).to_owned(),
                kind,
                label,
            }
        })
        .collect();
    nodes.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));

    let (path, total) = slowest_path(&nodes, &edges);
    for pair in path.windows(2) {
        // Mark the edge the path took: the slowest of the parallel ones.
        let best = edges
            .iter_mut()
            .filter(|e| e.from == pair[0] && e.to == pair[1])
            .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        if let Some(e) = best {
            e.on_slowest_path = true;
        }
    }
    GraphSnapshot {
        window_s: 0,
        nodes,
        edges,
        slowest_path: path,
        slowest_path_p99_ms: total,
        dropped_samples: 0,
    }
}

/// The kind of an unprefixed, undeclared node, from its edges: `(sync, async)` flags.
fn infer(incoming: Option<(bool, bool)>, outgoing: Option<(bool, bool)>) -> NodeKind {
    match (incoming, outgoing) {
        (None, _) => NodeKind::Caller,
        (Some(_), Some((_, true))) => NodeKind::Topic,
        (Some((_, true)), None) => NodeKind::Subscriber,
        (Some(_), None) => NodeKind::Upstream,
        (Some(_), Some(_)) => NodeKind::Route,
    }
}

/// The path from a caller (or a node nobody calls) to a leaf with the largest
/// sum of edge p99s; cycles are cut where they close. Empty when that sum is 0.
fn slowest_path(nodes: &[GraphNode], edges: &[GraphEdge]) -> (Vec<String>, f64) {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); nodes.len()];
    let mut has_incoming = vec![false; nodes.len()];
    for e in edges {
        let (Some(&f), Some(&t)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) else {
            continue;
        };
        adj[f].push((t, e.p99_ms));
        has_incoming[t] = true;
    }
    let mut memo: Vec<Option<(f64, Option<usize>)>> = vec![None; nodes.len()];
    let mut on_stack = vec![false; nodes.len()];
    let mut best: Option<(f64, usize)> = None;
    for (i, n) in nodes.iter().enumerate() {
        if n.kind != NodeKind::Caller && has_incoming[i] {
            continue;
        }
        let (total, _) = longest(i, &adj, &mut memo, &mut on_stack);
        let better = match best {
            None => true,
            Some((b, _)) => total > b,
        };
        if better {
            best = Some((total, i));
        }
    }
    let Some((total, start)) = best.filter(|(t, _)| *t > 0.0) else {
        return (Vec::new(), 0.0);
    };
    let mut path = vec![nodes[start].id.clone()];
    let mut at = start;
    while let Some((_, Some(next))) = memo[at] {
        if path.len() > nodes.len() {
            break;
        }
        path.push(nodes[next].id.clone());
        at = next;
    }
    (path, total)
}

/// Largest p99 sum from `at` to a leaf, and the next node on that path.
fn longest(
    at: usize,
    adj: &[Vec<(usize, f64)>],
    memo: &mut [Option<(f64, Option<usize>)>],
    on_stack: &mut [bool],
) -> (f64, Option<usize>) {
    if let Some(m) = memo[at] {
        return m;
    }
    on_stack[at] = true;
    let mut best = (0.0, None);
    for &(to, w) in &adj[at] {
        if on_stack[to] {
            continue;
        }
        let (rest, _) = longest(to, adj, memo, on_stack);
        if best.1.is_none() || w + rest > best.0 {
            best = (w + rest, Some(to));
        }
    }
    on_stack[at] = false;
    memo[at] = Some(best);
    best
}

// === DOT ===

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn node_style(kind: NodeKind) -> (&'static str, &'static str) {
    match kind {
        NodeKind::Caller => ("ellipse", "#e8f0fe"),
        NodeKind::Route => ("box", "#eef2f7"),
        NodeKind::Topic => ("cds", "#f3e8fd"),
        NodeKind::Upstream => ("box3d", "#e6f4ea"),
        NodeKind::Subscriber => ("component", "#fef7e0"),
    }
}

impl GraphSnapshot {
    /// Graphviz DOT: left to right, sync edges solid, async dashed, the slowest
    /// path red and bold, edge labels with rate, p99 and error percentage.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph junction {\n  rankdir=LR;\n");
        out.push_str("  graph [fontname=\"Helvetica\", nodesep=0.4, ranksep=1.2];\n");
        out.push_str(
            "  node [fontname=\"Helvetica\", style=\"rounded,filled\", color=\"#5f6b7a\"];\n",
        );
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=10, color=\"#5f6b7a\"];\n");
        for n in &self.nodes {
            let (shape, fill) = node_style(n.kind);
            let on_path = self.slowest_path.iter().any(|p| p == &n.id);
            let _ = writeln!(
                out,
                "  {} [label={}, shape={shape}, fillcolor=\"{fill}\"{}];",
                quote(&n.id),
                quote(&format!("{}\n{}", n.label, n.kind.as_str())),
                if on_path {
                    ", color=\"#d93025\", penwidth=2"
                } else {
                    ""
                },
            );
        }
        for e in &self.edges {
            let label = format!(
                "{:.1} rps\np99 {:.1} ms\n{:.1}% err",
                e.rate_per_sec,
                e.p99_ms,
                e.error_ratio * 100.0
            );
            let style = match e.kind {
                EdgeKind::Sync => "solid",
                EdgeKind::Async => "dashed",
            };
            let _ = writeln!(
                out,
                "  {} -> {} [label={}, style={style}{}];",
                quote(&e.from),
                quote(&e.to),
                quote(&label),
                if e.on_slowest_path {
                    ", color=\"#d93025\", fontcolor=\"#d93025\", penwidth=2.5"
                } else {
                    ""
                },
            );
        }
        out.push_str("}\n");
        out
    }
}
