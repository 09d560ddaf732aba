//! Shared helpers: temp-dir brokers and attempt records.

use std::sync::Arc;

use junction_queue::conformance::{BrokerOptions, Harness};
use junction_queue::{AttemptRecord, EmbeddedBroker, EmbeddedConfig};
use tempfile::TempDir;

/// A fresh embedded broker in its own temp dir (the dir lives as long as the harness).
pub async fn embedded(opts: BrokerOptions) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = open(&dir, opts.max_depth).await;
    Harness::new(b, dir)
}

/// Opens the embedded broker stored in `dir`.
pub async fn open(dir: &TempDir, max_depth: Option<u64>) -> Arc<EmbeddedBroker> {
    let mut cfg = EmbeddedConfig::new(dir.path().join("queue"));
    cfg.max_depth = max_depth;
    EmbeddedBroker::open(cfg)
        .await
        .expect("open embedded broker")
}

/// An attempt record with the given outcome.
pub fn attempt(outcome: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: 0,
        at_ms: junction_queue::conformance::now_ms(),
        outcome: outcome.to_owned(),
        duration_ms: 1,
    }
}
