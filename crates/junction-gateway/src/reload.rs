//! Hot reload: `SIGHUP` and `POST /admin/reload` re-read the config file and
//! swap the running configuration without dropping a connection.
//!
//! Why it exists: every config change used to need a restart, which drops
//! connections; `kill -HUP` (logrotate, `systemctl reload`) even ended the
//! process. Now:
//! - the new file is checked first, with the same errors as `junction check`;
//!   an invalid one is refused and the old configuration keeps serving;
//! - changes only a restart can apply (`listen`, `admin`, `queue`, `cache`,
//!   `shutdown`, a first async route) are refused
//!   with a message naming them;
//! - otherwise a new [`Gateway`] is built and swapped in atomically: new
//!   requests use it at once, requests in flight finish on the one they
//!   started with. Live state is carried by name: an upstream whose settings
//!   did not change keeps its breaker, retry budget, bulkhead and connection
//!   pool (an open breaker stays open); a route whose rate limit did not change
//!   keeps its limiter's window; statistics, the cache and the idempotency
//!   store are shared. Dispatchers are started,
//!   stopped and restarted by diff; a removed subscriber's deliveries stay in
//!   the queue.
//!
//! The log filter follows `telemetry.log_level` (unless `RUST_LOG` is set,
//! which takes precedence), and trace export `telemetry.otlp_endpoint`.

use crate::config::{self, Config, ConfigError};
use crate::pipeline::{self, DispatchContext, DispatcherChanges, Dispatchers};
use crate::proxy::upstream::Upstream;
use crate::proxy::{Gateway, SharedGateway};
use crate::server::tls::ListenerTls;
use crate::telemetry::live::Live;
use crate::telemetry::Metrics;
use junction_queue::Queue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rustls::sign::CertifiedKey;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// This instance was started from config text, not a file.
    #[error("this instance was not started from a config file; there is nothing to re-read")]
    NoFile,
    /// The new file is invalid; the old configuration keeps serving.
    #[error("the new config is invalid ({} errors); the running config is unchanged", .0.len())]
    Invalid(Vec<ConfigError>),
    /// The new file changes what only a restart can apply.
    #[error("these settings need a restart: {}; the running config is unchanged", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    /// Building the new configuration failed.
    #[error("the new config could not be applied: {0:#}; the running config is unchanged")]
    Apply(anyhow::Error),
}

