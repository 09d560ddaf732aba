//! The load driver: the order service syncing orders, before and after Junction.
//!
//! [`run`] starts order syncs open-loop at a fixed rate for a fixed duration
//! (a slow system does not slow the arrivals down, as at a real peak) and
//! records every transaction's start, latency, outcome and bytes received.
//! [`Path::Direct`] is the seed's "before": inventory validation, supplier
//! lookup, fulfillment update and analytics update called one after the other
//! on the services, any failure failing the transaction. [`Path::Junction`] is
//! the "after": cached lookups through the gateway, then one durable event
//! that Junction fans out to fulfillment and analytics itself.
//! [`warm_up`] touches every key once before a measured Junction run. Every
//! loop here is bounded in count and time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::scenario::{OutageWindow, ServiceKind};
use crate::services::{ClusterStats, SimCluster};

/// The fields of supplier metadata the order flow needs.
pub const SUPPLIER_FIELDS: &str = "id,name,lead_time_days";

/// The header telling Junction who is calling (for its dependency graph).
const CALLER: &str = "x-junction-caller";

/// How the order service reaches the other services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Before: four synchronous calls straight to the services.
    Direct,
    /// After: through the Junction gateway listening at `gateway`.
    Junction {
        /// The gateway's data-plane address.
        gateway: SocketAddr,
    },
    /// Before, observed: the same four synchronous calls, passed through a
    /// Junction in observe mode (plain routes) at `gateway`, each call naming
    /// its caller and carrying the transaction's trace, as an instrumented
    /// order service would.
    Observed {
        /// The gateway's data-plane address.
        gateway: SocketAddr,
    },
}

impl Path {
    /// `direct` or `junction`.
    pub fn label(&self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Junction { .. } => "junction",
            Path::Observed { .. } => "observed",
        }
    }
}

/// How much load to drive.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Order syncs started per second.
    pub rate: f64,
    /// How long to keep starting them.
    pub duration: Duration,
    /// Per-call timeout of the caller.
    pub call_timeout: Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// One order sync as the caller saw it.
#[derive(Debug, Clone, Serialize)]
pub struct TxRecord {
    /// The order id (unique per run).
    pub order_id: String,
    /// When it started, from the run's start.
    pub start: Duration,
    /// How long the caller waited.
    pub latency: Duration,
    /// Whether the caller saw success.
    pub ok: bool,
    /// What failed, e.g. `fulfillment: 503` (None when ok).
    pub error: Option<String>,
    /// Whether Junction accepted the order event (202); false on the direct path.
    pub accepted: bool,
    /// Response body bytes the caller received.
    pub bytes_received: u64,
    /// Lookups (inventory + supplier) the caller asked for.
    pub lookups: u32,
}

/// The warm-up before a measured Junction run.
#[derive(Debug, Clone, Serialize)]
pub struct WarmupReport {
    /// Requests sent (one per SKU and per supplier).
    pub requests: usize,
    /// How many of them failed.
    pub failures: usize,
    /// How long the warm-up took.
    pub elapsed: Duration,
}

/// Everything one measured run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Which path ran.
    pub path: Path,
    /// When the run started.
    pub started: Instant,
    /// The configured run duration.
    pub duration: Duration,
    /// From start until the last transaction finished.
    pub wall: Duration,
    /// Every transaction, in start order.
    pub records: Vec<TxRecord>,
    /// What the services did during the run (until the last transaction finished).
    pub service_stats: ClusterStats,
    /// The outage windows of the run.
    pub outages: Vec<OutageWindow>,
}

impl RunResult {
    /// Order ids Junction accepted.
    pub fn accepted_ids(&self) -> Vec<&str> {
        self.records
            .iter()
            .filter(|r| r.accepted)
            .map(|r| r.order_id.as_str())
            .collect()
    }

    /// Response body bytes the caller received in total.
    pub fn bytes_received(&self) -> u64 {
        self.records.iter().map(|r| r.bytes_received).sum()
    }

    /// Lookups the caller asked for in total.
    pub fn lookups(&self) -> u64 {
        self.records.iter().map(|r| u64::from(r.lookups)).sum()
    }
}

struct Targets {
    client: reqwest::Client,
    path: Path,
    inventory: String,
    supplier: String,
    fulfillment: String,
    analytics: String,
    gateway: String,
    timeout: Duration,
}

