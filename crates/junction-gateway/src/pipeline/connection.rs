//! Watches whether the queue backend can confirm work: `junction_queue_connected{backend}`
//! (1 or 0) and one log line per change, so an outage is seen once, not per request.

use junction_queue::Queue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// How often the backend is checked.
const PERIOD: Duration = Duration::from_secs(1);
/// Bound on one check.
const PROBE: Duration = Duration::from_secs(2);

/// Labels `{backend}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

/// Registers the gauge and checks the backend every second until `stop`.
pub fn watch(queue: Queue, metrics: &Metrics, stop: CancellationToken) {
    let family = Family::<BackendLabel, Gauge>::default();
    metrics.register(
        "junction_queue_connected",
        "1 while the queue backend answers (new events are accepted), else 0",
        family.clone(),
    );
    let gauge = family
        .get_or_create(&BackendLabel {
            backend: queue.backend.to_owned(),
        })
        .clone();
    gauge.set(1); // it answered at start, or the gateway would not have started
    tokio::spawn(async move {
        let mut connected = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = stop.cancelled() => return,
            }
            let now = matches!(
                tokio::time::timeout(PROBE, queue.publisher.health()).await,
                Ok(Ok(()))
            );
            gauge.set(i64::from(now));
            if now != connected {
                if now {
                    tracing::info!(
                        backend = queue.backend,
                        "queue backend reachable again; accepting events"
                    );
                } else {
                    tracing::error!(
                        backend = queue.backend,
                        "queue backend unreachable; new events get 503 until it is back"
                    );
                }
                connected = now;
            }
        }
    });
}
