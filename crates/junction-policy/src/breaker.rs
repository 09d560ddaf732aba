//! Circuit breaker: a small state machine fed by call outcomes, driving a gate.
//!
//! - **Closed**: calls pass; outcomes are counted over a rolling `window`. When at
//!   least `min_requests` calls were seen and the failure ratio reaches
//!   `error_threshold`, the breaker opens.
//! - **Open**: calls are refused at once (no I/O, a lock and a clock read) until
//!   `reset_timeout` has passed since opening.
//! - **Half-open**: at most `half_open_probes` calls are let through at a time. A
//!   successful probe closes the breaker with a fresh window; a failed probe
//!   reopens it for another `reset_timeout`.
//!
//! A permit that is dropped without an outcome (the caller was cancelled) records
//! nothing but frees its probe slot, so a cancelled probe cannot wedge the breaker.

use crate::window::RollingWindow;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Tuning of one circuit breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Failure ratio (0.0..=1.0) over the window at which the breaker opens.
    pub error_threshold: f64,
    /// Calls needed in the window before the ratio is trusted.
    pub min_requests: u64,
    /// Length of the rolling window.
    pub window: Duration,
    /// How long the breaker stays open before letting probes through.
    pub reset_timeout: Duration,
    /// Probes allowed in flight while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            error_threshold: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            reset_timeout: Duration::from_secs(10),
            half_open_probes: 1,
        }
    }
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass and are counted.
    Closed,
    /// Calls are refused until the reset timeout passes.
    Open,
    /// A bounded number of probes decide whether to close or reopen.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `junction_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// Lower-case name used in logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// The refusal returned while the breaker is open (or half-open with all probe slots taken).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("circuit breaker is open; next probe in {retry_in:?}")]
pub struct BreakerOpen {
    /// Time until a probe may be let through.
    pub retry_in: Duration,
}

/// A point-in-time view of a breaker, for the admin API and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// Failures / calls over the window (0 when no calls).
    pub error_ratio: f64,
    /// Calls counted in the window.
    pub calls_in_window: u64,
    /// Failures counted in the window.
    pub failures_in_window: u64,
    /// Time until the next probe is allowed, when open.
    pub next_probe_in: Option<Duration>,
    /// Times this breaker has opened since start.
    pub times_opened: u64,
}

/// A circuit breaker shared by every caller of one upstream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// Told of every transition (`from`, `to`), outside the lock: the owner logs them.
    observer: Option<Observer>,
}

/// Called with `(from, to)` on each state change.
pub type Observer = Box<dyn Fn(BreakerState, BreakerState) + Send + Sync>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// a = successes, b = failures
    window: RollingWindow,
    opened_at: Instant,
    probes_in_flight: u32,
    /// Bumped on every transition so stale permits (issued in an earlier state) are ignored.
    generation: u64,
    times_opened: u64,
}

/// Leave to make one call; report how it went with [`success`](Self::success) or [`failure`](Self::failure).
#[derive(Debug)]
#[must_use = "a permit records nothing unless success() or failure() is called"]
pub struct BreakerPermit {
    breaker: CircuitBreaker,
    generation: u64,
    probe: bool,
    done: bool,
}

// === impl CircuitBreaker ===

impl CircuitBreaker {
    /// A closed breaker with the given tuning.
    pub fn new(config: BreakerConfig) -> Self {
        Self::build(config, None)
    }

    /// A closed breaker that tells `observer` of every transition (once each,
    /// outside its lock), so its owner can log them with a name.
    pub fn observed(
        config: BreakerConfig,
        observer: impl Fn(BreakerState, BreakerState) + Send + Sync + 'static,
    ) -> Self {
        Self::build(config, Some(Box::new(observer)))
    }

    fn build(config: BreakerConfig, observer: Option<Observer>) -> Self {
        let now = Instant::now();
        let inner = Inner {
            state: BreakerState::Closed,
            window: RollingWindow::new(config.window, now),
            opened_at: now,
            probes_in_flight: 0,
            generation: 0,
            times_opened: 0,
        };
        Self {
            shared: Arc::new(Shared {
                config,
                inner: Mutex::new(inner),
                observer,
            }),
        }
    }

