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
//! publish on that thread connects again. While a thread's client is being
//! connected, or for [`RETRY_CONNECT`] after its connect failed, publishes
//! take the shared client. The broker's connectivity (`/readyz`, the gauge) is
//! the shared client's; a thread's client reconnects on its own and a publish
//! it cannot get acknowledged fails within the request timeout like any other.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::Shared;

/// How long a thread uses the shared client after its own connect failed.
const RETRY_CONNECT: Duration = Duration::from_secs(5);

/// One broker's client on this thread.
struct Local {
    owner: Weak<Shared>,
    state: State,
}

enum State {
    /// Started at; a connect whose task was dropped (its runtime ended) is
    /// started again after [`RETRY_CONNECT`].
    Connecting(Instant),
    Ready {
        js: Arc<jetstream::Context>,
        /// Cleared when the runtime that runs the client's tasks drops them.
        alive: Arc<AtomicBool>,
    },
    Failed {
        retry_at: Instant,
    },
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
/// there is one, else the shared client (and, on a current-thread runtime,
/// a connect of this thread's client started in the background).
pub(super) fn context(shared: &Arc<Shared>) -> jetstream::Context {
    if tokio::runtime::Handle::try_current()
        .map(|h| h.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread)
        .unwrap_or(true)
    {
        return shared.js.clone();
    }
    let found = LOCALS.with(|locals| {
        let mut locals = locals.borrow_mut();
        // Brokers dropped or closed since (a reload): their clients go.
        locals.retain(|l| {
            l.owner
                .upgrade()
                .is_some_and(|s| !s.closed.load(Ordering::Acquire))
        });
        let mine = locals
            .iter_mut()
            .find(|l| std::ptr::eq(l.owner.as_ptr(), Arc::as_ptr(shared)));
        match mine {
            Some(Local {
                state: State::Ready { js, alive },
                ..
            }) if alive.load(Ordering::Acquire) => return Found::Mine(js.clone()),
            Some(Local {
                state: State::Connecting(since),
                ..
            }) if since.elapsed() < RETRY_CONNECT => return Found::Shared,
            Some(Local {
                state: State::Failed { retry_at },
                ..
            }) if Instant::now() < *retry_at => return Found::Shared,
            Some(l) => l.state = State::Connecting(Instant::now()),
            None => locals.push(Local {
                owner: Arc::downgrade(shared),
                state: State::Connecting(Instant::now()),
            }),
        }
        Found::Connect
    });
    match found {
        Found::Mine(js) => jetstream::Context::clone(&js),
        Found::Shared => shared.js.clone(),
        Found::Connect => {
            // A current-thread runtime runs its tasks on this thread.
            tokio::spawn(connect_here(Arc::downgrade(shared)));
            shared.js.clone()
        }
    }
}

/// What this thread has for a broker.
enum Found {
    Mine(Arc<jetstream::Context>),
    /// None yet (being connected, or retried later): the shared one.
    Shared,
    /// None yet and none being connected: start it, use the shared one meanwhile.
    Connect,
}

/// Connects this thread's client and records it (or the failure).
async fn connect_here(owner: Weak<Shared>) {
    let Some(shared) = owner.upgrade() else {
        return;
    };
    let connected = tokio::time::timeout(
        Duration::from_secs(3),
        super::connect_options().connect(shared.cfg.url.as_str()),
    )
    .await;
    let state = match connected {
        Ok(Ok(client)) => {
            let alive = Arc::new(AtomicBool::new(true));
            let guard = AliveGuard(alive.clone());
            tokio::spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            });
            State::Ready {
                js: Arc::new(super::context_of(client)),
                alive,
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a data thread could not connect to nats; publishing through the shared connection");
            State::Failed {
                retry_at: Instant::now() + RETRY_CONNECT,
            }
        }
        Err(_) => State::Failed {
            retry_at: Instant::now() + RETRY_CONNECT,
        },
    };
    LOCALS.with(|locals| {
        if let Some(l) = locals
            .borrow_mut()
            .iter_mut()
            .find(|l| l.owner.ptr_eq(&owner))
        {
            l.state = state;
        }
    });
}