/// A reqwest client with a connection pool sized for the load.
pub fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?)
}

/// The SKU key `i`.
pub fn sku_key(i: u32) -> String {
    format!("sku-{i:04}")
}

/// The supplier key `i`.
pub fn supplier_key(i: u32) -> String {
    format!("sup-{i:03}")
}

pub(crate) fn progress_bar(len: u64, prefix: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(prefix.to_string());
    pb
}

/// Drives order syncs along `path` at `opts.rate` for `opts.duration`.
///
/// Starts the cluster's run clock (outage windows count from now). Order ids
/// are `ord-{path}-{run}-{n}` so runs never share ids.
pub async fn run(cluster: &SimCluster, path: Path, opts: &DriverOptions) -> Result<RunResult> {
    if !(opts.rate > 0.0 && opts.rate.is_finite()) || opts.duration.is_zero() {
        bail!("rate and duration must be positive");
    }
    let total = (opts.rate * opts.duration.as_secs_f64()).floor().max(1.0) as u64;
    let gw = match path {
        Path::Junction { gateway } | Path::Observed { gateway } => {
            Some(format!("http://{gateway}"))
        }
        Path::Direct => None,
    };
    let base = |k| gw.clone().unwrap_or_else(|| cluster.url(k));
    let targets = Arc::new(Targets {
        client: http_client()?,
        path,
        inventory: base(ServiceKind::Inventory),
        supplier: base(ServiceKind::Supplier),
        fulfillment: base(ServiceKind::Fulfillment),
        analytics: base(ServiceKind::Analytics),
        gateway: gw.clone().unwrap_or_default(),
        timeout: opts.call_timeout,
    });
    let scenario = cluster.scenario();
    let (skus, suppliers) = (scenario.workload.skus, scenario.workload.suppliers);
    let mut rng = StdRng::seed_from_u64(scenario.seed.wrapping_add(total));
    let run_tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000)
        .unwrap_or(0);
    let pb = progress_bar(total, path.label(), opts.progress);

    let before = cluster.stats();
    let outages = cluster.begin_run(opts.duration);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / opts.rate);
        tokio::time::sleep_until(due.into()).await;
        let order = json!({
            "orderId": format!("ord-{}-{run_tag}-{n:06}", path.label()),
            "sku": sku_key(rng.gen_range(0..skus)),
            "supplierId": supplier_key(rng.gen_range(0..suppliers)),
            "quantity": rng.gen_range(1..=5),
        });
        let (t, pb) = (targets.clone(), pb.clone());
        let offset = due - started;
        set.spawn(async move {
            let rec = transaction(&t, order, offset).await;
            pb.inc(1);
            rec
        });
    }
    let mut records = Vec::with_capacity(total as usize);
    let mut failed = 0u64;
    while let Some(joined) = set.join_next().await {
        let rec = joined?;
        if !rec.ok {
            failed += 1;
            pb.set_message(format!("{failed} failed"));
        }
        records.push(rec);
    }
    pb.finish_and_clear();
    let wall = started.elapsed();
    records.sort_by_key(|r| r.start);
    Ok(RunResult {
        path,
        started,
        duration: opts.duration,
        wall,
        records,
        service_stats: cluster.stats().since(&before),
        outages,
    })
}

