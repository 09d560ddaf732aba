//! Embedded-backend behaviour beyond the shared suite: restarts, crashes, group
//! commit under concurrency, retention.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use junction_queue::conformance::{now_ms, request};
use junction_queue::{
    dead_letter_id, DeliveryState, DlqAction, DlqFilter, EmbeddedBroker, EmbeddedConfig,
    EnqueueOutcome, IndexedStore, QueueError,
};

use junction_queue::embedded::DB_FILE;

use crate::support::{attempt, open, open_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_recovers_pending_dlq_ordering_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir, Some(100)).await;
    let id = |o: EnqueueOutcome| o.id().clone();
    let acked = id(b.enqueue(request("t", &["s"], "acked")).await.unwrap());
    let later = id(b.enqueue(request("t", &["s"], "later")).await.unwrap());
    let fan = id(b.enqueue(request("u", &["s", "x"], "fan")).await.unwrap());
    let dead = id(b.enqueue(request("t", &["s"], "dead")).await.unwrap());
    let mut keyed = request("t", &["s"], "k1");
    keyed.ordering_key = Some("k".into());
    let k1 = id(b.enqueue(keyed.clone()).await.unwrap());
    keyed.body = "k2".into();
    let k2 = id(b.enqueue(keyed).await.unwrap());
    let mut idem = request("t", &["x"], "idem");
    idem.idempotency_key = Some("once".into());
    let idem_id = id(b.enqueue(idem.clone()).await.unwrap());

    let now = now_ms();
    let leased = b.lease_due("s", now, 100).await.unwrap();
    assert_eq!(leased.len(), 5, "k2 waits behind k1");
    for d in &leased {
        let mid = &d.message.id;
        if *mid == acked {
            b.ack(d, attempt("status 200")).await.unwrap();
        } else if *mid == later {
            b.retry_later(d, attempt("status 503"), now + 3_600_000)
                .await
                .unwrap();
        } else if *mid == dead {
            b.dead_letter(d, attempt("status 400"), "rejected".into())
                .await
                .unwrap();
        }
    }
    let before = b.depth();
    b.close().await.unwrap();
    assert!(matches!(
        b.enqueue(request("t", &["s"], "late")).await,
        Err(QueueError::Closed)
    ));
    drop(b);

    let b = open(&dir, Some(100)).await;
    assert_eq!(b.depth(), before, "counters survive a restart exactly");
    assert_eq!(b.verify().await.unwrap(), before, "and match the records");
    let again = b.lease_due("s", now_ms(), 100).await.unwrap();
    let got: HashSet<_> = again.iter().map(|d| d.message.id.clone()).collect();
    assert_eq!(
        got,
        HashSet::from([fan.clone(), k1.clone()]),
        "leases are gone after restart"
    );
    let later_d = b.lease_due("s", now + 3_600_000, 100).await.unwrap();
    assert_eq!(
        later_d.iter().map(|d| &d.message.id).collect::<Vec<_>>(),
        vec![&later]
    );
    assert_eq!(later_d[0].attempts, 1);
    let dlq = b.dlq_list(DlqFilter::default(), None, 10).await.unwrap();
    assert_eq!(dlq.items.len(), 1);
    assert_eq!(dlq.items[0].id, dead_letter_id(dead.as_str(), "s"));
    assert_eq!(dlq.items[0].message.body, "dead");
    let st = b.message_status(acked.as_str()).await.unwrap().unwrap();
    assert_eq!(st.subscribers[0].state, DeliveryState::Delivered);
    assert_eq!(
        b.enqueue(idem).await.unwrap(),
        EnqueueOutcome::Duplicate(idem_id)
    );
    let k1_d = again.iter().find(|d| d.message.id == k1).unwrap();
    b.ack(k1_d, attempt("status 200")).await.unwrap();
    let next = b.lease_due("s", now_ms(), 100).await.unwrap();
    assert_eq!(
        next.iter().map(|d| &d.message.id).collect::<Vec<_>>(),
        vec![&k2],
        "ordering is stored state"
    );
    let fresh = b.enqueue(request("t", &["s"], "fresh")).await.unwrap();
    assert!(
        fresh.id().as_str() > k2.as_str(),
        "ids keep increasing after a restart"
    );
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_keeps_every_accepted_message() {
    crash_and_recover(junction_queue::embedded::HOT_MAX_MESSAGES, 40, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_an_overflowing_backlog_keeps_every_message() {
    // 4 messages fit in memory: most of the 30 wait in the journal as overflow.
    crash_and_recover(4, 30, 3).await;
}

/// Enqueues `n` messages to `subs`; returns their ids in order.
async fn enqueue_n(b: &EmbeddedBroker, subs: &[&str], n: usize) -> Vec<junction_queue::MessageId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let o = b
            .enqueue(request("t", subs, &format!("m{i}")))
            .await
            .unwrap();
        ids.push(o.id().clone());
    }
    ids
}

