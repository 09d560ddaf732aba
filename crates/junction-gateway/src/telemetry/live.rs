//! Live numbers behind the dashboard and `junction top`: rolling statistics per
//! route, upstream and subscriber, and the dependency graph of who calls whom.
//!
//! Prometheus counters answer "how many since start"; these answer "what is
//! happening now" (rate, p50/p99 and error ratio over the last 30 s).

use junction_telemetry::graph::node_id;
use junction_telemetry::{DependencyGraph, EdgeKind, NodeKind, RouteStats, StatsRegistry};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rolling stats and the dependency graph, shared by the data plane, the dispatcher and the admin API.
pub struct Live {
    /// Per route.
    pub routes: StatsRegistry,
    /// Per upstream (calls that reached it).
    pub upstreams: StatsRegistry,
    /// Who calls whom.
    pub graph: DependencyGraph,
    /// Per subscriber: counters and stats for the overview.
    pub subscribers: parking_lot::RwLock<Vec<Arc<SubscriberLive>>>,
    /// Recording for recommendations (`analyze`).
    pub analysis: super::analysis::Analysis,
    started: Instant,
}

/// What the overview shows of one subscriber.
pub struct SubscriberLive {
    /// Subscriber name.
    pub name: String,
    /// Its topic.
    pub topic: String,
    /// Graph node ids, computed once.
    pub topic_node: String,
    /// Graph node id of the subscriber.
    pub node: String,
    /// Deliveries acknowledged since start.
    pub delivered: AtomicU64,
    /// Deliveries dead-lettered since start.
    pub dead: AtomicU64,
    /// Deliveries waiting for another attempt (as seen by this process).
    pub retrying: AtomicI64,
    /// Enqueue time (unix ms) of the message most recently handed to the subscriber: the delivery lag.
    pub last_enqueued_ms: AtomicU64,
    /// Attempt latency and errors.
    pub stats: Arc<RouteStats>,
    /// Paused by its upstream's open breaker.
    paused: AtomicBool,
    /// Failing past `disable_after`.
    disabled: AtomicBool,
    /// Deliveries waiting for the rate limit now.
    rate_waiting: AtomicU32,
}

/// Whether a subscriber is delivering, and if not, why (the dashboard and
/// `junction top` show it instead of a bare "retrying" count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriberState {
    /// Taking and sending deliveries (or idle with nothing to send).
    Delivering,
    /// Its upstream's breaker is open: nothing is sent until the next probe.
    Paused,
    /// Failing for longer than `disable_after`: deliveries are dead-lettered unsent.
    Disabled,
    /// Waiting for its `rate` limit.
    RateLimited,
}

impl SubscriberState {
    /// Every state, for gauges that show one of them.
    pub const ALL: [Self; 4] = [
        Self::Delivering,
        Self::Paused,
        Self::Disabled,
        Self::RateLimited,
    ];

    /// The name the admin API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivering => "delivering",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    /// Empty numbers, uptime counted from now.
    pub fn new() -> Self {
        Self {
            routes: StatsRegistry::new(),
            upstreams: StatsRegistry::new(),
            graph: DependencyGraph::new(),
            subscribers: Default::default(),
            analysis: Default::default(),
            started: Instant::now(),
        }
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Registers a subscriber of `topic` and returns its live handle.
    pub fn subscriber(&self, topic: &str, name: &str) -> Arc<SubscriberLive> {
        let s = Arc::new(SubscriberLive {
            name: name.to_string(),
            topic: topic.to_string(),
            topic_node: node_id(NodeKind::Topic, topic),
            node: node_id(NodeKind::Subscriber, name),
            delivered: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            retrying: AtomicI64::new(0),
            last_enqueued_ms: AtomicU64::new(0),
            stats: Arc::new(RouteStats::with_history(
                junction_telemetry::stats::DEFAULT_WINDOW,
                tokio::time::Instant::now(),
            )),
            paused: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            rate_waiting: AtomicU32::new(0),
        });
        self.subscribers.write().push(s.clone());
        s
    }

    /// The subscribers of the running configuration (see [`Live::retain_subscribers`]).
    pub fn current_subscribers(&self) -> Vec<Arc<SubscriberLive>> {
        self.subscribers.read().clone()
    }

    /// After a reload: keeps the subscribers `keep` names (topic, name), the latest
    /// handle of each, so removed ones leave the views and the gauges.
    pub fn retain_subscribers(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut all = self.subscribers.write();
        let mut out: Vec<Arc<SubscriberLive>> = Vec::with_capacity(all.len());
        for s in all.iter().rev() {
            let seen = out.iter().any(|o| o.name == s.name && o.topic == s.topic);
            if !seen && keep(&s.topic, &s.name) {
                out.push(Arc::clone(s));
            }
        }
        out.reverse();
        *all = out;
    }

    /// Records one delivery attempt on the topic → subscriber edge.
    pub fn delivery(&self, s: &SubscriberLive, latency: Duration, failed: bool, retried: bool) {
        s.stats.record(latency, failed);
        self.graph.record_ref(
            &s.topic_node,
            &s.node,
            EdgeKind::Async,
            latency,
            failed,
            retried,
        );
    }
}

impl SubscriberLive {
    /// Whether it is delivering, and if not, why: the strongest reason wins
    /// (paused, then disabled, then rate-limited), each tracked on its own so
    /// one ending does not hide another.
    pub fn state(&self) -> SubscriberState {
        if self.paused.load(Ordering::Relaxed) {
            SubscriberState::Paused
        } else if self.disabled.load(Ordering::Relaxed) {
            SubscriberState::Disabled
        } else if self.rate_waiting.load(Ordering::Relaxed) > 0 {
            SubscriberState::RateLimited
        } else {
            SubscriberState::Delivering
        }
    }

