//! Tests of the direct path against the real simulated services.

use std::time::Duration;

use super::*;
use crate::scenario::Scenario;

/// erp-peak at 1/20 of its times: a ~210 ms chain, outage 20–45% of the run.
async fn direct_run(rate: f64, secs: f64) -> (SimCluster, RunResult) {
    let scenario = Scenario::builtin("erp-peak").unwrap().with_time_scale(0.05);
    let cluster = SimCluster::start(&scenario).await.unwrap();
    let opts = DriverOptions {
        rate,
        duration: Duration::from_secs_f64(secs),
        call_timeout: scenario.call_timeout(),
        progress: false,
    };
    let run = run(&cluster, Path::Direct, &opts).await.unwrap();
    (cluster, run)
}

#[tokio::test]
async fn direct_path_mirrors_the_seed_shape() {
    let (cluster, run) = direct_run(50.0, 2.0).await;
    let n = run.records.len();
    assert_eq!(n, 100);
    // Open loop: starts are on the schedule, whatever the latencies.
    assert_eq!(run.records[10].start, Duration::from_millis(200));
    assert!(run.records.windows(2).all(|w| w[0].start <= w[1].start));

    // The chain's mean is ~210 ms (4.2 s × 0.05) for the transactions that made it;
    // a busy machine adds to it, never takes away.
    let ok: Vec<&TxRecord> = run.records.iter().filter(|r| r.ok).collect();
    let mean_ok = ok.iter().map(|r| r.latency.as_secs_f64()).sum::<f64>() / ok.len() as f64;
    assert!((0.150..0.700).contains(&mean_ok), "mean {mean_ok}");

    // Transactions started 0.4–0.6 s reach fulfillment during its outage (0.4–0.9 s).
    let in_outage: Vec<&TxRecord> = run
        .records
        .iter()
        .filter(|r| r.start >= Duration::from_millis(400) && r.start < Duration::from_millis(600))
        .collect();
    let failed_in = in_outage.iter().filter(|r| !r.ok).count();
    assert!(
        failed_in as f64 >= 0.9 * in_outage.len() as f64,
        "{failed_in}/{}",
        in_outage.len()
    );
    assert!(in_outage
        .iter()
        .filter(|r| !r.ok)
        .any(|r| r.error.as_deref() == Some("fulfillment: 503")));
    // Outside it, vendor failures (~12%) only.
    let late: Vec<&TxRecord> = run
        .records
        .iter()
        .filter(|r| r.start >= Duration::from_millis(1100))
        .collect();
    let late_failed = late.iter().filter(|r| !r.ok).count() as f64 / late.len() as f64;
    assert!(late_failed < 0.35, "late failure rate {late_failed}");
    assert!(run.records.iter().all(|r| !r.accepted));
    // Two lookups, unless inventory failed first.
    for r in &run.records {
        let inventory_failed = r
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("inventory"));
        assert_eq!(r.lookups, if inventory_failed { 1 } else { 2 }, "{r:?}");
    }

    // Each successful transaction reached fulfillment and analytics exactly once.
    let f = cluster.receipts(ServiceKind::Fulfillment);
    let a = cluster.receipts(ServiceKind::Analytics);
    assert_eq!(a.len(), ok.len());
    for r in &ok {
        assert_eq!(f.get(&r.order_id), Some(&1));
        assert_eq!(a.get(&r.order_id), Some(&1));
    }

    // Every transaction called inventory; the caller saw (almost) all bytes sent.
    let stats = &run.service_stats;
    assert_eq!(stats.get(ServiceKind::Inventory).calls, 100);
    assert_eq!(stats.get(ServiceKind::Payment).calls, 0);
    let (got, sent) = (run.bytes_received(), stats.total_bytes_sent());
    assert!(
        got <= sent && got as f64 >= 0.9 * sent as f64,
        "{got} vs {sent}"
    );
    // The supplier document dominates the bytes of a direct transaction.
    assert!(run.bytes_received() / n as u64 > 20_000);
    assert_eq!(run.outages.len(), 1);
    assert_eq!(run.outages[0].start, Duration::from_millis(400));
}

#[tokio::test]
async fn order_ids_are_unique_across_runs() {
    let (cluster, first) = direct_run(50.0, 0.2).await;
    let opts = DriverOptions {
        rate: 50.0,
        duration: Duration::from_millis(200),
        call_timeout: Duration::from_secs(1),
        progress: false,
    };
    let second = run(&cluster, Path::Direct, &opts).await.unwrap();
    assert_eq!(first.records.len(), 10);
    for r in &second.records {
        assert!(first.records.iter().all(|f| f.order_id != r.order_id));
    }
}

#[tokio::test]
async fn bad_options_are_refused() {
    let scenario = Scenario::builtin("erp-peak").unwrap().with_time_scale(0.05);
    let cluster = SimCluster::start(&scenario).await.unwrap();
    let opts = DriverOptions {
        rate: 0.0,
        duration: Duration::from_secs(1),
        call_timeout: Duration::from_secs(1),
        progress: false,
    };
    assert!(run(&cluster, Path::Direct, &opts).await.is_err());
}

#[test]
fn keys_are_zero_padded() {
    assert_eq!(sku_key(7), "sku-0007");
    assert_eq!(supplier_key(12), "sup-012");
    assert_eq!(Path::Direct.label(), "direct");
}