/// What a successful reload changed.
#[derive(Debug, Serialize)]
pub struct ReloadReport {
    /// SHA-256 of the file now serving.
    pub config_sha256: String,
    /// Upstreams built anew (new, or settings changed); the others kept their state.
    pub upstreams_rebuilt: Vec<String>,
    /// Dispatcher changes.
    pub dispatchers: DispatcherChanges,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Holds what a reload replaces, and applies reloads one at a time.
pub struct Reloader {
    path: Option<PathBuf>,
    gateways: SharedGateway,
    metrics: Metrics,
    queue: Option<Queue>,
    live: Arc<Live>,
    state: tokio::sync::Mutex<Loaded>,
    sha256: parking_lot::Mutex<String>,
    reloads: Family<OutcomeLabel, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    /// The listeners' TLS, whose certificate files every reload reads again.
    tls: ListenerCerts,
}

/// A listener and the certificate a reload read for it.
type RenewedCert = (Arc<ListenerTls>, Arc<CertifiedKey>);

/// The TLS of the data and admin listeners, when on.
#[derive(Clone, Debug, Default)]
pub struct ListenerCerts {
    /// `tls` (the data plane).
    pub data: Option<Arc<ListenerTls>>,
    /// `admin.tls`.
    pub admin: Option<Arc<ListenerTls>>,
}

impl ListenerCerts {
    /// Reads the certificate files `config` names for each listener with
    /// TLS; nothing is served from them yet (see [`ListenerTls::install`]).
    fn read(&self, config: &Config) -> Result<Vec<RenewedCert>, String> {
        let mut read = Vec::new();
        for (key, tls, cfg) in [
            ("tls", &self.data, &config.tls),
            ("admin.tls", &self.admin, &config.admin.tls),
        ] {
            if let (Some(tls), Some(cfg)) = (tls, cfg) {
                let pair = tls.read(cfg).map_err(|e| format!("{key}: {e}"))?;
                read.push((tls.clone(), pair));
            }
        }
        Ok(read)
    }
}

/// The configuration serving now, and the live pieces built from it.
pub struct Loaded {
    /// The config serving now.
    pub config: Config,
    /// Upstreams by name, shared by routes and subscribers.
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// The running dispatchers.
    pub dispatchers: Dispatchers,
}

impl Reloader {
    /// Takes over the started configuration; registers the reload metrics.
    pub fn new(
        loaded: Loaded,
        gateways: SharedGateway,
        metrics: Metrics,
        queue: Option<Queue>,
        live: Arc<Live>,
    ) -> Self {
        let reloads = Family::<OutcomeLabel, Counter>::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        metrics.register(
            "junction_config_reloads",
            "Config reloads, by outcome (success, failure)",
            reloads.clone(),
        );
        metrics.register(
            "junction_config_last_reload_success_timestamp_seconds",
            "When the config last loaded successfully (start or reload), Unix seconds",
            last_success.clone(),
        );
        last_success.set(unix_now());
        let source = loaded.config.source.clone();
        Self {
            path: source.as_ref().map(|s| s.path.clone()),
            sha256: parking_lot::Mutex::new(source.map(|s| s.sha256).unwrap_or_default()),
            gateways,
            metrics,
            queue,
            live,
            state: tokio::sync::Mutex::new(loaded),
            reloads,
            last_success,
            tls: ListenerCerts::default(),
        }
    }

    /// The listeners' TLS, for reloads to renew their certificates.
    pub fn with_tls(mut self, tls: ListenerCerts) -> Self {
        self.tls = tls;
        self
    }

    /// SHA-256 of the config file serving now (empty when started from text).
    pub fn config_sha256(&self) -> String {
        self.sha256.lock().clone()
    }

    /// Re-reads the file and applies it; logs and counts the outcome.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let result = self.try_reload().await;
        let outcome = if result.is_ok() { "success" } else { "failure" };
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
        match &result {
            Ok(report) => {
                self.last_success.set(unix_now());
                tracing::info!(
                    config_sha256 = %report.config_sha256,
                    upstreams_rebuilt = ?report.upstreams_rebuilt,
                    dispatchers = ?report.dispatchers,
                    "config reloaded"
                );
            }
            Err(ReloadError::Invalid(errors)) => {
                for e in errors {
                    tracing::warn!("config reload refused: {e}");
                }
            }
            Err(e) => tracing::warn!("config reload refused: {e}"),
        }
        result
    }

