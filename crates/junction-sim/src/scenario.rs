//! The scenario file: what the simulated ERP world looks like.
//!
//! A scenario names each service (order, inventory, supplier, fulfillment,
//! analytics, payment, notification) with a latency distribution (mean + p99,
//! log-normal), a failure rate, outage windows and a response payload size,
//! plus the default workload. Files are YAML (JSON is YAML too); unknown keys
//! are errors. The seed's case study ships built in as `erp-peak`.
//!
//! `time_scale` multiplies every latency, absolute outage offset and the call
//! timeout, so tests and quick demos run the same shape in a fraction of the
//! time. Outage offsets may also be given as a percentage of the run (`20%`),
//! which follows whatever run duration the driver uses.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

use crate::dist::LogNormal;

const ERP_PEAK: &str = include_str!("../scenarios/erp-peak.yaml");

/// One of the simulated services of the ERP world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// The order service (the caller in the case study).
    Order,
    /// Stock levels and order validation.
    Inventory,
    /// Supplier metadata: large and rarely changing.
    Supplier,
    /// The vendor that ships orders.
    Fulfillment,
    /// The analytics event sink.
    Analytics,
    /// Card charges.
    Payment,
    /// E-mail / SMS notifications.
    Notification,
}

impl ServiceKind {
    /// Every service, in a stable order.
    pub const ALL: [ServiceKind; 7] = [
        ServiceKind::Order,
        ServiceKind::Inventory,
        ServiceKind::Supplier,
        ServiceKind::Fulfillment,
        ServiceKind::Analytics,
        ServiceKind::Payment,
        ServiceKind::Notification,
    ];

    /// The lowercase name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Order => "order",
            ServiceKind::Inventory => "inventory",
            ServiceKind::Supplier => "supplier",
            ServiceKind::Fulfillment => "fulfillment",
            ServiceKind::Analytics => "analytics",
            ServiceKind::Payment => "payment",
            ServiceKind::Notification => "notification",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A whole simulated world and its default workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, e.g. `erp-peak`.
    pub name: String,
    /// What the scenario stands for.
    #[serde(default)]
    pub description: String,
    /// Multiplies latencies, absolute outage offsets and the call timeout.
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Seed of the services' random number generators (reproducible runs).
    #[serde(default)]
    pub seed: u64,
    /// The default load to drive.
    #[serde(default)]
    pub workload: Workload,
    /// How each service behaves; services left out are fast and healthy.
    pub services: BTreeMap<ServiceKind, ServiceSpec>,
}

/// The default load for a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Order syncs started per second (open loop).
    pub rate: f64,
    /// How long to drive the load.
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
    /// Size of the SKU key space.
    pub skus: u32,
    /// Size of the supplier key space.
    pub suppliers: u32,
    /// Per-call timeout of the caller (scaled by `time_scale`).
    #[serde(deserialize_with = "de_duration")]
    pub call_timeout: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            rate: 10.0,
            duration: Duration::from_secs(60),
            skus: 50,
            suppliers: 20,
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// The behaviour of one service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Response time distribution.
    pub latency: LatencySpec,
    /// Fraction of calls answered 500 or 503 (0.0–1.0).
    #[serde(default)]
    pub failure_rate: f64,
    /// Size in bytes of the JSON body of the service's main response.
    #[serde(default = "default_payload")]
    pub payload_bytes: usize,
    /// Windows during which the service is down.
    #[serde(default)]
    pub outages: Vec<OutageSpec>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            latency: LatencySpec {
                mean: Duration::from_millis(5),
                p99: Duration::from_millis(20),
            },
            failure_rate: 0.0,
            payload_bytes: default_payload(),
            outages: Vec::new(),
        }
    }
}

/// A latency given by mean and p99 (log-normal in between).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// Mean response time.
    #[serde(deserialize_with = "de_duration")]
    pub mean: Duration,
    /// 99th percentile response time.
    #[serde(deserialize_with = "de_duration")]
    pub p99: Duration,
}

/// One outage window of a service, relative to the start of a run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageSpec {
    /// When the outage begins: `12s` or `20%` of the run.
    pub start: Offset,
    /// How long it lasts: `15s` or `25%` of the run.
    pub duration: Offset,
    /// How the service misbehaves meanwhile.
    #[serde(default)]
    pub mode: OutageMode,
}

/// What a service does during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutageMode {
    /// Answers `503 Service Unavailable` at once.
    #[default]
    Unavailable,
    /// Holds the request until the outage ends, then answers 503.
    Hang,
}

