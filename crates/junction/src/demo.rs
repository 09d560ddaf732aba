//! `junction demo`: the seed's case study on one machine.
//!
//! Starts the simulated ERP services, drives the order-sync scenario directly
//! (the "before": four synchronous calls per order) and then through an
//! in-process Junction on embedded defaults (the "after": cached,
//! breaker-protected lookups and a durable async fan-out), prints the
//! before/after table and writes the plot. The dashboard stays up until Ctrl-C
//! unless `--duration` was given.

use anyhow::Context;
use junction_gateway::app::{self, Listeners, Running};
use junction_gateway::config;
use junction_sim::demo::{run_demo_with_cluster, DemoOptions, GatewayHandle};
use junction_sim::scenario::Scenario;
use junction_sim::services::SimCluster;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What the user asked of the demo.
pub struct DemoArgs {
    /// Built-in scenario name or a scenario file.
    pub scenario: String,
    /// Length of each run; when set, the demo exits after the report.
    pub duration: Option<Duration>,
    /// Order syncs per second.
    pub rate: Option<f64>,
    /// Multiplies every latency and window of the scenario (0.1 = ten times faster).
    pub time_scale: Option<f64>,
    /// Where the report, plot, config and queue go.
    pub out_dir: PathBuf,
    /// Show progress bars.
    pub progress: bool,
}

/// Runs the demo; returns when done (or on Ctrl-C while the dashboard is up).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut scenario = Scenario::load(&args.scenario)
        .with_context(|| format!("loading scenario {}", args.scenario))?;
    if let Some(scale) = args.time_scale {
        scenario = scenario.with_time_scale(scale);
    }
    let mut opts = DemoOptions::from_scenario(scenario, &args.out_dir);
    if let Some(d) = args.duration {
        opts.duration = d;
    }
    if let Some(r) = args.rate {
        opts.rate = r;
    }
    opts.progress = args.progress;
    let cluster = SimCluster::start(&opts.scenario).await?;
    let running: Arc<Mutex<Option<Running>>> = Arc::default();
    let slot = running.clone();
    let start = move |yaml: String| async move {
        let cfg = config::load_str(&yaml, "junction-demo.yaml").map_err(|errs| {
            anyhow::anyhow!(
                "generated config is invalid:\n{}",
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
        let listeners = Listeners {
            data: TcpListener::bind(cfg.listen).await?,
            admin: TcpListener::bind(cfg.admin.listen).await?,
        };
        let r = app::spawn(cfg, listeners)?;
        let handle = GatewayHandle {
            data: r.data,
            admin: r.admin,
        };
        *slot.lock() = Some(r);
        Ok(handle)
    };
    let report = run_demo_with_cluster(&opts, &cluster, start).await;
    let gateway = running.lock().take();
    report?;
    let Some(gw) = gateway else { return Ok(()) };
    if args.duration.is_none() {
        println!();
        println!(
            "Dashboard: http://{}/   (metrics: http://{}/metrics)",
            gw.admin, gw.admin
        );
        println!("Junction and the simulated services stay up; press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    gw.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), gw.task).await;
    Ok(())
}