    async fn try_reload(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let new = config::load_file(path).map_err(ReloadError::Invalid)?;
        let mut loaded = self.state.lock().await;
        let restart = needs_restart(&loaded.config, &new);
        if !restart.is_empty() {
            return Err(ReloadError::NeedsRestart(restart));
        }
        // Certificates first: a renewed pair that does not load changes nothing.
        let certs = self
            .tls
            .read(&new)
            .map_err(|e| ReloadError::Apply(anyhow::anyhow!(e)))?;
        // Upstreams with unchanged settings keep their live state.
        let mut upstreams = BTreeMap::new();
        let mut rebuilt = Vec::new();
        for (name, cfg) in &new.upstreams {
            let kept = loaded
                .upstreams
                .get(name)
                .filter(|_| loaded.config.upstreams.get(name) == Some(cfg));
            let upstream = match kept {
                Some(u) => u.clone(),
                None => {
                    rebuilt.push(name.clone());
                    Arc::new(Upstream::new(name, cfg, &self.metrics).map_err(ReloadError::Apply)?)
                }
            };
            upstreams.insert(name.clone(), upstream);
        }
        let async_routes = self
            .queue
            .as_ref()
            .map(|b| pipeline::async_routes(&new, b, &self.metrics))
            .unwrap_or_default();
        let old = self.gateways.load_full();
        let gateway = Gateway::build(
            &new,
            self.metrics.clone(),
            upstreams.clone(),
            &async_routes,
            old.live_state(),
        )
        .map_err(ReloadError::Apply)?;
        let dispatchers = match &self.queue {
            Some(queue) => loaded
                .dispatchers
                .apply(
                    &new,
                    &DispatchContext {
                        queue,
                        upstreams: &upstreams,
                        metrics: &self.metrics,
                        live: &self.live,
                    },
                )
                .map_err(ReloadError::Apply)?,
            None => DispatcherChanges::default(),
        };
        let buffers = gateway.buffers.clone();
        self.gateways.store(Arc::new(gateway));
        buffers.set_max(new.limits.buffer_budget.0);
        for (tls, pair) in certs {
            tls.install(pair);
        }
        if new.telemetry.otlp_endpoint != loaded.config.telemetry.otlp_endpoint {
            if let Err(e) =
                crate::telemetry::otel::set_endpoint(new.telemetry.otlp_endpoint.as_deref())
            {
                tracing::warn!("telemetry.otlp_endpoint not applied: {e:#}");
            }
        }
        if new.telemetry.log_level != loaded.config.telemetry.log_level {
            // Checked with the rest of the file: applying it cannot fail on syntax.
            if let Err(e) = crate::telemetry::logs::set_level(new.telemetry.log_level.as_deref()) {
                tracing::warn!("telemetry.log_level not applied: {e}");
            }
        }
        let sha256 = new
            .source
            .as_ref()
            .map(|s| s.sha256.clone())
            .unwrap_or_default();
        *self.sha256.lock() = sha256.clone();
        loaded.config = new;
        loaded.upstreams = upstreams;
        Ok(ReloadReport {
            config_sha256: sha256,
            upstreams_rebuilt: rebuilt,
            dispatchers,
        })
    }

    /// Takes the dispatchers out for the final drain at shutdown.
    pub async fn take_dispatchers(&self) -> Dispatchers {
        std::mem::replace(
            &mut self.state.lock().await.dispatchers,
            Dispatchers::none(),
        )
    }
}

/// The settings that differ between `old` and `new` and need a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let has_async = |c: &Config| c.routes.iter().any(|r| r.async_.is_some());
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if old.tls.is_some() != new.tls.is_some() {
        out.push("tls (turning TLS on or off)");
    }
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.queue != new.queue {
        out.push("queue");
    }
    if old.cache != new.cache {
        out.push("cache");
    }
    if old.shutdown != new.shutdown {
        out.push("shutdown");
    }
    if !has_async(old) && has_async(new) {
        out.push("the first async route (the queue opens at start)");
    }
    out
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        config::load_str(yaml, "t.yaml").expect("valid")
    }

    #[test]
    fn restart_only_settings_are_named() {
        let base =
            parse("listen: 127.0.0.1:8080\nupstreams: { a: { url: \"http://127.0.0.1:1\" } }\n");
        assert!(needs_restart(&base, &base).is_empty());
        let routes_only = parse("listen: 127.0.0.1:8080\nupstreams: { a: { url: \"http://127.0.0.1:2\", timeout: 5s } }\n");
        assert!(needs_restart(&base, &routes_only).is_empty());
        let moved = parse(
            "listen: 127.0.0.1:8081\nadmin: { listen: 127.0.0.1:9999 }\nshutdown: { grace: 1s }\n",
        );
        assert_eq!(
            needs_restart(&base, &moved),
            ["listen", "admin", "shutdown"]
        );
    }
}
