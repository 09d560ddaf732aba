//! SQS visibility on a real SQS server: a delivery being worked on longer
//! than the queue's visibility timeout is not given to a second instance,
//! and one its instance dropped comes back after the timeout.

use std::time::{Duration, Instant};

use junction_queue::conformance::queue::unique;
use junction_queue::conformance::request;
use junction_queue::{Consumer as _, EnqueueOutcome, Publisher as _, SqsBroker, Subscription};

use crate::support::{attempt, sqs_config, DeleteSqs};

/// Everything `sub` receives within `window`.
async fn receive_for(sub: &mut Box<dyn Subscription>, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while Instant::now() < end {
        for d in sub.next(10).await.expect("receive") {
            got.push(d.message.id.to_string());
            d.ack(attempt("status 200")).await.unwrap();
        }
    }
    got
}

/// Two instances of one SQS prefix (competing on the same queues).
struct Pair {
    a: std::sync::Arc<SqsBroker>,
    b: std::sync::Arc<SqsBroker>,
    _cleanup: DeleteSqs,
}

/// Two instances with a 2 s visibility timeout, and a fresh topic and subscriber.
async fn two_instances() -> (Pair, String, String) {
    let mut cfg = sqs_config(false);
    cfg.visibility_timeout = Duration::from_secs(2);
    let a = SqsBroker::connect(cfg.clone()).await.expect("sqs server");
    let b = SqsBroker::connect(cfg.clone()).await.expect("sqs server");
    let (topic, sub) = (unique("vis"), unique("s"));
    (
        Pair {
            a,
            b,
            _cleanup: DeleteSqs(cfg),
        },
        topic,
        sub,
    )
}

async fn publish_one(b: &SqsBroker, topic: &str, sub: &str) {
    match b.publish(request(topic, &[sub], "slow")).await.unwrap() {
        EnqueueOutcome::Accepted(_) => {}
        other => panic!("{other:?}"),
    }
}

async fn receive_one(sub: &mut Box<dyn Subscription>) -> junction_queue::Delivery {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = sub.next(1).await.unwrap();
        if let Some(d) = got.pop() {
            return d;
        }
        assert!(Instant::now() < end, "nothing received within 10 s");
    }
}

#[tokio::test]
async fn a_delivery_worked_on_past_the_visibility_timeout_is_not_given_out_again() {
    let (q, topic, sub) = two_instances().await;
    let mut lane_a = q.a.subscribe(&topic, &sub, 10).await.unwrap();
    let mut lane_b = q.b.subscribe(&topic, &sub, 10).await.unwrap();
    publish_one(&q.a, &topic, &sub).await;
    let d = receive_one(&mut lane_a).await;
    // Three timeouts while A still works on it: B must not get it.
    let stolen = receive_for(&mut lane_b, Duration::from_secs(6)).await;
    assert!(
        stolen.is_empty(),
        "given out again while in flight: {stolen:?}"
    );
    d.ack(attempt("status 200")).await.unwrap();
    let later = receive_for(&mut lane_b, Duration::from_secs(3)).await;
    assert!(later.is_empty(), "given out again after the ack: {later:?}");
}

#[tokio::test]
async fn a_delivery_dropped_unsettled_comes_back_after_the_timeout() {
    let (q, topic, sub) = two_instances().await;
    let mut lane_a = q.a.subscribe(&topic, &sub, 10).await.unwrap();
    let mut lane_b = q.b.subscribe(&topic, &sub, 10).await.unwrap();
    publish_one(&q.a, &topic, &sub).await;
    let d = receive_one(&mut lane_a).await;
    let id = d.message.id.to_string();
    drop(d);
    let back = receive_for(&mut lane_b, Duration::from_secs(8)).await;
    assert_eq!(
        back,
        vec![id],
        "the dropped delivery reaches the other instance"
    );
}
