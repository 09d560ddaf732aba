//! Ordering per key, where a backend declares it: one key's messages reach a
//! subscriber one at a time and in order, across a retry and across the
//! competing consumers of several instances.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::harness::{published, subscribe, take, unique, QueueHarness, WAIT};
use super::{attempt, request};
use crate::types::*;

/// A key whose ordering partition differs from `key`'s, so backends that order
/// by partition (RabbitMQ, NATS) do not hold it up behind `key`.
fn key_in_another_partition(key: &str) -> String {
    let mine = ordering_partition(key, DEFAULT_ORDERING_PARTITIONS);
    (0..)
        .map(|i| format!("other-{i}"))
        .find(|k| ordering_partition(k, DEFAULT_ORDERING_PARTITIONS) != mine)
        .expect("some key lands elsewhere")
}

/// Where declared, one key's messages reach a subscriber one at a time, in order,
/// even across a retry; other keys are not held up.
pub async fn ordering_per_key_one_at_a_time<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    if !q.capabilities.ordering_per_key {
        return;
    }
    let (topic, s) = (unique("t"), unique("s"));
    let mut sub = subscribe(q, &topic, &s).await;
    let keyed = |body: &str, key: &str| {
        let mut r = request(&topic, &[&s], body);
        r.ordering_key = Some(key.to_owned());
        r
    };
    let m1 = published(q, keyed("1", "k")).await;
    let m2 = published(q, keyed("2", "k")).await;
    let other = published(q, keyed("x", &key_in_another_partition("k"))).await;
    let first = take(sub.as_mut(), 2, Duration::from_secs(3)).await;
    let ids: HashSet<_> = first.iter().map(|d| d.message.id.clone()).collect();
    assert!(ids.contains(&m1), "the key's oldest comes first");
    assert!(ids.contains(&other), "another key is not held up");
    assert!(!ids.contains(&m2), "one at a time per key");
    let mut first = first;
    let d1 = first
        .iter()
        .position(|d| d.message.id == m1)
        .map(|i| first.swap_remove(i))
        .unwrap();
    for d in first {
        d.ack(attempt("status 200")).await.unwrap();
    }
    d1.retry(attempt("status 503"), Duration::from_millis(300))
        .await
        .unwrap();
    let next = take(sub.as_mut(), 1, WAIT).await.pop().expect("next");
    assert_eq!(
        next.message.id, m1,
        "a retry keeps its place in the key's order"
    );
    next.ack(attempt("status 200")).await.unwrap();
    let last = take(sub.as_mut(), 1, WAIT).await.pop().expect("last");
    assert_eq!(last.message.id, m2);
    last.ack(attempt("status 200")).await.unwrap();
}

/// Where declared and shared, two consumers of one subscriber (two instances)
/// never hold two messages of one key at once, and each key's messages are
/// delivered in the order published, a retry included.
pub async fn ordering_per_key_across_consumers<F, Fut>(factory: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueHarness>,
{
    let h = factory().await;
    let q = &h.queue;
    if !(q.capabilities.ordering_per_key && q.capabilities.shared) {
        return;
    }
    let (topic, s) = (unique("t"), unique("s"));
    let mut subs = [
        subscribe(q, &topic, &s).await,
        subscribe(q, &topic, &s).await,
    ];
    // An unkeyed event first: subscriptions already running when the topic's
    // first keyed event arrives must pick the keyed ones up too.
    let before = published(q, request(&topic, &[&s], "unkeyed")).await;
    let end = Instant::now() + WAIT;
    let mut first = Vec::new();
    while first.is_empty() && Instant::now() < end {
        for sub in subs.iter_mut() {
            first.extend(sub.next(1).await.expect("subscription"));
        }
    }
    assert_eq!(first.len(), 1, "the unkeyed event, once");
    let d = first.pop().unwrap();
    assert_eq!(d.message.id, before);
    d.ack(attempt("status 200")).await.unwrap();
    const KEYS: usize = 4;
    const PER_KEY: usize = 6;
    // Unkeyed events in between travel beside the keyed ones ("" below).
    let mut sent: HashMap<String, Vec<MessageId>> = HashMap::new();
    for i in 0..PER_KEY {
        for k in 0..KEYS {
            let key = format!("key-{k}");
            let mut r = request(&topic, &[&s], &format!("{key}/{i}"));
            r.ordering_key = Some(key.clone());
            sent.entry(key).or_default().push(published(q, r).await);
        }
        let r = request(&topic, &[&s], &format!("unkeyed/{i}"));
        sent.entry(String::new())
            .or_default()
            .push(published(q, r).await);
    }
    #[derive(Default)]
    struct Seen {
        /// Keys a consumer holds a delivery of right now.
        held: HashMap<String, usize>,
        /// Per key, the ids in the order they were acked.
        acked: HashMap<String, Vec<MessageId>>,
        retried: bool,
        violations: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let end = Instant::now() + WAIT * 2;
    let tasks: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(who, mut sub)| {
            let seen = seen.clone();
            tokio::spawn(async move {
                let done = |s: &Seen| {
                    s.acked.values().map(Vec::len).sum::<usize>() >= (KEYS + 1) * PER_KEY
                };
                while !done(&seen.lock()) && Instant::now() < end {
                    for d in sub.next(4).await.expect("subscription") {
                        let key = d.message.ordering_key.clone().unwrap_or_default();
                        let retry = {
                            let mut s = seen.lock();
                            if key.is_empty() {
                                // Unkeyed: any number at once.
                            } else if let Some(other) = s.held.insert(key.clone(), who) {
                                s.violations.push(format!(
                                    "{key} held by consumers {other} and {who} at once"
                                ));
                            }
                            // The third message of key-0 fails once.
                            let retry = !s.retried
                                && s.acked.get("key-0").map(Vec::len) == Some(2)
                                && key == "key-0";
                            s.retried |= retry;
                            retry
                        };
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        // Let go of the key before settling: the next one may
                        // reach the other consumer as soon as this is settled.
                        seen.lock().held.remove(&key);
                        if retry {
                            d.retry(attempt("status 503"), Duration::from_millis(200))
                                .await
                                .unwrap();
                        } else {
                            let id = d.message.id.clone();
                            d.ack(attempt("status 200")).await.unwrap();
                            seen.lock().acked.entry(key).or_default().push(id);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock();
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert!(seen.retried, "the retry happened");
    for (key, ids) in &sent {
        let mut got = seen.acked.get(key).cloned().unwrap_or_default();
        if key.is_empty() {
            // Unkeyed events have no order to keep.
            got.sort();
            let mut want = ids.clone();
            want.sort();
            assert_eq!(got, want, "unkeyed: delivered once each");
        } else {
            assert_eq!(
                &got, ids,
                "{key}: delivered once each, in the order published"
            );
        }
    }
}
