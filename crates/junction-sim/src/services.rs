//! The simulated ERP services, as real HTTP servers on loopback.
//!
//! [`SimCluster::start`] binds one axum server per service on `127.0.0.1:0`.
//! Each request sleeps for a latency drawn from the service's distribution,
//! then fails with 500/503 at the configured rate; during an outage window
//! (relative to the start of the current run, see [`SimCluster::begin_run`])
//! the service answers 503 at once or hangs until the window closes. The
//! cluster counts calls, failures and body bytes sent per service, and
//! fulfillment and analytics record every order id they accepted, so a run
//! can check that each accepted order arrived (and how many times).
//!
//! Endpoints: order `POST /orders`, `GET /orders/{id}`; inventory
//! `GET /inventory/{sku}`, `POST /inventory/validate`; supplier
//! `GET /suppliers/{id}`; fulfillment `POST /orders`; analytics `POST /events`;
//! payment `POST /charge`; notification `POST /notify`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::response::Response;
use axum::serve::ListenerExt;
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::dist::LogNormal;
use crate::scenario::{OutageMode, OutageWindow, Scenario, ServiceKind};

mod handlers;

#[cfg(test)]
use handlers::padded;
use handlers::router;

/// Counters of one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServiceStats {
    /// Requests received.
    pub calls: u64,
    /// Requests answered with an injected failure or an outage.
    pub failures: u64,
    /// Response body bytes sent.
    pub bytes_sent: u64,
}

/// A snapshot of every service's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterStats {
    /// Counters per service.
    pub services: BTreeMap<ServiceKind, ServiceStats>,
}

impl ClusterStats {
    /// Counters of one service (zero when absent).
    pub fn get(&self, kind: ServiceKind) -> ServiceStats {
        self.services.get(&kind).copied().unwrap_or_default()
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &ClusterStats) -> ClusterStats {
        let services = self
            .services
            .iter()
            .map(|(k, now)| {
                let then = earlier.get(*k);
                let d = ServiceStats {
                    calls: now.calls.saturating_sub(then.calls),
                    failures: now.failures.saturating_sub(then.failures),
                    bytes_sent: now.bytes_sent.saturating_sub(then.bytes_sent),
                };
                (*k, d)
            })
            .collect();
        ClusterStats { services }
    }

    /// Body bytes sent by all services together.
    pub fn total_bytes_sent(&self) -> u64 {
        self.services.values().map(|s| s.bytes_sent).sum()
    }
}

/// Where the current run started and which outages it has.
#[derive(Default)]
struct RunClock {
    run: RwLock<Option<(Instant, Vec<OutageWindow>)>>,
}

impl RunClock {
    /// The outage of `kind` in force now, and how long it has left.
    fn outage(&self, kind: ServiceKind) -> Option<(OutageMode, Duration)> {
        let guard = self.run.read();
        let (start, windows) = guard.as_ref()?;
        let at = start.elapsed();
        windows
            .iter()
            .find(|w| w.service == kind && w.contains(at))
            .map(|w| (w.mode, w.end - at))
    }
}

struct ServiceState {
    kind: ServiceKind,
    latency: LogNormal,
    failure_rate: f64,
    payload_bytes: usize,
    rng: Mutex<StdRng>,
    clock: Arc<RunClock>,
    calls: AtomicU64,
    failures: AtomicU64,
    bytes_sent: AtomicU64,
    receipts: Mutex<HashMap<String, Receipt>>,
}

/// How often, and first when, an order reached a subscriber.
#[derive(Debug, Clone, Copy)]
struct Receipt {
    count: u32,
    first: Instant,
}

type Shared = Arc<ServiceState>;

/// A response that ends a request early (boxed: responses are large).
type Reject = Box<Response>;

struct Running {
    addr: SocketAddr,
    state: Shared,
    task: JoinHandle<()>,
}

/// The running simulated world: one HTTP server per service.
pub struct SimCluster {
    services: BTreeMap<ServiceKind, Running>,
    clock: Arc<RunClock>,
    scenario: Scenario,
}

