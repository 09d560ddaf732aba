//! The live side of `junction analyze`: the recorder the data plane feeds
//! when `analyze.enabled` is on, and the report `GET /admin/recommendations`
//! serves. The rules themselves live in the `junction-analyze` crate, shared
//! with the offline `junction analyze --access-log`.

use crate::config::AnalyzeConfig;
use junction_analyze::{Known, Recorder, Report, Sample, Settings};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Recording for recommendations, carried across reloads.
pub struct Analysis {
    enabled: AtomicBool,
    sample_every: AtomicU32,
    sampled: AtomicU64,
    /// The config the recorder was built for (a change of window or key
    /// budget starts it afresh).
    built_for: Mutex<Option<(std::time::Duration, usize)>>,
    recorder: Mutex<Recorder>,
}

impl Default for Analysis {
    fn default() -> Self {
        Self::new()
    }
}

impl Analysis {
    /// Off, until a config turns it on.
    pub fn new() -> Self {
        Self {
            enabled: AtomicBool::new(false),
            sample_every: AtomicU32::new(0),
            sampled: AtomicU64::new(0),
            built_for: Mutex::new(None),
            recorder: Mutex::new(Recorder::new(Settings::default())),
        }
    }

    /// Applies the `analyze` section (at start and on every reload).
    pub fn configure(&self, cfg: &AnalyzeConfig) {
        self.enabled.store(cfg.enabled, Ordering::Relaxed);
        self.sample_every.store(cfg.sample_every, Ordering::Relaxed);
        let wanted = (cfg.window.0, cfg.max_keys);
        let mut built = self.built_for.lock();
        if *built != Some(wanted) {
            *self.recorder.lock() = Recorder::new(Settings {
                window: Some(cfg.window.0),
                max_keys: cfg.max_keys,
                ..Settings::default()
            });
            *built = Some(wanted);
        }
    }

    /// Whether requests are being recorded.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Whether this JSON response should have its fields measured.
    pub fn sample_fields(&self) -> bool {
        let every = self.sample_every.load(Ordering::Relaxed);
        every > 0
            && self
                .sampled
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(every))
    }

    /// Folds one exchange in.
    pub fn record(&self, sample: &Sample) {
        self.recorder.lock().record(sample);
    }

    /// The recommendations now, given what the config already does.
    pub fn report(&self, known: &Known) -> Report {
        let mut report = junction_analyze::report(&self.recorder.lock(), known, "live");
        if !self.enabled() {
            report.limitations.insert(
                0,
                "analyze.enabled is false: nothing is being recorded (set it to true to observe traffic)".to_owned(),
            );
        }
        report
    }
}
