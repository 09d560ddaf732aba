//! The `analyze` section: observe mode, the recording behind
//! `GET /admin/recommendations` (see the `junction-analyze` crate).

use super::located::{pos_of, Errors};
use super::yaml::Node;
use super::Dur;
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// Recording traffic for recommendations (cache, async, trimming,
/// idempotency, timeouts, breakers). Off by default: it hashes bodies and
/// keeps per-key tables, a cost a gateway only pays when asked.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeConfig {
    /// Record every request's numbers, hashes of request and response
    /// bodies, caller and trace.
    #[serde(default)]
    pub enabled: bool,
    /// The rolling window recommendations are computed over.
    #[serde(default = "default_window")]
    pub window: Dur,
    /// Keys (URLs, request fingerprints) tracked at once: bounds memory.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// One JSON response in this many has its top-level fields measured
    /// (which fields are large); 0 never.
    #[serde(default = "default_sample_every")]
    pub sample_every: u32,
}

impl Default for AnalyzeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            window: default_window(),
            max_keys: default_max_keys(),
            sample_every: default_sample_every(),
        }
    }
}

fn default_window() -> Dur {
    Dur(Duration::from_secs(600))
}

fn default_max_keys() -> usize {
    50_000
}

fn default_sample_every() -> u32 {
    100
}

/// Value ranges of the section.
pub(super) fn check(root: &Node, a: &AnalyzeConfig, errs: &mut Errors) {
    if a.window.0 < Duration::from_secs(10) {
        errs.push(
            pos_of(root, &["analyze", "window"]),
            "analyze.window",
            "must be at least 10s".into(),
        );
    }
    // The key table is swept whole when full: a bound keeps that short.
    if !(100..=1_000_000).contains(&a.max_keys) {
        errs.push(
            pos_of(root, &["analyze", "max_keys"]),
            "analyze.max_keys",
            "must be between 100 and 1000000".into(),
        );
    }
}