/// Accepts `n` messages, acks up to `acked`, copies the files while the broker
/// still has them open (what a killed process leaves behind: enqueues were synced,
/// acks may or may not be there), reopens the copy and checks that every accepted
/// message is either delivered again or recorded as delivered.
async fn crash_and_recover(hot_max: usize, n: usize, acked: usize) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_with(&dir, None, hot_max).await;
    let accepted = enqueue_n(&b, &["s"], n).await;
    for d in &b.lease_due("s", now_ms(), acked).await.unwrap() {
        b.ack(d, attempt("status 200")).await.unwrap();
    }
    let crashed = tempfile::tempdir().unwrap();
    copy_queue(&dir.path().join("queue"), &crashed.path().join("queue"));
    let c = open_with(&crashed, None, hot_max).await;
    assert_eq!(c.verify().await.unwrap(), c.depth());
    let depth = c.depth().total as usize;
    assert!((n - acked..=n).contains(&depth), "depth {depth}");
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let batch = c.lease_due("s", now_ms(), 100).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for d in &batch {
            seen.insert(d.message.id.clone());
            c.ack(d, attempt("status 200")).await.unwrap();
        }
    }
    for id in &accepted {
        if !seen.contains(id) {
            let st = c.message_status(id.as_str()).await.unwrap();
            let st = st.expect("accepted message survived");
            assert_eq!(st.subscribers[0].state, DeliveryState::Delivered);
        }
    }
    c.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_fsyncs_and_every_one_is_delivered_once() {
    const TASKS: usize = 64;
    const EACH: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir, None).await;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let b = Arc::clone(&b);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let o = b
                    .enqueue(request("load", &["s"], &format!("{t}-{i}")))
                    .await
                    .unwrap();
                ids.push(o.id().clone());
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let total = TASKS * EACH;
    assert_eq!(all.len(), total, "ids are unique");
    assert_eq!(b.depth().total, total as u64);
    let stats = b.commit_stats();
    assert!(
        stats.fsyncs * 4 < total as u64,
        "group commit shares fsyncs: {stats:?}"
    );

    // Four competing consumers of one subscriber: nobody gets a delivery someone holds.
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let b = Arc::clone(&b);
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..(2 * total) {
                let batch = b.lease_due("s", now_ms(), 64).await.unwrap();
                if batch.is_empty() && b.next_due_at("s").await.unwrap().is_none() {
                    break;
                }
                // Ack a whole batch concurrently, as a dispatcher does.
                let acks = batch.iter().map(|d| b.ack(d, attempt("status 200")));
                for res in futures::future::join_all(acks).await {
                    res.unwrap();
                }
                got.extend(batch.iter().map(|d| d.message.id.clone()));
            }
            got
        }));
    }
    let mut delivered = Vec::new();
    for c in consumers {
        delivered.extend(c.await.unwrap());
    }
    let unique: HashSet<_> = delivered.iter().cloned().collect();
    assert_eq!(
        delivered.len(),
        unique.len(),
        "no delivery was leased twice"
    );
    assert_eq!(unique, all);
    assert_eq!(b.depth().total, 0);
    assert_eq!(b.verify().await.unwrap().total, 0);
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_acks_are_recorded_before_close_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir, None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let out = b
            .enqueue(request("t", &["s"], &format!("m{i}")))
            .await
            .unwrap();
        ids.push(out.id().clone());
    }
    let leased = b.lease_due("s", now_ms(), 10).await.unwrap();
    assert_eq!(leased.len(), 3);
    for d in &leased {
        // Returns once queued; the writer may still be lingering for more acks.
        b.ack_queued(d, attempt("status 200")).await.unwrap();
    }
    b.close().await.unwrap();
    drop(b);
    let b = open(&dir, None).await;
    assert_eq!(
        b.depth().total,
        0,
        "every queued ack was recorded before close"
    );
    assert!(b.lease_due("s", now_ms(), 10).await.unwrap().is_empty());
    for id in &ids {
        let st = b
            .message_status(id.as_str())
            .await
            .unwrap()
            .expect("completed record");
        assert_eq!(st.subscribers[0].state, DeliveryState::Delivered);
    }
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_records_past_the_cap_are_pruned_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmbeddedConfig::new(dir.path().join("queue"));
    cfg.max_completed = 2;
    let b: Arc<EmbeddedBroker> = EmbeddedBroker::open(cfg).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = b
            .enqueue(request("t", &["s"], &format!("m{i}")))
            .await
            .unwrap()
            .id()
            .clone();
        ids.push(id);
    }
    // Completed one by one, in enqueue order: the first three are the oldest records.
    let leased = b.lease_due("s", now_ms(), 10).await.unwrap();
    for id in &ids {
        let d = leased.iter().find(|d| &d.message.id == id).expect("due");
        b.ack(d, attempt("status 200")).await.unwrap();
        b.flush().await.unwrap();
    }
    let mut kept = Vec::new();
    for _ in 0..50 {
        b.flush().await.unwrap();
        kept.clear();
        for id in &ids {
            kept.push(b.message_status(id.as_str()).await.unwrap().is_some());
        }
        if kept == [false, false, false, true, true] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        kept,
        [false, false, false, true, true],
        "only the 2 newest records stay"
    );
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_records_are_pruned_but_dead_letters_still_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmbeddedConfig::new(dir.path().join("queue"));
    cfg.completed_retention = Duration::ZERO;
    let b: Arc<EmbeddedBroker> = EmbeddedBroker::open(cfg).await.unwrap();
    let done = b
        .enqueue(request("t", &["s"], "done"))
        .await
        .unwrap()
        .id()
        .clone();
    let dead = b
        .enqueue(request("t", &["s"], "dead"))
        .await
        .unwrap()
        .id()
        .clone();
    for d in b.lease_due("s", now_ms(), 10).await.unwrap() {
        if d.message.id == done {
            b.ack(&d, attempt("status 200")).await.unwrap();
        } else {
            b.dead_letter(&d, attempt("status 422"), "unprocessable".into())
                .await
                .unwrap();
        }
    }
    let mut pruned = false;
    for _ in 0..50 {
        b.flush().await.unwrap();
        let gone = b.message_status(done.as_str()).await.unwrap().is_none()
            && b.message_status(dead.as_str()).await.unwrap().is_none();
        if gone {
            pruned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pruned, "completed records are pruned after the retention");
    b.dlq_apply(&dead_letter_id(dead.as_str(), "s"), DlqAction::Replay)
        .await
        .unwrap();
    let d = b
        .lease_due("s", now_ms(), 10)
        .await
        .unwrap()
        .pop()
        .expect("replayed");
    assert_eq!(
        (d.message.id.clone(), d.message.body.clone()),
        (dead.clone(), "dead".into())
    );
    let st = b.message_status(dead.as_str()).await.unwrap().unwrap();
    assert_eq!(
        st.subscribers[0].history.len(),
        1,
        "history comes back from the dead letter"
    );
    assert_eq!(b.depth().total, 1);
    assert_eq!(b.verify().await.unwrap(), b.depth());
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_is_enforced_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir, Some(2)).await;
    for i in 0..2 {
        b.enqueue(request("t", &["s"], &format!("{i}")))
            .await
            .unwrap();
    }
    b.close().await.unwrap();
    drop(b);
    let b = open(&dir, Some(2)).await;
    assert!(matches!(
        b.enqueue(request("t", &["s"], "x")).await,
        Err(QueueError::Full { depth: 2, max: 2 })
    ));
    b.close().await.unwrap();
    drop(b);
    let b = open(&dir, None).await;
    b.enqueue(request("t", &["s"], "x"))
        .await
        .expect("no limit configured");
    b.close().await.unwrap();
}

