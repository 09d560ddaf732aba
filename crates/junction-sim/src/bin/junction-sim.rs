//! `junction-sim`: run the simulated ERP world on its own.
//!
//! `serve` starts every service and prints their addresses (and, with
//! `--gateway-config`, writes a Junction config pointing at them) so the
//! gateway can be tried by hand; `direct` drives the "before" path and prints
//! its figures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use junction_sim::driver::{self, DriverOptions, Path};
use junction_sim::report::PathSummary;
use junction_sim::{gateway_config_yaml, Scenario, ServiceKind, SimCluster};

#[derive(Parser)]
#[command(
    name = "junction-sim",
    version,
    about = "The simulated ERP world of the Junction demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the services and keep them up until Ctrl-C (or --duration).
    Serve {
        #[command(flatten)]
        world: World,
        /// Stop after this long (e.g. 10m).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Write a Junction config for these services to FILE.
        #[arg(long, value_name = "FILE")]
        gateway_config: Option<PathBuf>,
        /// Data-plane address for that config.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin address for that config.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Queue directory for that config.
        #[arg(long, default_value = "./data/queue")]
        queue_dir: PathBuf,
    },
    /// Drive the "before" path (direct synchronous calls) and print its figures.
    Direct {
        #[command(flatten)]
        world: World,
        /// Run length (default: the scenario's).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Order syncs per second (default: the scenario's).
        #[arg(long)]
        rate: Option<f64>,
        /// Show a progress bar.
        #[arg(long)]
        progress: bool,
    },
}

#[derive(Args)]
struct World {
    /// A built-in scenario name or a scenario file.
    #[arg(long, default_value = "erp-peak")]
    scenario: String,
    /// Override the scenario's time scale (e.g. 0.1 for a 10× faster world).
    #[arg(long)]
    time_scale: Option<f64>,
}

impl World {
    fn load(&self) -> Result<Scenario> {
        let mut s = Scenario::load(&self.scenario)?;
        if let Some(t) = self.time_scale {
            s = s.with_time_scale(t);
            s.validate()?;
        }
        Ok(s)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve {
            world,
            duration,
            gateway_config,
            listen,
            admin,
            queue_dir,
        } => {
            let scenario = world.load()?;
            let cluster = SimCluster::start(&scenario).await?;
            for kind in ServiceKind::ALL {
                println!("{:<13} {}", kind.name(), cluster.url(kind));
            }
            if let Some(path) = gateway_config {
                let yaml = gateway_config_yaml(&cluster, &scenario, &queue_dir, listen, admin);
                std::fs::write(&path, yaml)?;
                println!("gateway config written to {}", path.display());
            }
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => tokio::signal::ctrl_c().await?,
            }
        }
        Command::Direct {
            world,
            duration,
            rate,
            progress,
        } => {
            let scenario = world.load()?;
            let cluster = SimCluster::start(&scenario).await?;
            let opts = DriverOptions {
                rate: rate.unwrap_or(scenario.workload.rate),
                duration: duration.unwrap_or(scenario.workload.duration),
                call_timeout: scenario.call_timeout(),
                progress,
            };
            let run = driver::run(&cluster, Path::Direct, &opts).await?;
            let s = PathSummary::from_run(&run);
            println!("transactions  {}", s.transactions);
            println!("average       {:.0} ms", s.avg_ms);
            println!("p50           {:.0} ms", s.p50_ms);
            println!("p99           {:.0} ms", s.p99_ms);
            println!("max           {:.0} ms", s.max_ms);
            println!("failed        {} ({:.1}%)", s.failed, s.failed_pct);
            println!("bytes/order   {:.0}", s.caller_bytes_per_tx());
        }
    }
    Ok(())
}
