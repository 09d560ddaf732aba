//! Spreading accepted connections evenly over the data-plane threads.
//!
//! Every data thread accepts on the same listening socket. Left to the kernel,
//! whichever thread wakes first takes the whole burst: measured with 64
//! connections opened at once, one thread got all 64 and the other none, so
//! one core did all the work (about 56k req/s against 80–85k when split).
//! Like Envoy's `exact_balance`, a thread that accepts a connection while
//! another holds fewer hands it to that one, over a channel; the thread that
//! takes a connection serves it from then on. Keep-alive connections make the
//! hand-off (one cross-thread wake-up) rare.
//!
//! Written here because it is a few lines over the runtime's own primitives;
//! no crate does it for thread-per-core Tokio runtimes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A connection handed from the thread that accepted it to the one that serves it.
pub type Handoff = (std::net::TcpStream, std::net::SocketAddr);

/// Open connections per data thread, and the way to hand each one a connection.
pub struct Balance {
    open: Vec<AtomicUsize>,
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
}

impl Balance {
    /// A balance over `threads` threads, and each thread's inbox of handed-over connections.
    pub fn new(threads: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers) = (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
        let balance = Self {
            open: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
            inboxes,
        };
        (Arc::new(balance), receivers)
    }

    /// Decides who serves a connection thread `me` just accepted: the stream
    /// back if `me` does (it holds no more connections than any other thread),
    /// or `None` once it was handed to the least loaded thread. The
    /// serving thread's count includes the connection until its [`Held`] drops.
    pub fn place(
        self: &Arc<Self>,
        me: usize,
        stream: TcpStream,
        peer: std::net::SocketAddr,
    ) -> Option<(TcpStream, Held)> {
        let (least, _) = self
            .open
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.load(Ordering::Relaxed)))
            .min_by_key(|&(i, n)| (n, i != me))
            .expect("at least one thread");
        if least == me {
            return Some((stream, self.hold(me)));
        }
        let handed = match stream.into_std() {
            Ok(handed) => handed,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "cannot hand a connection over");
                return None;
            }
        };
        self.open[least].fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError((stream, peer))) =
            self.inboxes[least].send((handed, peer))
        {
            // That thread has stopped (shutdown): serve it here after all.
            self.open[least].fetch_sub(1, Ordering::Relaxed);
            return match TcpStream::from_std(stream) {
                Ok(stream) => Some((stream, self.hold(me))),
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "cannot take a connection back");
                    None
                }
            };
        }
        None
    }

    /// Takes a connection handed to thread `me` (already counted there).
    pub fn take(self: &Arc<Self>, me: usize, handed: Handoff) -> Option<(TcpStream, Held)> {
        let held = Held {
            balance: self.clone(),
            thread: me,
        };
        match TcpStream::from_std(handed.0) {
            Ok(stream) => Some((stream, held)),
            Err(e) => {
                tracing::debug!(error = %e, peer = %handed.1, "cannot register a handed-over connection");
                None
            }
        }
    }

    fn hold(self: &Arc<Self>, thread: usize) -> Held {
        self.open[thread].fetch_add(1, Ordering::Relaxed);
        Held {
            balance: self.clone(),
            thread,
        }
    }

    /// Open connections of each thread (for tests and diagnostics).
    pub fn open_per_thread(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

/// One open connection counted against its serving thread; dropping it uncounts it.
pub struct Held {
    balance: Arc<Balance>,
    thread: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.balance.open[self.thread].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// `n` accepted loopback connections (their client ends kept open alongside).
    async fn accepted(n: usize) -> Vec<(TcpStream, std::net::SocketAddr, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            out.push((server, peer, client));
        }
        out
    }

    #[tokio::test]
    async fn a_burst_accepted_by_one_thread_is_spread_evenly() {
        let (balance, mut inboxes) = Balance::new(2);
        let mut kept = Vec::new();
        let mut clients = Vec::new();
        for (stream, peer, client) in accepted(6).await {
            clients.push(client);
            if let Some(held) = balance.place(0, stream, peer) {
                kept.push(held);
            }
        }
        assert_eq!(kept.len(), 3, "thread 0 serves half");
        assert_eq!(balance.open_per_thread(), vec![3, 3]);
        let mut taken = Vec::new();
        while let Ok(handed) = inboxes[1].try_recv() {
            taken.push(balance.take(1, handed).expect("registers"));
        }
        assert_eq!(taken.len(), 3, "thread 1 got the other half");
        // Closing thread 1's connections makes it the least loaded again.
        taken.clear();
        assert_eq!(balance.open_per_thread(), vec![3, 0]);
        let (stream, peer, _client) = accepted(1).await.pop().unwrap();
        assert!(balance.place(0, stream, peer).is_none(), "handed over");
        assert_eq!(balance.open_per_thread(), vec![3, 1]);
    }

    #[tokio::test]
    async fn a_thread_that_stopped_leaves_the_connection_where_it_was_accepted() {
        let (balance, inboxes) = Balance::new(2);
        drop(inboxes); // both threads stopped taking connections
        let conns = accepted(2).await;
        let mut kept = Vec::new();
        for (stream, peer, _client) in conns {
            kept.push(balance.place(0, stream, peer).expect("served here"));
        }
        assert_eq!(balance.open_per_thread(), vec![2, 0]);
    }
}
