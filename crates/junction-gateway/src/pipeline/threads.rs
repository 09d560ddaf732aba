//! Delivery threads: one single-threaded Tokio runtime per core for the dispatchers.
//!
//! The data plane already runs thread-per-core (see `server.rs`); deliveries do
//! the same for the same reason. Each dispatcher is split into lanes, one per
//! thread, and a lane leases, sends and records its deliveries on its own
//! thread with that thread's connection pool, so a delivery never waits on a
//! cross-thread wake-up of a shared work-stealing runtime. Measured on the
//! 2-vCPU bench box (BENCHMARKS.md §2), this raised the drain rate to three
//! nginx subscribers from about 50k to about 70k deliveries/s.

use std::future::Future;
use std::io;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fixed set of named threads, each running a current-thread runtime until dropped.
pub struct DeliveryThreads {
    handles: Vec<Handle>,
    /// Dropping a sender lets its thread's runtime stop.
    stops: Vec<oneshot::Sender<()>>,
}

impl DeliveryThreads {
    /// Starts `n` threads (at least one) named `junction-deliver-{i}`.
    pub fn start(n: usize) -> io::Result<Self> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let rt = crate::runtime::current_thread()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("junction-deliver-{i}"))
                .spawn(move || {
                    // Runs spawned lanes until the pool is dropped.
                    let _ = rt.block_on(stopped);
                })?;
        }
        Ok(Self { handles, stops })
    }

    /// How many threads there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `task` on thread `i` (modulo the thread count).
    pub fn spawn<F>(&self, i: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[i % self.handles.len()].spawn(task)
    }
}

impl Drop for DeliveryThreads {
    fn drop(&mut self) {
        // Each runtime stops once its `block_on` sees the channel closed.
        self.stops.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_named_thread_they_are_given() {
        let threads = DeliveryThreads::start(2).unwrap();
        assert_eq!(threads.len(), 2);
        let name = |i| {
            threads.spawn(i, async {
                std::thread::current().name().map(str::to_owned)
            })
        };
        assert_eq!(
            name(0).await.unwrap().as_deref(),
            Some("junction-deliver-0")
        );
        assert_eq!(
            name(1).await.unwrap().as_deref(),
            Some("junction-deliver-1")
        );
        assert_eq!(
            name(2).await.unwrap().as_deref(),
            Some("junction-deliver-0")
        );
    }

    #[tokio::test]
    async fn dropping_the_pool_stops_its_threads() {
        let threads = DeliveryThreads::start(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let _task = threads.spawn(0, async move {
            // Dropped, never used: the channel disconnects when the runtime drops this task.
            let _guard = tx;
            std::future::pending::<()>().await
        });
        drop(threads);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the pending task was not dropped with its runtime"
        );
    }
}
