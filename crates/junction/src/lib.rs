//! Junction: a resilient integration gateway.
//!
//! The crate is organised by concern: [`config`] (the YAML contract), [`proxy`]
//! (the data plane), [`telemetry`] (metrics, traces), [`admin`] (the admin API),
//! [`server`] (listeners and shutdown) and [`app`] (wiring it all together).

pub mod admin;
pub mod app;
pub mod body;
pub mod config;
pub mod demo;
pub mod pipeline;
pub mod problem;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod telemetry;
