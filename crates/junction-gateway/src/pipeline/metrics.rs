//! The pipeline's metric families: events accepted and queued per topic,
//! dead letters, and per subscriber the deliveries, their latency from
//! enqueue to acknowledgement, and the attempts they needed.

use crate::telemetry::metrics::{
    MetricSet, SubscriberLabel, SubscriberOutcome, SubscriberStateLabel, TopicLabel,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Registers the pipeline's families.
pub fn register(metrics: &crate::telemetry::Metrics) {
    metrics.set::<PipelineMetrics>();
}

/// The pipeline's families.
#[derive(Clone)]
pub struct PipelineMetrics {
    /// `junction_queue_depth{topic}` (refreshed at scrape time).
    pub queue_depth: Family<TopicLabel, Gauge>,
    /// `junction_dlq_depth{topic}` (refreshed at scrape time).
    pub dlq_depth: Family<TopicLabel, Gauge>,
    /// `junction_subscriber_backlog{subscriber}`: events waiting for it (refreshed
    /// at scrape time, on backends that count it).
    pub subscriber_backlog: Family<SubscriberLabel, Gauge>,
    /// `junction_subscriber_oldest_age_seconds{subscriber}`: age of the event it is
    /// on while it has a backlog (deliveries go oldest first), else 0.
    pub subscriber_oldest_age: Family<SubscriberLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `junction_subscriber_state{subscriber,state}`: 1 for its current state.
    pub subscriber_state: Family<SubscriberStateLabel, Gauge>,
    /// `junction_events_accepted_total{topic}`.
    pub events_accepted: Family<TopicLabel, Counter>,
    /// `junction_deliveries_total{subscriber,outcome}`.
    pub deliveries: Family<SubscriberOutcome, Counter>,
    /// `junction_delivery_latency_seconds{subscriber}`.
    pub delivery_latency: Family<SubscriberLabel, Histogram>,
    /// `junction_delivery_attempts{subscriber}`.
    pub delivery_attempts: Family<SubscriberLabel, Histogram>,
}

fn delivery_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    ])
}

fn attempts_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0])
}

impl MetricSet for PipelineMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self {
            queue_depth: Family::default(),
            dlq_depth: Family::default(),
            subscriber_backlog: Family::default(),
            subscriber_oldest_age: Family::default(),
            subscriber_state: Family::default(),
            events_accepted: Family::default(),
            deliveries: Family::default(),
            delivery_latency: Family::new_with_constructor(delivery_histogram),
            delivery_attempts: Family::new_with_constructor(attempts_histogram),
        };
        r.register(
            "junction_queue_depth",
            "Undelivered messages, by topic",
            m.queue_depth.clone(),
        );
        r.register(
            "junction_dlq_depth",
            "Dead letters, by topic",
            m.dlq_depth.clone(),
        );
        r.register(
            "junction_subscriber_backlog",
            "Events waiting for a subscriber (not yet delivered or dead), by subscriber",
            m.subscriber_backlog.clone(),
        );
        r.register(
            "junction_subscriber_oldest_age_seconds",
            "Age of the event a subscriber with a backlog is on, by subscriber",
            m.subscriber_oldest_age.clone(),
        );
        r.register(
            "junction_subscriber_state",
            "1 for a subscriber's current state (delivering, paused, disabled, rate_limited)",
            m.subscriber_state.clone(),
        );
        r.register(
            "junction_events_accepted",
            "Events accepted (durable), by topic",
            m.events_accepted.clone(),
        );
        r.register(
            "junction_deliveries",
            "Delivery attempts, by subscriber and outcome",
            m.deliveries.clone(),
        );
        r.register(
            "junction_delivery_latency_seconds",
            "Enqueue to acknowledgement, by subscriber",
            m.delivery_latency.clone(),
        );
        r.register(
            "junction_delivery_attempts",
            "Attempts a message needed, by subscriber",
            m.delivery_attempts.clone(),
        );
        m
    }
}
