//! Junction's live telemetry, independent of the gateway crate.
//!
//! Why a crate of its own: the numbers an operator watches (rates, error
//! ratios, latency quantiles, the dependency graph), the dashboard page that
//! draws them and the `junction top` terminal view are one concern, testable
//! without a running gateway. The gateway feeds [`stats::StatsRegistry`] and
//! [`graph::DependencyGraph`] from its data plane and serves the admin JSON
//! documented in [`dashboard`].
//!
//! - [`stats`]: rolling-window rate, error ratio and p50/p95/p99 per series.
//! - [`graph`]: the caller → route → upstream/topic → subscriber graph, with
//!   per-edge numbers, the slowest path and Graphviz DOT.
//! - [`dashboard`]: the self-contained web page served at `GET /` on the admin
//!   port, and the admin API shapes it reads.
//! - [`top`]: a refreshing terminal table of `/admin/overview`.

pub mod dashboard;
pub mod graph;
pub mod histogram;
pub mod history;
pub mod stats;
pub mod top;

pub use graph::{DependencyGraph, EdgeKey, EdgeKind, GraphSnapshot, NodeKind};
pub use histogram::Histogram;
pub use stats::{RouteStats, StatsRegistry, StatsSnapshot};
