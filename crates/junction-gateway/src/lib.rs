//! Junction's gateway: a resilient integration gateway as a library. The
//! `junction` binary (crates/junction) assembles it with the ERP simulator
//! and the command line; nothing here knows the simulator.
//!
//! The crate is organised by concern: [`config`] (the YAML contract), [`proxy`]
//! (the data plane), [`telemetry`] (metrics, traces), [`admin`] (the admin API),
//! [`server`] (listeners and shutdown) and [`app`] (wiring it all together).

/// `VERSION (COMMIT)`: what `junction --version` prints and `junction_build_info` carries.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("JUNCTION_GIT_COMMIT"),
    ")"
);
/// The git commit the binary was built from.
pub const GIT_COMMIT: &str = env!("JUNCTION_GIT_COMMIT");

pub mod admin;
pub mod app;
pub mod body;
pub mod buffers;
pub mod config;
pub mod pipeline;
pub mod problem;
pub mod proxy;
pub mod rate;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod telemetry;
