//! The recorder: folds samples into per-endpoint and per-upstream numbers in
//! bounded memory.
//!
//! What is bounded and how: endpoints (at most [`Settings::max_endpoints`]),
//! the per-key tables behind the cache simulation and duplicate detection
//! (at most [`Settings::max_keys`] keys together; expired keys are swept when
//! full, and keys past the budget are counted as untracked rather than
//! stored), caller traces (at most [`MAX_TRACES`], oldest dropped) and field
//! names ([`MAX_FIELDS`] per endpoint). Keys are stored as 64-bit hashes,
//! never as strings.

use crate::aggregate::{EndpointAgg, Rolling, UpstreamAgg, TTLS_S};
use crate::chains::Traces;
use crate::sample::{template_of, Presence, Sample};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use xxhash_rust::xxh3::Xxh3;

/// Traces kept to find call chains.
pub const MAX_TRACES: usize = 10_000;
/// Field names kept per endpoint (asked for, or sampled in responses).
pub const MAX_FIELDS: usize = 64;
/// Width of the buckets in which error spikes are looked for.
pub const SPIKE_BUCKET_MS: u64 = 10_000;
/// Spike buckets kept per upstream.
const MAX_SPIKE_BUCKETS: usize = 8_640;

/// How much to keep and over which window.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The rolling window; `None` keeps everything (reading a log).
    pub window: Option<Duration>,
    /// Keys tracked at once for the cache simulation and duplicate detection.
    pub max_keys: usize,
    /// Endpoints tracked.
    pub max_endpoints: usize,
    /// A read of a key repeats if the key was answered this recently.
    pub repeat_window: Duration,
    /// A request is a duplicate if the same caller sent it this recently.
    pub duplicate_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            window: Some(Duration::from_secs(600)),
            max_keys: 50_000,
            max_endpoints: 1_000,
            repeat_window: Duration::from_secs(60),
            duplicate_window: Duration::from_secs(5),
        }
    }
}

/// One endpoint: a route (or path template) and a method.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The configured route, when known.
    pub route: Option<String>,
    /// Its path template.
    pub template: String,
    /// The method.
    pub method: String,
    /// The upstream that answered it (the first seen).
    pub upstream: Option<String>,
    agg: Rolling<EndpointAgg>,
    /// Top-level fields callers asked for with `?fields=`, and how often.
    pub fields_asked: BTreeMap<String, u64>,
    /// Requests that sent `?fields=`.
    pub asked_requests: u64,
    /// Top-level fields of sampled JSON responses: (times seen, bytes in total).
    pub field_sizes: BTreeMap<String, (u64, u64)>,
    /// JSON responses sampled for their fields.
    pub field_samples: u64,
}

impl Endpoint {
    /// The numbers over the window.
    pub fn totals(&self) -> EndpointAgg {
        self.agg.total()
    }

    /// `route` or the template: how the endpoint is named in reports.
    pub fn name(&self) -> String {
        match &self.route {
            Some(r) => r.clone(),
            None => self.template.clone(),
        }
    }
}

/// One upstream, with its error ratio per [`SPIKE_BUCKET_MS`].
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its name.
    pub name: String,
    agg: Rolling<UpstreamAgg>,
    /// (bucket start ms, calls, errors), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    window_ms: Option<u64>,
}

impl Upstream {
    /// The numbers over the window.
    pub fn totals(&self) -> UpstreamAgg {
        self.agg.total()
    }

    /// Calls and errors per spike bucket, oldest first.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.buckets.iter().copied()
    }
}

struct CacheKey {
    last_ms: u64,
    body: Option<u64>,
    since_ms: u64,
    stored: [Option<(u64, Option<u64>)>; TTLS_S.len()],
}

/// Everything recorded, behind the recorder's lock.
pub struct Recorder {
    settings: Settings,
    presence: Presence,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
    endpoints: Vec<Endpoint>,
    index: HashMap<(Option<String>, String, String), usize>,
    upstreams: BTreeMap<String, Upstream>,
    cache_keys: HashMap<u64, CacheKey>,
    dup_keys: HashMap<u64, u64>,
    last_sweep_ms: u64,
    untracked_keys: u64,
    untracked_endpoints: u64,
    traces: Traces,
}