/// `max_depth` counts fast-path messages, overflowed ones included, when an
/// ordering-key event takes the redb path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_counts_overflowed_messages_for_keyed_events() {
    let dir = tempfile::tempdir().unwrap();
    // 3 in memory, 2 more overflowed into the journal: the queue is full at 5.
    let b = open_with(&dir, Some(5), 3).await;
    for i in 0..5 {
        b.enqueue(request("t", &["s"], &format!("{i}")))
            .await
            .unwrap();
    }
    let mut keyed = request("t", &["s"], "k");
    keyed.ordering_key = Some("k".into());
    let res = b.enqueue(keyed).await;
    assert!(
        matches!(res, Err(QueueError::Full { depth: 5, max: 5 })),
        "{res:?}"
    );
    b.close().await.unwrap();
}

/// A retry moving a message from memory into redb in the same write batch as an
/// enqueue must not free a place under `max_depth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_holds_while_a_retry_moves_a_message_in_the_same_batch() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let b = open(&dir, Some(3)).await;
        for i in 0..2 {
            b.enqueue(request("t", &["s"], &format!("{i}")))
                .await
                .unwrap();
        }
        let d = b.lease_due("s", now_ms(), 1).await.unwrap().remove(0);
        // Sent together, so the writer usually takes them as one batch.
        let (retried, c, e) = tokio::join!(
            b.retry_later(&d, attempt("status 500"), now_ms() + 60_000),
            b.enqueue(request("t", &["s"], "c")),
            b.enqueue(request("t", &["s"], "e")),
        );
        retried.unwrap();
        let accepted = [&c, &e].iter().filter(|r| r.is_ok()).count();
        assert_eq!(accepted, 1, "round {round}: {c:?} / {e:?}");
        assert_eq!(b.depth().total, 3, "round {round}");
        b.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_waits_in_the_journal_and_every_message_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_with(&dir, None, 5).await;
    let ids = enqueue_n(&b, &["a", "b"], 60).await;
    assert_eq!(b.depth().total, 60);
    assert_eq!(b.verify().await.unwrap(), b.depth());
    // The last one is only in the journal, yet its status is known.
    let last = b.message_status(ids[59].as_str()).await.unwrap().unwrap();
    assert!(last
        .subscribers
        .iter()
        .all(|s| s.next_attempt_at_ms.is_some()));
    // Both subscribers get every message exactly once, oldest first on the fast path.
    for sub in ["a", "b"] {
        let mut got = Vec::new();
        for _ in 0..200 {
            let batch = b.lease_due(sub, now_ms(), 4).await.unwrap();
            if batch.is_empty() && got.len() == 60 {
                break;
            }
            for d in &batch {
                got.push(d.message.id.clone());
                b.ack(d, attempt("status 200")).await.unwrap();
            }
            if batch.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert_eq!(got, ids, "subscriber {sub}");
    }
    assert_eq!(b.depth().total, 0);
    assert_eq!(b.verify().await.unwrap(), b.depth());
    let st = b.message_status(ids[59].as_str()).await.unwrap().unwrap();
    assert!(st.completed_at_ms.is_some());
    b.close().await.unwrap();
}

