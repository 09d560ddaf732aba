//! The demo: the seed's case study, before and after, on one machine.
//!
//! [`run_demo`] starts the simulated ERP world, drives the order syncs the
//! "before" way (four synchronous calls), then asks the caller to start a
//! Junction gateway with the generated config, warms its cache, drives the
//! same load through it, waits until every accepted order reached
//! fulfillment and analytics, reads the dead-letter queue, prints the
//! before/after table and writes `demo-report.svg` and `demo-report.json`.
//! The gateway itself is the caller's: this module only needs its addresses.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::config::gateway_config_yaml;
use crate::delivery::wait_for_delivery;
use crate::driver::{self, DriverOptions, Path};
use crate::report::DemoReport;
use crate::scenario::Scenario;
use crate::services::SimCluster;

/// What the demo drives and where it writes.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Length of each run (direct, then Junction).
    pub duration: Duration,
    /// Order syncs started per second.
    pub rate: f64,
    /// The simulated world.
    pub scenario: Scenario,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Where the report, the config and the queue go.
    pub out_dir: PathBuf,
}

impl DemoOptions {
    /// Options with the scenario's default workload.
    pub fn from_scenario(scenario: Scenario, out_dir: impl Into<PathBuf>) -> DemoOptions {
        DemoOptions {
            duration: scenario.workload.duration,
            rate: scenario.workload.rate,
            scenario,
            progress: false,
            out_dir: out_dir.into(),
        }
    }
}

/// The addresses of a gateway started for the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayHandle {
    /// The data plane (`listen`).
    pub data: SocketAddr,
    /// The admin API (`admin.listen`).
    pub admin: SocketAddr,
}

/// Runs the whole demo with a cluster of its own (stopped when it returns).
pub async fn run_demo<F, Fut>(opts: DemoOptions, start_gateway: F) -> Result<DemoReport>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<GatewayHandle>>,
{
    let cluster = SimCluster::start(&opts.scenario).await?;
    run_demo_with_cluster(&opts, &cluster, start_gateway).await
}

/// Runs the demo against a cluster the caller keeps (e.g. to leave the
/// dashboard up with live upstreams after the report).
pub async fn run_demo_with_cluster<F, Fut>(
    opts: &DemoOptions,
    cluster: &SimCluster,
    start_gateway: F,
) -> Result<DemoReport>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<GatewayHandle>>,
{
    let scenario = &opts.scenario;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let dopts = DriverOptions {
        rate: opts.rate,
        duration: opts.duration,
        call_timeout: scenario.call_timeout(),
        progress: opts.progress,
    };
    let say = |msg: String| {
        if opts.progress {
            eprintln!("{msg}");
        }
        tracing::info!("{msg}");
    };

    say(format!(
        "before: {} order syncs/s for {:?}, four synchronous calls each",
        opts.rate, opts.duration
    ));
    let before = driver::run(cluster, Path::Direct, &dopts).await?;
    cluster.end_run();

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let queue_dir = opts.out_dir.join(format!("queue-{stamp}"));
    let yaml = gateway_config_yaml(cluster, scenario, &queue_dir, free_port()?, free_port()?);
    let config_path = opts.out_dir.join("junction-demo.yaml");
    std::fs::write(&config_path, &yaml)
        .with_context(|| format!("writing {}", config_path.display()))?;
    say(format!("starting Junction with {}", config_path.display()));
    let gw = start_gateway(yaml).await.context("starting the gateway")?;
    wait_listening(gw.data, Duration::from_secs(10)).await?;

    say("warming Junction's cache (not measured)".to_string());
    let warmup = driver::warm_up(cluster, gw.data, dopts.call_timeout, opts.progress).await?;
    say(format!(
        "after: the same load through Junction at {}",
        gw.data
    ));
    let after = driver::run(cluster, Path::Junction { gateway: gw.data }, &dopts).await?;
    let drain = opts.duration.max(Duration::from_secs(30));
    say(format!(
        "waiting up to {drain:?} for every accepted order to reach its subscribers"
    ));
    let delivery = wait_for_delivery(cluster, &after, drain, opts.progress).await;
    cluster.end_run();
    let dead_letters = fetch_dead_letters(gw.admin).await;

    let report = DemoReport::build(
        &scenario.name,
        &before,
        &after,
        Some(warmup),
        Some(delivery),
        dead_letters,
    );
    report.print_table();
    let svg = opts.out_dir.join("demo-report.svg");
    crate::plot::write_svg(&report, &svg)?;
    report.write_json(opts.out_dir.join("demo-report.json"))?;
    say(format!("plot written to {}", svg.display()));
    Ok(report)
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// Waits until something accepts TCP connections at `addr`.
async fn wait_listening(addr: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("the gateway is not listening at {addr} after {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Number of dead letters from `GET /admin/dlq`, or None if unavailable.
pub async fn fetch_dead_letters(admin: SocketAddr) -> Option<usize> {
    let client = driver::http_client().ok()?;
    let resp = client
        .get(format!("http://{admin}/admin/dlq"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    count_items(&resp.json::<Value>().await.ok()?)
}

/// Counts the items of a DLQ listing: an array, or an object holding one.
pub fn count_items(v: &Value) -> Option<usize> {
    match v {
        Value::Array(a) => Some(a.len()),
        Value::Object(m) => {
            for key in ["items", "messages", "entries", "dead_letters", "data"] {
                if let Some(Value::Array(a)) = m.get(key) {
                    return Some(a.len());
                }
            }
            for key in ["total", "count", "depth"] {
                if let Some(n) = m.get(key).and_then(Value::as_u64) {
                    return usize::try_from(n).ok();
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dlq_shapes_are_counted() {
        assert_eq!(count_items(&json!([1, 2, 3])), Some(3));
        assert_eq!(count_items(&json!({"items": [{"id": "a"}]})), Some(1));
        assert_eq!(count_items(&json!({"messages": []})), Some(0));
        assert_eq!(count_items(&json!({"total": 7, "next": null})), Some(7));
        assert_eq!(count_items(&json!({"unrelated": true})), None);
        assert_eq!(count_items(&json!("nope")), None);
    }

    #[tokio::test]
    async fn absent_admin_api_gives_none() {
        // A port nobody listens on.
        let addr = free_port().unwrap();
        assert_eq!(fetch_dead_letters(addr).await, None);
    }

    #[tokio::test]
    async fn a_gateway_that_fails_to_start_fails_the_demo() {
        let scenario = Scenario::builtin("erp-peak")
            .unwrap()
            .with_time_scale(0.002);
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DemoOptions::from_scenario(scenario, dir.path());
        opts.duration = Duration::from_millis(300);
        opts.rate = 20.0;
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(String::new()));
        let keep = seen.clone();
        let err = run_demo(opts, move |yaml| async move {
            *keep.lock() = yaml;
            bail!("no gateway in this test")
        })
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("no gateway in this test"));
        // The config handed over is the one written next to the report.
        let written = std::fs::read_to_string(dir.path().join("junction-demo.yaml")).unwrap();
        assert_eq!(*seen.lock(), written);
        assert!(written.contains("/events/order-synced"));
    }
}

#[cfg(test)]
#[path = "demo_tests.rs"]
mod e2e;