impl Recorder {
    /// An empty recorder.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            presence: Presence::default(),
            first_ms: None,
            last_ms: None,
            endpoints: Vec::new(),
            index: HashMap::new(),
            upstreams: BTreeMap::new(),
            cache_keys: HashMap::new(),
            dup_keys: HashMap::new(),
            last_sweep_ms: 0,
            untracked_keys: 0,
            untracked_endpoints: 0,
            traces: Traces::new(MAX_TRACES),
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Which optional fields the samples carried.
    pub fn presence(&self) -> Presence {
        self.presence
    }

    /// First and last sample time (unix ms).
    pub fn span_ms(&self) -> (Option<u64>, Option<u64>) {
        (self.first_ms, self.last_ms)
    }

    /// Every endpoint, in first-seen order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Every upstream, by name.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.upstreams.values()
    }

    /// The caller traces.
    pub fn traces(&self) -> &Traces {
        &self.traces
    }

    /// Keys in the cache and duplicate tables now.
    pub fn tracked_keys(&self) -> usize {
        self.cache_keys.len() + self.dup_keys.len()
    }

    /// Keys not tracked because the tables were full of live keys.
    pub fn untracked_keys(&self) -> u64 {
        self.untracked_keys
    }

    /// Samples of endpoints past `max_endpoints`, not recorded.
    pub fn untracked_endpoints(&self) -> u64 {
        self.untracked_endpoints
    }

    /// An upper bound of the memory its tables hold, in bytes.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let key_tables = self.cache_keys.capacity() * (size_of::<(u64, CacheKey)>() + 1)
            + self.dup_keys.capacity() * (size_of::<(u64, u64)>() + 1);
        let hist = junction_telemetry::Histogram::HEAP_BYTES;
        // Two halves of three histograms per endpoint, one per upstream half.
        let endpoints =
            self.endpoints.len() * (size_of::<Endpoint>() + 6 * hist + 2 * MAX_FIELDS * 48 + 128);
        let upstreams =
            self.upstreams.len() * (size_of::<Upstream>() + 2 * hist + 24 * MAX_SPIKE_BUCKETS);
        key_tables + endpoints + upstreams + self.traces.approx_bytes()
    }

    /// Folds one sample in.
    pub fn record(&mut self, s: &Sample) {
        self.presence.count(s);
        if let Some(t) = s.at_ms {
            self.first_ms = Some(self.first_ms.map_or(t, |f| f.min(t)));
            self.last_ms = Some(self.last_ms.map_or(t, |l| l.max(t)));
        }
        let known_method = crate::sample::METHODS.contains(&s.method.as_str());
        let Some(ei) = known_method.then(|| self.endpoint_index(s)).flatten() else {
            self.untracked_endpoints += 1;
            return;
        };
        if let Some(up) = &s.upstream {
            self.record_upstream(up, s);
        }
        let ekey = endpoint_hash(&self.endpoints[ei]);
        let repeat = self.cache_step(ekey, s);
        let dup = self.duplicate_step(ekey, s);
        let end = s.at_ms.map(|t| t + s.latency_us / 1000);
        if let (Some(trace), Some(start), Some(end)) = (&s.trace, s.at_ms, end) {
            let caller = s.caller.as_deref().unwrap_or("-");
            self.traces.hop(trace, caller, ei, start, end);
        }
        let e = &mut self.endpoints[ei];
        if e.upstream.is_none() {
            e.upstream.clone_from(&s.upstream);
        }
        let asked = s.fields_asked();
        if !asked.is_empty() {
            e.asked_requests += 1;
            for f in asked {
                bump(&mut e.fields_asked, f, |n| *n += 1, 0);
            }
        }
        if let Some(fields) = &s.response_fields {
            e.field_samples += 1;
            for (f, bytes) in fields {
                bump(
                    &mut e.field_sizes,
                    f.clone(),
                    |(n, b)| {
                        *n += 1;
                        *b += bytes;
                    },
                    (0, 0),
                );
            }
        }
        let a = e.agg.at(s.at_ms);
        a.requests += 1;
        a.latency.record(s.latency_us);
        if let Some(status) = s.status {
            a.with_status += 1;
            let ok = (200..300).contains(&status);
            a.ok += u64::from(ok);
            let small = s.response_bytes.is_some_and(|b| b <= 64);
            a.acks += u64::from(matches!(status, 201 | 202 | 204) || (ok && small));
            a.server_errors += u64::from(status >= 500);
            a.client_errors += u64::from((400..500).contains(&status));
        }
        if let Some(b) = s.response_bytes {
            a.bytes.record(b);
            a.bytes_total = a.bytes_total.saturating_add(b);
        }
        a.json += u64::from(s.json == Some(true));
        a.typed += u64::from(s.json.is_some());
        if let Some(r) = repeat {
            a.cache_requests += 1;
            a.repeats += u64::from(r.repeat);
            a.repeats_unverified += u64::from(r.unverified);
            for (o, (hit, stale)) in a.ttl.iter_mut().zip(r.ttl) {
                o.hits += u64::from(hit);
                o.stale += u64::from(stale);
            }
            if let Some(l) = r.lifetime_ms {
                a.lifetimes.record(l);
            }
        }
        if let Some(d) = dup {
            a.dup_checked += 1;
            a.dups += u64::from(d);
        }
    }

    fn endpoint_index(&mut self, s: &Sample) -> Option<usize> {
        // A route whose template is unknown (a log line) is split by the
        // paths' own templates: one route may serve several shapes.
        let template = s.template.clone().unwrap_or_else(|| template_of(&s.path));
        let key = (s.route.clone(), template, s.method.clone());
        if let Some(i) = self.index.get(&key) {
            return Some(*i);
        }
        if self.endpoints.len() >= self.settings.max_endpoints {
            return None;
        }
        let template = key.1.clone();
        let window_ms = self.window_ms();
        self.endpoints.push(Endpoint {
            route: s.route.clone(),
            template,
            method: s.method.clone(),
            upstream: s.upstream.clone(),
            agg: Rolling::new(window_ms),
            fields_asked: BTreeMap::new(),
            asked_requests: 0,
            field_sizes: BTreeMap::new(),
            field_samples: 0,
        });
        self.index.insert(key, self.endpoints.len() - 1);
        Some(self.endpoints.len() - 1)
    }

    fn window_ms(&self) -> Option<u64> {
        self.settings.window.map(|w| w.as_millis() as u64)
    }

    fn record_upstream(&mut self, name: &str, s: &Sample) {
        if !self.upstreams.contains_key(name) && self.upstreams.len() >= self.settings.max_endpoints
        {
            return;
        }
        let window_ms = self.window_ms();
        let u = self
            .upstreams
            .entry(name.to_owned())
            .or_insert_with(|| Upstream {
                name: name.to_owned(),
                agg: Rolling::new(window_ms),
                buckets: VecDeque::new(),
                window_ms,
            });
        let error = s.status.is_some_and(|st| st >= 500);
        let a = u.agg.at(s.at_ms);
        a.requests += 1;
        a.errors += u64::from(error);
        a.timeouts += u64::from(s.status == Some(504));
        a.latency.record(s.latency_us);
        let Some(t) = s.at_ms else { return };
        let bucket = t - t % SPIKE_BUCKET_MS;
        match u.buckets.iter_mut().rev().find(|b| b.0 == bucket) {
            Some(b) => {
                b.1 += 1;
                b.2 += u64::from(error);
            }
            None => {
                let at = u.buckets.partition_point(|b| b.0 < bucket);
                u.buckets.insert(at, (bucket, 1, u64::from(error)));
            }
        }
        let newest = u.buckets.back().map_or(bucket, |b| b.0);
        while let Some(front) = u.buckets.front() {
            let expired = u.window_ms.is_some_and(|w| front.0 + w < newest);
            if expired || u.buckets.len() > MAX_SPIKE_BUCKETS {
                u.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// Makes room for one more key: true when there is (sweeping expired keys
    /// at most once a second of sample time).
    fn room(&mut self, now: u64) -> bool {
        if self.tracked_keys() < self.settings.max_keys {
            return true;
        }
        if now >= self.last_sweep_ms + 1_000 {
            self.last_sweep_ms = now;
            let keep_cache = (TTLS_S[TTLS_S.len() - 1] * 1000)
                .max(self.settings.repeat_window.as_millis() as u64);
            let keep_dup = self.settings.duplicate_window.as_millis() as u64;
            self.cache_keys
                .retain(|_, k| now.saturating_sub(k.last_ms) <= keep_cache);
            self.dup_keys
                .retain(|_, t| now.saturating_sub(*t) <= keep_dup);
        }
        let room = self.tracked_keys() < self.settings.max_keys;
        if !room {
            self.untracked_keys += 1;
        }
        room
    }

    fn cache_step(&mut self, ekey: u64, s: &Sample) -> Option<CacheStep> {
        let now = s.at_ms?;
        if !s.is_read() || s.status.is_some_and(|st| !(200..300).contains(&st)) {
            return None;
        }
        let mut h = Xxh3::with_seed(ekey);
        h.update(s.path.as_bytes());
        h.update(b"?");
        h.update(s.query.as_deref().unwrap_or("").as_bytes());
        let key = h.digest();
        let repeat_ms = self.settings.repeat_window.as_millis() as u64;
        let mut step = CacheStep::default();
        if !self.cache_keys.contains_key(&key) && !self.room(now) {
            // Untracked (counted as such): neither a hit nor a miss.
            return None;
        }
        let k = self.cache_keys.entry(key).or_insert(CacheKey {
            last_ms: now,
            body: s.response_hash,
            since_ms: now,
            stored: [None; TTLS_S.len()],
        });
        let fresh_key = k.stored.iter().all(Option::is_none);
        if !fresh_key && now.saturating_sub(k.last_ms) <= repeat_ms {
            match (k.body, s.response_hash) {
                (Some(a), Some(b)) => step.repeat = a == b,
                _ => step.unverified = true,
            }
        }
        if let (Some(old), Some(new)) = (k.body, s.response_hash) {
            if old != new {
                step.lifetime_ms = Some(now.saturating_sub(k.since_ms));
                k.since_ms = now;
            }
        }
        for (i, ttl_s) in TTLS_S.iter().enumerate() {
            match k.stored[i] {
                Some((at, body)) if now.saturating_sub(at) < ttl_s * 1000 => {
                    let stale = matches!((body, s.response_hash), (Some(a), Some(b)) if a != b);
                    step.ttl[i] = (true, stale);
                }
                _ => k.stored[i] = Some((now, s.response_hash)),
            }
        }
        k.last_ms = now;
        k.body = s.response_hash;
        Some(step)
    }

    /// Whether the same caller sent the same request within the duplicate
    /// window; `None` when it cannot be told (no time, no caller, a write
    /// whose body is unknown).
    fn duplicate_step(&mut self, ekey: u64, s: &Sample) -> Option<bool> {
        let now = s.at_ms?;
        let caller = s.caller.as_deref()?;
        if !s.is_read() && s.request_hash.is_none() {
            return None;
        }
        let mut h = Xxh3::with_seed(ekey ^ 0x9e37_79b9_7f4a_7c15);
        for part in [caller, &s.method, &s.path, s.query.as_deref().unwrap_or("")] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        h.update(&s.request_hash.unwrap_or(0).to_le_bytes());
        let key = h.digest();
        let window = self.settings.duplicate_window.as_millis() as u64;
        if !self.dup_keys.contains_key(&key) && !self.room(now) {
            return None;
        }
        let prev = self.dup_keys.insert(key, now);
        Some(prev.is_some_and(|t| now.saturating_sub(t) <= window))
    }
}

#[derive(Default)]
struct CacheStep {
    repeat: bool,
    unverified: bool,
    ttl: [(bool, bool); TTLS_S.len()],
    lifetime_ms: Option<u64>,
}

fn endpoint_hash(e: &Endpoint) -> u64 {
    let mut h = Xxh3::new();
    for part in [e.route.as_deref().unwrap_or(""), &e.template, &e.method] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    h.digest()
}

/// Updates `map[key]`, inserting `init` first while under [`MAX_FIELDS`] names.
fn bump<V>(map: &mut BTreeMap<String, V>, key: String, f: impl FnOnce(&mut V), init: V) {
    if let Some(v) = map.get_mut(&key) {
        f(v);
    } else if map.len() < MAX_FIELDS {
        f(map.entry(key).or_insert(init));
    }
}

#[cfg(test)]
#[path = "recorder_tests.rs"]
mod tests;