    /// How old the event it is on is, while it has a backlog (`None` when none
    /// waits, the backend does not count it, or it has taken none since start). Deliveries are
    /// taken oldest first, so this is the age of its oldest waiting event within
    /// the few in flight.
    pub fn oldest_age_ms(&self, backlog: Option<u64>, now_ms: u64) -> Option<u64> {
        if backlog.unwrap_or(0) == 0 {
            return None;
        }
        let taken = self.last_enqueued_ms.load(Ordering::Relaxed);
        (taken > 0).then(|| now_ms.saturating_sub(taken))
    }

    /// Its upstream's breaker opened (`true`) or closed.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// It is failing past `disable_after` (`true`), or delivered again.
    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }

    /// A delivery waits for the rate limit until the guard is dropped (also
    /// when the wait is cancelled).
    pub fn rate_waiting(&self) -> RateWait<'_> {
        self.rate_waiting.fetch_add(1, Ordering::Relaxed);
        RateWait(self)
    }

    /// A delivery will be tried again (counted once per delivery).
    pub fn retry_scheduled(&self, previous_attempts: u32) {
        if previous_attempts == 0 {
            self.retrying.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A delivery reached a final state.
    pub fn finished(&self, previous_attempts: u32, delivered: bool) {
        if previous_attempts > 0 {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
        }
        let counter = if delivered {
            &self.delivered
        } else {
            &self.dead
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// See [`SubscriberLive::rate_waiting`].
pub struct RateWait<'a>(&'a SubscriberLive);

impl Drop for RateWait<'_> {
    fn drop(&mut self) {
        self.0.rate_waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One client connection: its address, and its graph node, worked out once per
/// connection rather than per request.
#[derive(Clone, Debug)]
pub struct Client {
    /// The peer address.
    pub addr: SocketAddr,
    /// The caller node of requests without a caller header.
    pub node: Arc<str>,
    /// The address as an `X-Forwarded-For` entry (formatted once per connection).
    pub ip: http::HeaderValue,
}

impl Client {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_string();
        Self {
            addr,
            node: node_id(NodeKind::Caller, &ip).into(),
            ip: http::HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
        }
    }

    /// The graph node of the system that sent a request: the caller header's value,
    /// else the client address.
    pub fn caller_node<'a>(&'a self, header_value: Option<&str>) -> Cow<'a, str> {
        match header_value.filter(|v| !v.is_empty()) {
            Some(v) => Cow::Owned(node_id(NodeKind::Caller, v)),
            None => Cow::Borrowed(&self.node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_leaves_one_handle_per_running_subscriber() {
        let live = Live::new();
        let old = live.subscriber("orders", "fulfillment");
        live.subscriber("orders", "gone");
        let new = live.subscriber("orders", "fulfillment");
        live.retain_subscribers(|_, name| name != "gone");
        let now = live.current_subscribers();
        assert_eq!(now.len(), 1);
        assert!(Arc::ptr_eq(&now[0], &new) && !Arc::ptr_eq(&now[0], &old));
    }

    #[test]
    fn the_oldest_age_shows_only_while_a_backlog_waits() {
        let live = Live::new();
        let s = live.subscriber("orders", "fulfillment");
        assert_eq!(s.oldest_age_ms(Some(5), 10_000), None, "took none yet");
        s.last_enqueued_ms.store(4_000, Ordering::Relaxed);
        assert_eq!(s.oldest_age_ms(Some(5), 10_000), Some(6_000));
        assert_eq!(s.oldest_age_ms(Some(0), 10_000), None);
        assert_eq!(s.oldest_age_ms(None, 10_000), None, "not counted");
    }

    #[test]
    fn the_strongest_reason_not_to_deliver_is_shown() {
        let live = Live::new();
        let s = live.subscriber("orders", "fulfillment");
        assert_eq!(s.state(), SubscriberState::Delivering);
        let waiting = s.rate_waiting();
        assert_eq!(s.state(), SubscriberState::RateLimited);
        s.set_paused(true);
        assert_eq!(s.state(), SubscriberState::Paused);
        // A rate wait ending does not hide the pause.
        drop(waiting);
        assert_eq!(s.state(), SubscriberState::Paused);
        s.set_paused(false);
        s.set_disabled(true);
        assert_eq!(s.state(), SubscriberState::Disabled);
        s.set_disabled(false);
        assert_eq!(s.state(), SubscriberState::Delivering);
    }

    #[test]
    fn the_caller_header_names_the_node_else_the_client_address() {
        let client = Client::new("10.1.2.3:4567".parse().unwrap());
        let by_addr = node_id(NodeKind::Caller, "10.1.2.3");
        assert_eq!(client.caller_node(None), by_addr);
        assert_eq!(client.caller_node(Some("")), by_addr);
        assert_eq!(
            client.caller_node(Some("erp")),
            node_id(NodeKind::Caller, "erp")
        );
    }
}
