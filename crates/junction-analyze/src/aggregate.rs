//! The numbers kept per endpoint and per upstream, and the two-half rolling
//! window they live in.
//!
//! Why two halves rather than a ring of slots: a window needs only "recent
//! enough" here, not a sharp edge. Each half covers `window / 2`; when the
//! current half is over, it becomes the previous one and the older one is
//! dropped, so what is reported always spans between half the window and the
//! whole of it, in fixed memory.

use junction_telemetry::Histogram;

/// Cache lifetimes tried when simulating a cache, in seconds.
pub const TTLS_S: [u64; 6] = [1, 5, 10, 30, 60, 300];

/// Something that adds up across the halves of a window.
pub trait Merge: Default + Clone {
    /// Adds `other` into `self`.
    fn merge(&mut self, other: &Self);
}

/// A value over a rolling window of two halves (or one, for ever, offline).
#[derive(Debug, Clone, Default)]
pub struct Rolling<T> {
    half_ms: Option<u64>,
    start_ms: u64,
    current: T,
    previous: T,
}

impl<T: Merge> Rolling<T> {
    /// A window of `window_ms` (`None`: everything, as when reading a log).
    pub fn new(window_ms: Option<u64>) -> Self {
        Self {
            half_ms: window_ms.map(|w| (w / 2).max(1)),
            start_ms: 0,
            current: T::default(),
            previous: T::default(),
        }
    }

    /// The half that `at_ms` falls in, turning the window over when due
    /// (samples without a time go to the current half).
    pub fn at(&mut self, at_ms: Option<u64>) -> &mut T {
        if let (Some(half), Some(now)) = (self.half_ms, at_ms) {
            if self.start_ms == 0 {
                self.start_ms = now;
            } else if now >= self.start_ms + half {
                let halves = (now - self.start_ms) / half;
                self.previous = if halves == 1 {
                    std::mem::take(&mut self.current)
                } else {
                    T::default()
                };
                self.current = T::default();
                self.start_ms += halves * half;
            }
        }
        &mut self.current
    }

    /// Both halves added up.
    pub fn total(&self) -> T {
        let mut t = self.previous.clone();
        t.merge(&self.current);
        t
    }
}

/// A simulated cache of one lifetime: what it would have served.
#[derive(Debug, Clone, Copy, Default)]
pub struct TtlOutcome {
    /// Requests it would have answered.
    pub hits: u64,
    /// Of those, answers whose body had changed meanwhile (stale).
    pub stale: u64,
}

/// Numbers of one endpoint (route + method) over the window.
#[derive(Debug, Clone, Default)]
pub struct EndpointAgg {
    /// Requests seen.
    pub requests: u64,
    /// With a known status.
    pub with_status: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered as an acknowledgement: 201, 202, 204, or a 2xx of at most 64 bytes.
    pub acks: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// Answered 4xx.
    pub client_errors: u64,
    /// Time to answer (µs).
    pub latency: Histogram,
    /// Response sizes (bytes).
    pub bytes: Histogram,
    /// Response bytes in total.
    pub bytes_total: u64,
    /// Responses known to be JSON.
    pub json: u64,
    /// Responses whose content type is known.
    pub typed: u64,
    /// Reads with a time (the cache simulation's requests).
    pub cache_requests: u64,
    /// Reads that found the same body as the key's previous answer within the repeat window.
    pub repeats: u64,
    /// Reads of a key seen within the repeat window, bodies unknown.
    pub repeats_unverified: u64,
    /// One simulated cache per lifetime in [`TTLS_S`].
    pub ttl: [TtlOutcome; TTLS_S.len()],
    /// How long a response body stayed the same before it changed (ms).
    pub lifetimes: Histogram,
    /// Requests checked for an identical one shortly before.
    pub dup_checked: u64,
    /// Identical to one from the same caller shortly before.
    pub dups: u64,
}

impl Merge for EndpointAgg {
    fn merge(&mut self, o: &Self) {
        self.requests += o.requests;
        self.with_status += o.with_status;
        self.ok += o.ok;
        self.acks += o.acks;
        self.server_errors += o.server_errors;
        self.client_errors += o.client_errors;
        self.latency.merge(&o.latency);
        self.bytes.merge(&o.bytes);
        self.bytes_total = self.bytes_total.saturating_add(o.bytes_total);
        self.json += o.json;
        self.typed += o.typed;
        self.cache_requests += o.cache_requests;
        self.repeats += o.repeats;
        self.repeats_unverified += o.repeats_unverified;
        for (a, b) in self.ttl.iter_mut().zip(o.ttl.iter()) {
            a.hits += b.hits;
            a.stale += b.stale;
        }
        self.lifetimes.merge(&o.lifetimes);
        self.dup_checked += o.dup_checked;
        self.dups += o.dups;
    }
}

impl EndpointAgg {
    /// Latency quantile in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency.quantile(q) as f64 / 1000.0
    }
}

/// Numbers of one upstream over the window.
#[derive(Debug, Clone, Default)]
pub struct UpstreamAgg {
    /// Calls seen.
    pub requests: u64,
    /// Answered 5xx (502/503/504 from Junction included).
    pub errors: u64,
    /// Answered 504 (timed out).
    pub timeouts: u64,
    /// Time to answer (µs).
    pub latency: Histogram,
}

impl Merge for UpstreamAgg {
    fn merge(&mut self, o: &Self) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.latency.merge(&o.latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq)]
    struct N(u64);
    impl Merge for N {
        fn merge(&mut self, o: &Self) {
            self.0 += o.0;
        }
    }

    #[test]
    fn the_window_keeps_between_half_and_all_of_it() {
        let mut r = Rolling::<N>::new(Some(10_000));
        r.at(Some(1_000)).0 += 1;
        r.at(Some(5_000)).0 += 1;
        assert_eq!(r.total(), N(2));
        // The next half: the first one is still counted.
        r.at(Some(7_000)).0 += 1;
        assert_eq!(r.total(), N(3));
        // Two halves later: only the latest half is left.
        r.at(Some(12_000)).0 += 1;
        assert_eq!(r.total(), N(2));
        // Long silence: everything older is gone.
        r.at(Some(100_000)).0 += 1;
        assert_eq!(r.total(), N(1));
    }

    #[test]
    fn without_a_window_everything_counts() {
        let mut r = Rolling::<N>::new(None);
        for t in [1, 1_000_000, 9_000_000_000] {
            r.at(Some(t)).0 += 1;
        }
        r.at(None).0 += 1;
        assert_eq!(r.total(), N(4));
    }
}