    /// The tuning this breaker was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// Asks to make a call. Refuses at once while open.
    pub fn try_acquire(&self) -> Result<BreakerPermit, BreakerOpen> {
        let cfg = &self.shared.config;
        let now = Instant::now();
        let mut inner = self.shared.inner.lock();
        if inner.state == BreakerState::Open {
            let reopen_at = inner.opened_at + cfg.reset_timeout;
            if now < reopen_at {
                return Err(BreakerOpen {
                    retry_in: reopen_at - now,
                });
            }
            let from = inner.transition(BreakerState::HalfOpen, now);
            drop(inner);
            self.observe(from, BreakerState::HalfOpen);
            return self.try_acquire();
        }
        let probe = inner.state == BreakerState::HalfOpen;
        if probe {
            if inner.probes_in_flight >= cfg.half_open_probes.max(1) {
                return Err(BreakerOpen {
                    retry_in: Duration::ZERO,
                });
            }
            inner.probes_in_flight += 1;
        }
        Ok(BreakerPermit {
            breaker: self.clone(),
            generation: inner.generation,
            probe,
            done: false,
        })
    }

    /// Current state (an open breaker whose reset timeout passed still reads open
    /// until the next call asks for a permit).
    pub fn state(&self) -> BreakerState {
        self.shared.inner.lock().state
    }

    /// A view for the admin API.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let cfg = &self.shared.config;
        let now = Instant::now();
        let inner = self.shared.inner.lock();
        let (ok, failed) = inner.window.totals(now);
        let calls = ok + failed;
        let next_probe_in = (inner.state == BreakerState::Open)
            .then(|| (inner.opened_at + cfg.reset_timeout).saturating_duration_since(now));
        BreakerSnapshot {
            state: inner.state,
            error_ratio: if calls == 0 {
                0.0
            } else {
                failed as f64 / calls as f64
            },
            calls_in_window: calls,
            failures_in_window: failed,
            next_probe_in,
            times_opened: inner.times_opened,
        }
    }

    fn record(&self, generation: u64, probe: bool, success: bool) {
        let cfg = &self.shared.config;
        let now = Instant::now();
        let mut inner = self.shared.inner.lock();
        if probe && inner.generation == generation {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
        if inner.generation != generation {
            // The outcome of a call started before the last transition says nothing
            // about the upstream's state now.
            return;
        }
        let to = match inner.state {
            BreakerState::Closed => {
                inner
                    .window
                    .record(now, u64::from(success), u64::from(!success));
                let (ok, failed) = inner.window.totals(now);
                let calls = ok + failed;
                (!success
                    && calls >= cfg.min_requests.max(1)
                    && failed as f64 >= cfg.error_threshold * calls as f64)
                    .then_some(BreakerState::Open)
            }
            BreakerState::HalfOpen if success => Some(BreakerState::Closed),
            BreakerState::HalfOpen => Some(BreakerState::Open),
            BreakerState::Open => None,
        };
        if let Some(to) = to {
            let from = inner.transition(to, now);
            drop(inner);
            self.observe(from, to);
        }
    }

    fn observe(&self, from: BreakerState, to: BreakerState) {
        if let Some(observer) = &self.shared.observer {
            observer(from, to);
        }
    }

    fn release_probe(&self, generation: u64) {
        let mut inner = self.shared.inner.lock();
        if inner.generation == generation {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }
}

impl Inner {
    /// Moves to `to`; returns the state it left.
    fn transition(&mut self, to: BreakerState, now: Instant) -> BreakerState {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.probes_in_flight = 0;
        match to {
            BreakerState::Open => {
                self.opened_at = now;
                self.times_opened += 1;
            }
            BreakerState::Closed => self.window.reset(),
            BreakerState::HalfOpen => {}
        }
        from
    }
}

// === impl BreakerPermit ===

impl BreakerPermit {
    /// The call succeeded.
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(self.generation, self.probe, true);
    }

    /// The call failed (timeout, connection error, or a failure status).
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(self.generation, self.probe, false);
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.release_probe(self.generation);
        }
    }
}

#[cfg(test)]
mod tests;