/// One HTTP call: the JSON body (Null if not JSON) on 2xx, else what failed.
/// Body bytes are added to `bytes` either way.
async fn call(
    t: &Targets,
    what: &str,
    req: reqwest::RequestBuilder,
    bytes: &mut u64,
) -> Result<Value, String> {
    let resp = req.timeout(t.timeout).send().await.map_err(|e| {
        format!(
            "{what}: {}",
            if e.is_timeout() {
                "timeout"
            } else {
                "unreachable"
            }
        )
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|_| format!("{what}: body read failed"))?;
    *bytes += body.len() as u64;
    if !status.is_success() {
        return Err(format!("{what}: {}", status.as_u16()));
    }
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn transaction(t: &Targets, order: Value, start: Duration) -> TxRecord {
    let began = Instant::now();
    let mut bytes = 0u64;
    let mut lookups = 0u32;
    let order_id = order["orderId"].as_str().unwrap_or_default().to_string();
    let sku = order["sku"].as_str().unwrap_or_default().to_string();
    let supplier = order["supplierId"].as_str().unwrap_or_default().to_string();
    let c = &t.client;
    // Observed: every call says who calls and in which transaction (trace).
    let traceparent = trace_of(&order_id);
    let tag = |req: reqwest::RequestBuilder| match t.path {
        Path::Observed { .. } => req
            .header(CALLER, "order")
            .header("traceparent", &traceparent),
        _ => req,
    };
    let outcome: Result<bool, String> = async {
        match t.path {
            Path::Direct | Path::Observed { .. } => {
                lookups += 1;
                let url = format!("{}/inventory/validate", t.inventory);
                call(t, "inventory", tag(c.post(url).json(&order)), &mut bytes).await?;
                lookups += 1;
                let url = format!("{}/suppliers/{supplier}", t.supplier);
                call(t, "supplier", tag(c.get(url)), &mut bytes).await?;
                let url = format!("{}/orders", t.fulfillment);
                call(t, "fulfillment", tag(c.post(url).json(&order)), &mut bytes).await?;
                let event = json!({"type": "order-updated", "orderId": order_id, "sku": sku});
                let url = format!("{}/events", t.analytics);
                call(t, "analytics", tag(c.post(url).json(&event)), &mut bytes).await?;
                Ok(false)
            }
            Path::Junction { .. } => {
                lookups += 1;
                let url = format!("{}/inventory/{sku}", t.inventory);
                call(
                    t,
                    "inventory",
                    c.get(url).header(CALLER, "order"),
                    &mut bytes,
                )
                .await?;
                lookups += 1;
                let url = format!(
                    "{}/suppliers/{supplier}?fields={SUPPLIER_FIELDS}",
                    t.supplier
                );
                let meta = call(
                    t,
                    "supplier",
                    c.get(url).header(CALLER, "order"),
                    &mut bytes,
                )
                .await?;
                let mut event = order.clone();
                event["type"] = json!("order-synced");
                event["supplier"] = meta;
                let url = format!("{}/events/order-synced", t.gateway);
                let req = c
                    .post(url)
                    .header(CALLER, "order")
                    .header("idempotency-key", &order_id)
                    .json(&event);
                call(t, "order-synced", req, &mut bytes).await?;
                Ok(true)
            }
        }
    }
    .await;
    TxRecord {
        order_id,
        start,
        latency: began.elapsed(),
        ok: outcome.is_ok(),
        accepted: matches!(outcome, Ok(true)),
        error: outcome.err(),
        bytes_received: bytes,
        lookups,
    }
}

/// A W3C `traceparent` of the transaction `order_id` (stable, sampled).
fn trace_of(order_id: &str) -> String {
    let fnv = |seed: u64| {
        order_id.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    format!("00-{a:016x}{b:016x}-{:016x}-01", a ^ b.rotate_left(7) | 1)
}

/// Touches every SKU and supplier once through the gateway so the measured
/// run sees the cache's steady state. Call it before [`run`].
pub async fn warm_up(
    cluster: &SimCluster,
    gateway: SocketAddr,
    call_timeout: Duration,
    progress: bool,
) -> Result<WarmupReport> {
    let w = &cluster.scenario().workload;
    let client = http_client()?;
    let mut urls: Vec<String> = (0..w.skus)
        .map(|i| format!("http://{gateway}/inventory/{}", sku_key(i)))
        .collect();
    urls.extend((0..w.suppliers).map(|i| {
        format!(
            "http://{gateway}/suppliers/{}?fields={SUPPLIER_FIELDS}",
            supplier_key(i)
        )
    }));
    let pb = progress_bar(urls.len() as u64, "warm-up", progress);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for url in &urls {
        let (client, pb, url) = (client.clone(), pb.clone(), url.clone());
        set.spawn(async move {
            // Two tries: a cold vendor fails 5% of the time.
            let mut ok = false;
            for _ in 0..2 {
                let r = client
                    .get(&url)
                    .header(CALLER, "order")
                    .timeout(call_timeout)
                    .send()
                    .await;
                if let Ok(resp) = r {
                    ok = resp.status().is_success() && resp.bytes().await.is_ok();
                }
                if ok {
                    break;
                }
            }
            pb.inc(1);
            ok
        });
    }
    let mut failures = 0;
    while let Some(ok) = set.join_next().await {
        if !ok? {
            failures += 1;
        }
    }
    pb.finish_and_clear();
    Ok(WarmupReport {
        requests: urls.len(),
        failures,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