impl OutageMode {
    /// `unavailable` or `hang`, as in files.
    pub fn name(self) -> &'static str {
        match self {
            OutageMode::Unavailable => "unavailable",
            OutageMode::Hang => "hang",
        }
    }
}

/// A point or length of time in a run: absolute, or a fraction of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Offset {
    /// An absolute duration (scaled by `time_scale`).
    Absolute(Duration),
    /// A fraction (0.0–1.0) of the run's duration.
    Fraction(f64),
}

impl Offset {
    /// Resolves the offset for a run of `run` length.
    pub fn resolve(self, run: Duration, time_scale: f64) -> Duration {
        match self {
            Offset::Absolute(d) => d.mul_f64(time_scale),
            Offset::Fraction(f) => run.mul_f64(f),
        }
    }
}

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        if let Some(pct) = t.strip_suffix('%') {
            let v: f64 = pct.trim().parse().map_err(serde::de::Error::custom)?;
            if !(0.0..=100.0).contains(&v) {
                return Err(serde::de::Error::custom(format!(
                    "percentage {v} is outside 0–100"
                )));
            }
            return Ok(Offset::Fraction(v / 100.0));
        }
        humantime::parse_duration(t)
            .map(Offset::Absolute)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {t:?}: {e}")))
    }
}

/// An outage window resolved for one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutageWindow {
    /// The service that is down.
    pub service: ServiceKind,
    /// Start, from the run's start.
    pub start: Duration,
    /// End, from the run's start.
    pub end: Duration,
    /// How it misbehaves.
    pub mode: OutageMode,
}

impl OutageWindow {
    /// Whether `at` (from the run's start) falls inside the window.
    pub fn contains(&self, at: Duration) -> bool {
        at >= self.start && at < self.end
    }
}

impl Scenario {
    /// A scenario shipped with the crate (`erp-peak`).
    pub fn builtin(name: &str) -> Result<Scenario> {
        match name {
            "erp-peak" => Scenario::from_yaml(ERP_PEAK).context("built-in scenario erp-peak"),
            other => bail!("no built-in scenario named {other:?} (known: erp-peak)"),
        }
    }

    /// Loads and validates a scenario file (YAML or JSON).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Scenario> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Scenario::from_yaml(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// A built-in name, or else a file path.
    pub fn load(name_or_path: &str) -> Result<Scenario> {
        if std::path::Path::new(name_or_path).exists() {
            Scenario::from_file(name_or_path)
        } else {
            Scenario::builtin(name_or_path)
        }
    }

    /// Parses and validates scenario text.
    pub fn from_yaml(text: &str) -> Result<Scenario> {
        let s: Scenario = serde_yaml_ng::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// The same scenario with a different time scale.
    pub fn with_time_scale(mut self, time_scale: f64) -> Scenario {
        self.time_scale = time_scale;
        self
    }

    /// Checks every number for sense; the loaders call it.
    pub fn validate(&self) -> Result<()> {
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            bail!(
                "time_scale must be a positive number, got {}",
                self.time_scale
            );
        }
        let w = &self.workload;
        if !(w.rate > 0.0 && w.rate.is_finite()) {
            bail!("workload.rate must be positive, got {}", w.rate);
        }
        if w.skus == 0 || w.suppliers == 0 {
            bail!("workload.skus and workload.suppliers must be at least 1");
        }
        if w.call_timeout.is_zero() {
            bail!("workload.call_timeout must be positive");
        }
        for (kind, spec) in &self.services {
            spec.latency_dist(1.0)
                .with_context(|| format!("services.{kind}.latency"))?;
            if !(0.0..=1.0).contains(&spec.failure_rate) {
                bail!(
                    "services.{kind}.failure_rate must be within 0–1, got {}",
                    spec.failure_rate
                );
            }
            for (i, o) in spec.outages.iter().enumerate() {
                let frac_sum = match (o.start, o.duration) {
                    (Offset::Fraction(a), Offset::Fraction(b)) => a + b,
                    _ => 0.0,
                };
                if frac_sum > 1.0 + 1e-9 {
                    bail!(
                        "services.{kind}.outages[{i}] ends after the run (start + duration > 100%)"
                    );
                }
            }
        }
        Ok(())
    }

    /// The behaviour of `kind` (a fast healthy default when the file leaves it out).
    pub fn service(&self, kind: ServiceKind) -> ServiceSpec {
        self.services.get(&kind).cloned().unwrap_or_default()
    }

    /// The caller's per-call timeout, scaled.
    pub fn call_timeout(&self) -> Duration {
        self.workload.call_timeout.mul_f64(self.time_scale)
    }