impl SimCluster {
    /// Starts every service of `scenario` on its own loopback port.
    pub async fn start(scenario: &Scenario) -> Result<SimCluster> {
        scenario.validate()?;
        let clock = Arc::new(RunClock::default());
        let mut services = BTreeMap::new();
        for (i, kind) in ServiceKind::ALL.into_iter().enumerate() {
            let spec = scenario.service(kind);
            let state = Arc::new(ServiceState {
                kind,
                latency: spec.latency_dist(scenario.time_scale)?,
                failure_rate: spec.failure_rate,
                payload_bytes: spec.payload_bytes,
                rng: Mutex::new(StdRng::seed_from_u64(
                    scenario.seed ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1)),
                )),
                clock: clock.clone(),
                calls: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                bytes_sent: AtomicU64::new(0),
                receipts: Mutex::new(HashMap::new()),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .with_context(|| format!("binding the {kind} service"))?;
            let addr = listener.local_addr()?;
            // No Nagle: a large body written in pieces must not wait for delayed ACKs.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let app = router(kind).with_state(state.clone());
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(service = %kind, error = %e, "simulated service stopped");
                }
            });
            services.insert(kind, Running { addr, state, task });
        }
        Ok(SimCluster {
            services,
            clock,
            scenario: scenario.clone(),
        })
    }

    /// The address of a service.
    pub fn addr(&self, kind: ServiceKind) -> SocketAddr {
        self.services[&kind].addr
    }

    /// `http://ADDR` of a service.
    pub fn url(&self, kind: ServiceKind) -> String {
        format!("http://{}", self.addr(kind))
    }

    /// The scenario the cluster runs.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Starts a run of `run` length now: outage windows count from this instant.
    /// Returns the resolved windows.
    pub fn begin_run(&self, run: Duration) -> Vec<OutageWindow> {
        let windows = self.scenario.outage_windows(run);
        *self.clock.run.write() = Some((Instant::now(), windows.clone()));
        windows
    }

    /// Ends the current run: no outage is in force until the next one.
    pub fn end_run(&self) {
        *self.clock.run.write() = None;
    }

    /// A snapshot of every service's counters.
    pub fn stats(&self) -> ClusterStats {
        let services = self
            .services
            .iter()
            .map(|(k, r)| {
                let s = &r.state;
                let st = ServiceStats {
                    calls: s.calls.load(Ordering::Relaxed),
                    failures: s.failures.load(Ordering::Relaxed),
                    bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
                };
                (*k, st)
            })
            .collect();
        ClusterStats { services }
    }

    /// How many times `kind` accepted the order `order_id` (fulfillment, analytics).
    pub fn receipt_count(&self, kind: ServiceKind, order_id: &str) -> u32 {
        let r = self.services[&kind].state.receipts.lock();
        r.get(order_id).map_or(0, |x| x.count)
    }

    /// How many of `ids` `kind` has not accepted yet.
    pub fn missing_receipts<'a, I>(&self, kind: ServiceKind, ids: I) -> usize
    where
        I: IntoIterator<Item = &'a str>,
    {
        let r = self.services[&kind].state.receipts.lock();
        ids.into_iter().filter(|id| !r.contains_key(*id)).count()
    }

    /// Every order id `kind` accepted, with how many times.
    pub fn receipts(&self, kind: ServiceKind) -> HashMap<String, u32> {
        let r = self.services[&kind].state.receipts.lock();
        r.iter().map(|(k, v)| (k.clone(), v.count)).collect()
    }

    /// When the last of `ids` first reached `kind`; None if one has not yet.
    pub fn last_first_receipt<'a, I>(&self, kind: ServiceKind, ids: I) -> Option<Instant>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let r = self.services[&kind].state.receipts.lock();
        let mut last = None;
        for id in ids {
            let first = r.get(id)?.first;
            last = Some(last.map_or(first, |l: Instant| l.max(first)));
        }
        last
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        for r in self.services.values() {
            r.task.abort();
        }
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