/// Copies a queue directory (journal segments and the redb file) as a killed
/// process leaves it.
fn copy_queue(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("journal")).unwrap();
    for seg in std::fs::read_dir(from.join("journal")).unwrap() {
        let seg = seg.unwrap();
        std::fs::copy(seg.path(), to.join("journal").join(seg.file_name())).unwrap();
    }
    std::fs::copy(from.join(DB_FILE), to.join(DB_FILE)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_interrupted_after_copying_the_backlog_makes_no_duplicates() {
    // A: 20 undelivered messages, most of them overflowed (4 fit in memory).
    let a = tempfile::tempdir().unwrap();
    let broker = open_with(&a, None, 4).await;
    enqueue_n(&broker, &["s"], 20).await;
    // B: a restart from A's files; it copies the backlog into a new segment.
    let b = tempfile::tempdir().unwrap();
    copy_queue(&a.path().join("queue"), &b.path().join("queue"));
    let restarted = open_with(&b, None, 4).await;
    assert_eq!(restarted.depth().total, 20);
    restarted.close().await.unwrap();
    // C: that restart "killed" after the copy but before deleting A's segments.
    let c = tempfile::tempdir().unwrap();
    copy_queue(&a.path().join("queue"), &c.path().join("queue"));
    copy_queue(&b.path().join("queue"), &c.path().join("queue"));
    let again = open_with(&c, None, 4).await;
    assert_eq!(again.depth().total, 20);
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let batch = again.lease_due("s", now_ms(), 3).await.unwrap();
        for d in &batch {
            assert!(seen.insert(d.message.id.clone()), "delivered twice");
            again.ack(d, attempt("status 200")).await.unwrap();
        }
        if seen.len() == 20 {
            break;
        }
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(seen.len(), 20);
    assert_eq!(again.depth().total, 0);
    again.close().await.unwrap();
    broker.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spilled_message_stays_due_since_its_enqueue_for_the_other_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir, None).await;
    let id = enqueue_n(&b, &["a", "b"], 1).await.remove(0);
    let enqueued_at = b
        .message_status(id.as_str())
        .await
        .unwrap()
        .unwrap()
        .enqueued_at_ms;
    // Later, b's failed attempt moves the message off the fast path into redb.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let d = b.lease_due("b", now_ms(), 10).await.unwrap().remove(0);
    b.retry_later(&d, attempt("status 503"), now_ms() + 60_000)
        .await
        .unwrap();
    let st = b.message_status(id.as_str()).await.unwrap().unwrap();
    let a = st.subscribers.iter().find(|s| s.subscriber == "a").unwrap();
    assert_eq!(
        a.state,
        DeliveryState::Pending {
            next_attempt_at_ms: enqueued_at
        },
        "a's delivery keeps its place: due since the enqueue, not since the spill"
    );
    // A lease as of the enqueue time already sees it.
    let got = b.lease_due("a", enqueued_at, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.id, id);
    assert_eq!(b.verify().await.unwrap(), b.depth());
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_fast_path_message_keeps_its_history_in_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir, None).await;
    let ids = enqueue_n(&b, &["a", "b"], 1).await;
    for sub in ["a", "b"] {
        for d in &b.lease_due(sub, now_ms(), 10).await.unwrap() {
            b.ack(d, attempt("status 204")).await.unwrap();
        }
    }
    // Flushing stores the batched completed record in redb.
    b.flush().await.unwrap();
    b.close().await.unwrap();
    drop(b);
    let b = open(&dir, None).await;
    let st = b.message_status(ids[0].as_str()).await.unwrap().unwrap();
    assert!(st.completed_at_ms.is_some());
    assert_eq!(st.subscribers.len(), 2);
    for (s, name) in st.subscribers.iter().zip(["a", "b"]) {
        assert_eq!(s.subscriber, name);
        assert_eq!(s.state, DeliveryState::Delivered);
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.history[0].outcome, "status 204");
    }
    assert_eq!(b.verify().await.unwrap(), b.depth());
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_survive_a_crash_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir, None).await;
    let mut req = request("t", &["s"], "order 7");
    req.idempotency_key = Some("order-7".into());
    let first = b.enqueue(req.clone()).await.unwrap();
    assert!(matches!(first, EnqueueOutcome::Accepted(_)));
    // Deliver it: the message completes, yet its key must still count.
    for d in &b.lease_due("s", now_ms(), 10).await.unwrap() {
        b.ack(d, attempt("status 200")).await.unwrap();
    }
    // What a killed process leaves: the key's redb record was committed without
    // fsync and may be lost; the journal has it.
    let crashed = tempfile::tempdir().unwrap();
    copy_queue(&dir.path().join("queue"), &crashed.path().join("queue"));
    let c = open(&crashed, None).await;
    let again = c.enqueue(req).await.unwrap();
    assert_eq!(again, EnqueueOutcome::Duplicate(first.id().clone()));
    c.close().await.unwrap();
    b.close().await.unwrap();
}