    /// Every outage window of every service, resolved for a run of `run` length.
    pub fn outage_windows(&self, run: Duration) -> Vec<OutageWindow> {
        let mut out = Vec::new();
        for (&service, spec) in &self.services {
            for o in &spec.outages {
                let start = o.start.resolve(run, self.time_scale);
                let end = start + o.duration.resolve(run, self.time_scale);
                out.push(OutageWindow {
                    service,
                    start,
                    end,
                    mode: o.mode,
                });
            }
        }
        out.sort_by_key(|w| w.start);
        out
    }
}

impl ServiceSpec {
    /// The latency distribution, multiplied by `time_scale`.
    pub fn latency_dist(&self, time_scale: f64) -> Result<LogNormal> {
        Ok(LogNormal::from_mean_p99(self.latency.mean, self.latency.p99)?.scaled(time_scale))
    }
}

fn one() -> f64 {
    1.0
}

fn default_payload() -> usize {
    256
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_erp_peak_mirrors_the_seed() {
        let s = Scenario::builtin("erp-peak").unwrap();
        assert_eq!(s.name, "erp-peak");
        assert_eq!(s.services.len(), 7, "all seven services are described");
        let chain: Duration = [
            ServiceKind::Inventory,
            ServiceKind::Supplier,
            ServiceKind::Fulfillment,
            ServiceKind::Analytics,
        ]
        .iter()
        .map(|k| s.service(*k).latency.mean)
        .sum();
        assert!(
            (chain.as_secs_f64() - 4.2).abs() < 0.05,
            "synchronous chain averages ~4.2 s, got {chain:?}"
        );
        let supplier = s.service(ServiceKind::Supplier);
        assert!(supplier.payload_bytes >= 4096, "supplier metadata is large");
        assert!((supplier.failure_rate - 0.05).abs() < 1e-9);
        let run = Duration::from_secs(100);
        let w = s.outage_windows(run);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].service, ServiceKind::Fulfillment);
        assert_eq!(w[0].start, Duration::from_secs(20));
        assert_eq!(w[0].end, Duration::from_secs(45));
        assert!(w[0].contains(Duration::from_secs(30)));
        assert!(!w[0].contains(Duration::from_secs(45)));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let bad = "name: x\nservices: {}\nbogus: 1\n";
        assert!(Scenario::from_yaml(bad).is_err());
        let bad_service = "name: x\nservices:\n  crm:\n    latency: {mean: 1ms, p99: 2ms}\n";
        assert!(Scenario::from_yaml(bad_service).is_err());
        let bad_inner =
            "name: x\nservices:\n  order:\n    latency: {mean: 1ms, p99: 2ms}\n    colour: red\n";
        assert!(Scenario::from_yaml(bad_inner).is_err());
    }

    #[test]
    fn invalid_numbers_are_rejected() {
        let rate = "name: x\nservices:\n  order:\n    latency: {mean: 1ms, p99: 2ms}\n    failure_rate: 1.5\n";
        assert!(Scenario::from_yaml(rate).is_err());
        let lat = "name: x\nservices:\n  order:\n    latency: {mean: 5ms, p99: 2ms}\n";
        assert!(Scenario::from_yaml(lat).is_err());
        let win = "name: x\nservices:\n  order:\n    latency: {mean: 1ms, p99: 2ms}\n    outages: [{start: 80%, duration: 30%}]\n";
        assert!(Scenario::from_yaml(win).is_err());
        assert!(Scenario::builtin("nope").is_err());
    }

    #[test]
    fn absolute_offsets_scale_and_json_parses() {
        let json = r#"{"name":"j","time_scale":0.5,"services":{"payment":{"latency":{"mean":"10ms","p99":"40ms"},"outages":[{"start":"10s","duration":"4s","mode":"hang"}]}}}"#;
        let s = Scenario::from_yaml(json).unwrap();
        let w = s.outage_windows(Duration::from_secs(1000));
        assert_eq!(w[0].start, Duration::from_secs(5));
        assert_eq!(w[0].end, Duration::from_secs(7));
        assert_eq!(w[0].mode, OutageMode::Hang);
        // Missing services fall back to a healthy default.
        assert_eq!(s.service(ServiceKind::Order).failure_rate, 0.0);
        assert_eq!(s.call_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn from_file_reads_and_reports_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.yaml");
        std::fs::write(&p, "name: f\nservices: {}\n").unwrap();
        assert_eq!(Scenario::from_file(&p).unwrap().name, "f");
        assert_eq!(Scenario::load(p.to_str().unwrap()).unwrap().name, "f");
        let err = Scenario::from_file(dir.path().join("missing.yaml")).unwrap_err();
        assert!(format!("{err:#}").contains("missing.yaml"));
    }
}
