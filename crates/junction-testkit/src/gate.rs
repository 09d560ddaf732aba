//! A TCP forwarder a test can cut and restore, to play a server outage
//! (Redis, a broker) without stopping the shared server itself.

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards 127.0.0.1:port-0 to a target; [`TcpGate::cut`] drops every
/// connection and refuses new ones until [`TcpGate::restore`].
pub struct TcpGate {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    open: AtomicBool,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

impl TcpGate {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            open: AtomicBool::new(true),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !s.open.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                s.conns.lock().push(conn);
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// Starts forwarding to the host and port of `url` (`scheme://host:port/...`).
    pub async fn in_front_of(url: &str) -> Self {
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let target = tokio::net::lookup_host(authority)
            .await
            .unwrap_or_else(|e| panic!("cannot resolve {authority}: {e}"))
            .next()
            .unwrap_or_else(|| panic!("{authority} resolves to no address"));
        Self::start(target).await
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        for conn in self.shared.conns.lock().drain(..) {
            conn.abort();
        }
    }

    /// Refuses new connections and keeps the open ones (a server at its
    /// connection limit).
    pub fn refuse_new(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpGate {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