/// Each subscriber's backlog survives a restart (counted again from redb's
/// indexes: keyed chains and unkeyed deliveries alike) and matches the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_backlogs_are_counted_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir, None).await;
    for i in 0..3 {
        let mut keyed = request("t", &["a"], &format!("k{i}"));
        keyed.ordering_key = Some(format!("key{}", i % 2));
        b.enqueue(keyed).await.unwrap();
    }
    for i in 0..2 {
        b.enqueue(request("t", &["a", "b"], &format!("{i}")))
            .await
            .unwrap();
    }
    let d = b.lease_due("b", now_ms(), 1).await.unwrap().remove(0);
    b.ack(&d, attempt("status 200")).await.unwrap();
    let want: Vec<(String, u64)> = vec![("a".into(), 5), ("b".into(), 1)];
    let got = |b: &junction_queue::EmbeddedBroker| {
        b.depth()
            .subscribers
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>()
    };
    assert_eq!(got(&b), want);
    assert_eq!(b.verify().await.unwrap(), b.depth());
    b.close().await.unwrap();
    drop(b);
    let b = open(&dir, Some(5)).await;
    assert_eq!(got(&b), want);
    assert_eq!(b.verify().await.unwrap(), b.depth());
    // "a" is full: its copy is shed, "b" still gets the event.
    let id = match b.enqueue(request("t", &["a", "b"], "x")).await.unwrap() {
        junction_queue::EnqueueOutcome::Accepted(id) => id,
        other => panic!("{other:?}"),
    };
    let st = b.message_status(id.as_str()).await.unwrap().unwrap();
    assert!(matches!(
        st.subscribers[0].state,
        junction_queue::DeliveryState::Dead { .. }
    ));
    assert!(st.subscribers[1].next_attempt_at_ms.is_some());
    assert_eq!(b.verify().await.unwrap(), b.depth());
    b.close().await.unwrap();
}
