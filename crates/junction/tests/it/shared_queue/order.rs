//! Ordering keys through two gateways on one shared queue: each key's events
//! reach the subscriber in the order they were accepted, retries included.

use super::*;

/// Collapses repeats in a row (a retried event is seen once per attempt).
fn collapse(seq: Vec<u64>) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::with_capacity(seq.len());
    for n in seq {
        if out.last() != Some(&n) {
            out.push(n);
        }
    }
    out
}

pub(super) async fn keyed_events_arrive_in_order_across_two_gateways(backend: Backend) {
    if let Backend::Sqs = backend {
        // Order per key on SQS needs a FIFO queue (`fifo: true`); this namespace's is standard.
        return;
    }
    // The first attempts fail: their events retry while later ones of the same key wait.
    let up = FakeUpstream::with(Behavior::FailTimes {
        status: 503,
        times: 3,
        retry_after: None,
    })
    .await;
    let ns = Namespace::new(backend);
    let yaml = format!(
        r#"
queue: {}
upstreams:
  s: {{ url: "{}", timeout: 500ms, breaker: {{ min_requests: 100000 }} }}
routes:
  - name: orders
    match: {{ method: POST, path: /orders }}
    async:
      topic: orders
      subscribers:
        - {{ name: sub-o, upstream: s, path: /hook, concurrency: 8, ordering_key: "json:/key", retry: {{ backoff: 50ms, max_backoff: 100ms }}, max_attempts: 100 }}
"#,
        ns.queue_yaml(&ns.url(None)),
        up.url()
    );
    let gateways = [start(&yaml).await, start(&yaml).await];
    const KEYS: u64 = 4;
    const PER_KEY: u64 = 8;
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            // Each accepted (202) before the next is sent, alternately by either gateway.
            let gw = &gateways[((n + k) % 2) as usize];
            post(gw.data, format!(r#"{{"key":"k{k}","n":{n}}}"#)).await;
        }
    }
    let arrived = |key: u64| -> Vec<u64> {
        up.seen()
            .iter()
            .filter_map(|s| serde_json::from_slice::<serde_json::Value>(&s.body).ok())
            .filter(|v| v["key"] == format!("k{key}"))
            .filter_map(|v| v["n"].as_u64())
            .collect()
    };
    let want: Vec<u64> = (0..PER_KEY).collect();
    eventually(
        "every key's events delivered",
        Duration::from_secs(30),
        || (0..KEYS).all(|k| collapse(arrived(k)).len() >= want.len()),
    )
    .await;
    for k in 0..KEYS {
        assert_eq!(
            collapse(arrived(k)),
            want,
            "k{k}: in the order accepted (attempts as they reached the upstream)"
        );
    }
}
