//! junction-sim: the seed's ERP world, simulated, and the before/after demo.
//!
//! The crate exists so Junction can prove its case on one machine. It starts
//! the services of the case study (order, inventory, supplier, fulfillment,
//! analytics, payment, notification) as real HTTP servers with realistic
//! latency tails, failures and outages ([`scenario`], [`dist`], [`services`]),
//! drives order syncs at a fixed rate directly and through a Junction gateway
//! ([`driver`]), checks that every accepted order was delivered ([`delivery`]), writes the gateway's config for the "after" path
//! ([`config`]), and reports the measured difference as a table, JSON and an
//! SVG plot ([`report`], [`plot`]). [`demo::run_demo`] wires it all together;
//! the gateway is started by a callback, so this crate does not depend on it.

pub mod config;
pub mod delivery;
pub mod demo;
pub mod dist;
pub mod driver;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod services;

pub use config::gateway_config_yaml;
pub use demo::{run_demo, run_demo_with_cluster, DemoOptions, GatewayHandle};
pub use driver::{DriverOptions, RunResult};
pub use report::DemoReport;
pub use scenario::{Scenario, ServiceKind};
pub use services::{ClusterStats, ServiceStats, SimCluster};
