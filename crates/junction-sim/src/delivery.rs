//! "Events delivered eventually": the at-least-once check of the Junction run.
//!
//! Junction answers 202 once an order event is durable and delivers it to
//! fulfillment and analytics itself, retrying through the fulfillment outage.
//! [`wait_for_delivery`] waits, bounded, until every order the run got
//! accepted has reached both subscribers (the services' receipt sets), and
//! reports how long the backlog took to clear after the outage ended, how late
//! the last delivery came, and how many duplicates arrived.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::driver::{progress_bar, RunResult};
use crate::scenario::ServiceKind;
use crate::services::SimCluster;

const SUBSCRIBERS: [ServiceKind; 2] = [ServiceKind::Fulfillment, ServiceKind::Analytics];

/// Whether every accepted order reached fulfillment and analytics.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// Orders Junction accepted.
    pub accepted: usize,
    /// Of those, how many fulfillment received.
    pub fulfillment_received: usize,
    /// Of those, how many analytics received.
    pub analytics_received: usize,
    /// Deliveries beyond the first (at-least-once duplicates), both subscribers.
    pub duplicates: u64,
    /// Whether every accepted order reached both.
    pub complete: bool,
    /// How long the check waited after the run (until complete or giving up).
    pub waited: Duration,
    /// Orders accepted before the last outage ended: when the last of them had
    /// reached both subscribers, counted from the outage's end (zero if before).
    /// None without an outage, without such orders, or if incomplete.
    pub backlog_cleared_after_outage: Option<Duration>,
    /// When the last accepted order had reached both subscribers, counted from
    /// the end of the run's load (zero if before). None if incomplete.
    pub last_delivery_after_run: Option<Duration>,
}

/// When the last of `ids` had reached every subscriber (None if one has not).
fn all_received_at(cluster: &SimCluster, ids: &[&str]) -> Option<Instant> {
    SUBSCRIBERS
        .iter()
        .map(|k| cluster.last_first_receipt(*k, ids.iter().copied()))
        .collect::<Option<Vec<Instant>>>()?
        .into_iter()
        .max()
}

/// Waits, at most `timeout`, until every order `run` got accepted has reached
/// both fulfillment and analytics.
pub async fn wait_for_delivery(
    cluster: &SimCluster,
    run: &RunResult,
    timeout: Duration,
    progress: bool,
) -> DeliveryReport {
    let ids = run.accepted_ids();
    let pb = progress_bar(2 * ids.len() as u64, "delivery", progress);
    let waited_from = Instant::now();
    let deadline = waited_from + timeout;
    let (mut f_missing, mut a_missing);
    loop {
        f_missing = cluster.missing_receipts(ServiceKind::Fulfillment, ids.iter().copied());
        a_missing = cluster.missing_receipts(ServiceKind::Analytics, ids.iter().copied());
        pb.set_position((2 * ids.len() - f_missing - a_missing) as u64);
        if f_missing + a_missing == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pb.finish_and_clear();
    let complete = f_missing + a_missing == 0;
    let waited = waited_from.elapsed();

    let outage_end = run.outages.iter().map(|w| w.end).max();
    let backlog_cleared_after_outage = outage_end.and_then(|end| {
        let backlog: Vec<&str> = run
            .records
            .iter()
            .filter(|r| r.accepted && r.start + r.latency <= end)
            .map(|r| r.order_id.as_str())
            .collect();
        if backlog.is_empty() || !complete {
            return None;
        }
        let at = all_received_at(cluster, &backlog)?;
        Some(at.saturating_duration_since(run.started + end))
    });
    let last_delivery_after_run = complete
        .then(|| all_received_at(cluster, &ids))
        .flatten()
        .map(|at| at.saturating_duration_since(run.started + run.duration));
    let duplicates = SUBSCRIBERS
        .iter()
        .map(|k| {
            let r = cluster.receipts(*k);
            ids.iter()
                .map(|id| u64::from(r.get(*id).copied().unwrap_or(0).saturating_sub(1)))
                .sum::<u64>()
        })
        .sum();
    DeliveryReport {
        accepted: ids.len(),
        fulfillment_received: ids.len() - f_missing,
        analytics_received: ids.len() - a_missing,
        duplicates,
        complete,
        waited,
        backlog_cleared_after_outage,
        last_delivery_after_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{Path, TxRecord};
    use crate::scenario::{OutageMode, OutageWindow, Scenario};
    use serde_json::json;

    fn record(id: &str, start_ms: u64, accepted: bool) -> TxRecord {
        TxRecord {
            order_id: id.into(),
            start: Duration::from_millis(start_ms),
            latency: Duration::from_millis(5),
            ok: accepted,
            error: None,
            accepted,
            bytes_received: 0,
            lookups: 2,
        }
    }

    #[tokio::test]
    async fn waits_for_both_subscribers_and_times_the_backlog() {
        let s = Scenario::from_yaml("name: d\nservices: {}\n").unwrap();
        let cluster = SimCluster::start(&s).await.unwrap();
        let run = RunResult {
            path: Path::Junction {
                gateway: "127.0.0.1:1".parse().unwrap(),
            },
            started: Instant::now(),
            duration: Duration::from_millis(200),
            wall: Duration::from_millis(210),
            records: vec![
                record("a", 0, true),
                record("b", 150, true),
                record("c", 20, false),
            ],
            service_stats: Default::default(),
            outages: vec![OutageWindow {
                service: ServiceKind::Fulfillment,
                start: Duration::ZERO,
                end: Duration::from_millis(100),
                mode: OutageMode::Unavailable,
            }],
        };
        let c = reqwest::Client::new();
        let post = |kind: ServiceKind, path: &str, id: &str| {
            c.post(format!("{}{path}", cluster.url(kind)))
                .json(&json!({"orderId": id}))
                .send()
        };
        // Analytics gets everything at once; fulfillment only "a", after the outage.
        for id in ["a", "b"] {
            let r = post(ServiceKind::Analytics, "/events", id).await.unwrap();
            assert!(r.status().is_success());
        }
        tokio::time::sleep_until((run.started + Duration::from_millis(130)).into()).await;
        let r = post(ServiceKind::Fulfillment, "/orders", "a")
            .await
            .unwrap();
        assert!(r.status().is_success());
        let d = wait_for_delivery(&cluster, &run, Duration::from_millis(120), false).await;
        assert!(!d.complete);
        assert_eq!(
            (d.accepted, d.fulfillment_received, d.analytics_received),
            (2, 1, 2)
        );
        assert!(d.waited >= Duration::from_millis(120));
        assert_eq!(d.backlog_cleared_after_outage, None);
        assert_eq!(d.last_delivery_after_run, None);

        // "b" arrives (twice: at least once), now complete.
        for _ in 0..2 {
            let r = post(ServiceKind::Fulfillment, "/orders", "b")
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        let d = wait_for_delivery(&cluster, &run, Duration::from_secs(5), false).await;
        assert!(d.complete);
        assert_eq!(d.duplicates, 1);
        // The backlog is "a" (accepted at 5 ms, before the outage ended at
        // 100 ms), which reached fulfillment at >= 130 ms.
        let backlog = d.backlog_cleared_after_outage.unwrap();
        assert!(backlog >= Duration::from_millis(29), "{backlog:?}");
        // "b" came >= 250 ms after the start of a 200 ms run.
        let last = d.last_delivery_after_run.unwrap();
        assert!(last >= Duration::from_millis(49), "{last:?}");
        assert!(last <= run.started.elapsed());
    }
}
