//! A publishing connection per data-plane thread.
//!
//! The gateway serves requests thread-per-core, each data thread running its
//! own current-thread runtime, while the broker's shared client lives on the
//! main runtime. Publishing through it costs every event two cross-thread
//! wake-ups (the request's thread hands the publish to the connection's task,
//! whose thread hands the ack back): profiled at 64 connections, a context
//! switch per event and about 40 % of Junction's CPU in the kernel. So a
//! publish made on a current-thread runtime goes through a client of that
//! thread, connected on first use and spawned on that runtime, and never leaves
//! the thread. Elsewhere (a multi-thread runtime: the admin API's replays,
//! tests) the shared client is used.
//!
//! A thread's client lives as long as its runtime: a guard task spawned beside
//! it marks the client dead when the runtime drops its tasks, and the next
//! publish on that thread connects again. Publishes take the shared client
//! whenever the thread's own is not connected: while it is being connected,
//! for [`RETRY_CONNECT`] after its connect failed (the server may refuse the
//! extra connections: `max_connections`, account limits), and while it is
//! reconnecting after a drop. So the thread's own connection never makes a
//! publish fail that the shared one would have taken, and the broker's
//! connectivity (`/readyz`, the gauge) stays the shared client's. A closed
//! broker's clients are dropped at the thread's next publish.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use parking_lot::Mutex;

use super::Shared;

/// How long a thread uses the shared client after its own connect failed.
const RETRY_CONNECT: Duration = Duration::from_secs(5);

/// One broker's client on this thread. The slot is shared with the task
/// connecting it, which fills it wherever it runs.
struct Local {
    owner: Weak<Shared>,
    slot: Arc<Mutex<State>>,
}

enum State {
    /// Started at; a connect whose task was dropped (its runtime ended) is
    /// started again after [`RETRY_CONNECT`].
    Connecting(Instant),
    Ready(Box<Connected>),
    Failed {
        retry_at: Instant,
    },
}

struct Connected {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Cleared when the runtime that runs the client's tasks drops them.
    alive: Arc<AtomicBool>,
}

thread_local! {
    static LOCALS: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

/// Sets `alive` to false when dropped (with the runtime's tasks).
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What to publish through: this thread's client of `shared`'s broker when
/// it is connected, else the shared client (and, on a current-thread runtime,
/// a connect of this thread's client started in the background).
pub(super) fn context(shared: &Arc<Shared>) -> jetstream::Context {
    let on_own_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !on_own_thread || shared.closed.load(Ordering::Acquire) {
        return shared.js.clone();
    }
    let connect = LOCALS.with(|locals| {
        let mut locals = locals.borrow_mut();
        // Brokers dropped or closed since (a reload): their clients go.
        locals.retain(|l| {
            l.owner
                .upgrade()
                .is_some_and(|s| !s.closed.load(Ordering::Acquire))
        });
        let Some(mine) = locals
            .iter()
            .find(|l| std::ptr::eq(l.owner.as_ptr(), Arc::as_ptr(shared)))
        else {
            let slot = Arc::new(Mutex::new(State::Connecting(Instant::now())));
            locals.push(Local {
                owner: Arc::downgrade(shared),
                slot: slot.clone(),
            });
            return Err(slot);
        };
        let mut state = mine.slot.lock();
        match &*state {
            State::Ready(c) if c.alive.load(Ordering::Acquire) => {
                return match c.client.connection_state() {
                    async_nats::connection::State::Connected => Ok(Some(c.js.clone())),
                    // Reconnecting by itself meanwhile.
                    _ => Ok(None),
                };
            }
            State::Connecting(since) if since.elapsed() < RETRY_CONNECT => return Ok(None),
            State::Failed { retry_at } if Instant::now() < *retry_at => return Ok(None),
            // Its runtime is gone, its connect was dropped, or it is time to retry.
            _ => *state = State::Connecting(Instant::now()),
        }
        Err(mine.slot.clone())
    });
    match connect {
        Ok(Some(own)) => own,
        Ok(None) => shared.js.clone(),
        Err(slot) => {
            // A current-thread runtime runs its tasks on the thread driving it.
            tokio::spawn(connect_here(Arc::downgrade(shared), slot));
            shared.js.clone()
        }
    }
}

/// Connects a thread's client into `slot` (or records the failure).
async fn connect_here(owner: Weak<Shared>, slot: Arc<Mutex<State>>) {
    let Some(url) = owner.upgrade().map(|s| s.cfg.url.clone()) else {
        return;
    };
    // Not `retry_on_initial_connect`: a server refusing this connection must
    // show as a failure here, so that the shared client is used instead.
    let connected = super::connect_options_without_initial_retry()
        .connect(url.as_str())
        .await;
    let state = match connected {
        Ok(client) => {
            let open = owner
                .upgrade()
                .is_some_and(|s| !s.closed.load(Ordering::Acquire));
            if !open {
                return; // The broker closed meanwhile: the client drops here.
            }
            let alive = Arc::new(AtomicBool::new(true));
            let guard = AliveGuard(alive.clone());
            tokio::spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            });
            State::Ready(Box::new(Connected {
                js: super::context_of(client.clone()),
                client,
                alive,
            }))
        }
        Err(e) => {
            tracing::debug!(error = %e, "a data thread could not connect to nats; publishing through the shared connection");
            State::Failed {
                retry_at: Instant::now() + RETRY_CONNECT,
            }
        }
    };
    *slot.lock() = state;
}
