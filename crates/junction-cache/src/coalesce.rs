//! Request coalescing: concurrent misses for one key cause one upstream call.
//!
//! Why it exists: when a popular entry expires, every request for it misses at
//! once; without coalescing they all hit the upstream together (a stampede).
//!
//! What it promises: while a computation for a key is in flight, later callers
//! for that key wait for it and receive a clone of its result instead of running
//! their own. If the leading caller is dropped (cancelled, timed out, or its
//! computation panicked), one waiter becomes the new leader and runs its own
//! closure, so nobody waits on a computation that will never finish. Results are
//! not kept once delivered: a call that starts after a computation finished runs
//! again (caching is the store's job).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

/// Runs at most one computation per key at a time and shares its result.
#[derive(Debug)]
pub struct Coalescer<V> {
    flights: Mutex<HashMap<String, Flight<V>>>,
    next_id: AtomicU64,
}

/// One in-flight computation; waiters clone `rx` to hear its result.
#[derive(Debug)]
struct Flight<V> {
    id: u64,
    rx: watch::Receiver<Option<V>>,
}

/// Held by the caller that runs the computation; removes the flight when dropped.
struct Leader<'a, V> {
    coalescer: &'a Coalescer<V>,
    key: &'a str,
    id: u64,
    tx: watch::Sender<Option<V>>,
}

enum Join<'a, V> {
    Lead(Leader<'a, V>),
    Wait(watch::Receiver<Option<V>>),
}

impl<V> Default for Coalescer<V> {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Coalescer ===

impl<V> Coalescer<V> {
    /// An empty coalescer.
    pub fn new() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Number of keys with a computation in flight.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

impl<V: Clone> Coalescer<V> {
    /// Runs `f` for `key` unless a computation for `key` is already in flight, in
    /// which case waits for it and returns a clone of its result. `f` runs only if
    /// this caller becomes the leader (at once, or after a leader was dropped).
    pub async fn run<F, Fut>(&self, key: &str, f: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let leader = loop {
            match self.join(key) {
                Join::Lead(leader) => break leader,
                Join::Wait(mut rx) => {
                    // Err means the leader was dropped without a result: try again.
                    let done = rx
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|r| (*r).clone());
                    if let Some(value) = done {
                        return value;
                    }
                }
            }
        };
        let value = f().await;
        leader.tx.send_replace(Some(value.clone()));
        value
    }

    fn join<'a>(&'a self, key: &'a str) -> Join<'a, V> {
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.get(key) {
            return Join::Wait(flight.rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        flights.insert(key.to_owned(), Flight { id, rx });
        Join::Lead(Leader {
            coalescer: self,
            key,
            id,
            tx,
        })
    }
}

// === impl Leader ===

impl<V> Drop for Leader<'_, V> {
    fn drop(&mut self) {
        // Remove the flight before `tx` drops, so woken waiters find the key free.
        let mut flights = self.coalescer.flights.lock();
        if flights.get(self.key).is_some_and(|f| f.id == self.id) {
            flights.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn hundred_concurrent_callers_run_once() {
        let coalescer = Arc::new(Coalescer::<u64>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (coalescer, runs) = (coalescer.clone(), runs.clone());
                tokio::spawn(async move {
                    coalescer
                        .run("product:1", || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            42
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(coalescer.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn finished_results_are_not_reused_and_keys_are_independent() {
        let coalescer = Coalescer::<u32>::new();
        assert_eq!(coalescer.run("a", || async { 1 }).await, 1);
        assert_eq!(coalescer.run("a", || async { 2 }).await, 2);
        let slow = |v| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                v
            }
        };
        let (a, b) = tokio::join!(coalescer.run("a", slow(3)), coalescer.run("b", slow(4)));
        assert_eq!((a, b), (3, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_takes_over_when_leader_is_cancelled() {
        let coalescer = Arc::new(Coalescer::<u32>::new());
        let leader = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { coalescer.run("k", std::future::pending::<u32>).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(coalescer.in_flight(), 1);

        let waiter_runs = Arc::new(AtomicUsize::new(0));
        let waiter = tokio::spawn({
            let (coalescer, runs) = (coalescer.clone(), waiter_runs.clone());
            async move {
                coalescer
                    .run("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        7
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            waiter_runs.load(Ordering::SeqCst),
            0,
            "waiter must wait for the leader"
        );

        leader.abort();
        let got = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("waiter must not hang")
            .expect("waiter task");
        assert_eq!(got, 7);
        assert_eq!(waiter_runs.load(Ordering::SeqCst), 1);
        assert_eq!(coalescer.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_takes_over_when_leader_panics() {
        let coalescer = Arc::new(Coalescer::<u32>::new());
        let leader = tokio::spawn({
            let coalescer = coalescer.clone();
            async move {
                coalescer
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        panic!("upstream handler bug")
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        let waiter = {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.run("k", || async { 9 }).await })
        };
        assert!(leader.await.is_err());
        let got = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("waiter must not hang")
            .expect("waiter task");
        assert_eq!(got, 9);
    }
}
