//! `junction analyze`: what to change in how systems talk, from what passed
//! through them.
//!
//! Junction sees every call, so it can tell a team which routes to cache,
//! which writes to make asynchronous, which payloads to trim, which repeated
//! requests need idempotency keys and which upstreams need a timeout or a
//! breaker — with the numbers behind each. The same analysis runs live in
//! the gateway (samples from the data plane, `GET /admin/recommendations`)
//! and offline over an access log (`junction analyze --access-log`).
//!
//! - [`sample`]: one observed exchange, whatever its source.
//! - [`recorder`]: folds samples into bounded per-endpoint and per-upstream
//!   numbers over a rolling window ([`aggregate`]), with a simulated cache
//!   per lifetime, duplicate detection and caller call chains ([`chains`]).
//! - [`recommend`]: the rules, ranked and explained, with config snippets.
//! - [`logs`]: access-log readers (Junction's JSON, nginx `combined` +
//!   `$request_time`, the Node.js "took Nms" line).
//! - [`emit`]: a starting `junction.yaml` from what was seen.
//! - [`table`]: the ranked table `junction analyze` prints.
//!
//! Written by hand because it is the product's own value: no crate analyses
//! HTTP traffic for these recommendations.

pub mod aggregate;
pub mod chains;
pub mod emit;
pub mod logs;
pub mod recommend;
pub mod recorder;
pub mod sample;
pub mod table;

pub use recommend::{report, Kind, Known, Recommendation, Report};
pub use recorder::{Recorder, Settings};
pub use sample::Sample;
