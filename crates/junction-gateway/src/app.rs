//! Wiring: build every component from a config and run until shutdown.

use crate::admin::{self, AdminState};
use crate::config::{CacheConfig, Config};
use crate::pipeline;
use crate::proxy::{build_upstreams, Gateway, LiveState, SharedGateway};
use crate::reload::{Loaded, Reloader};
use crate::server;
use crate::telemetry::live::Live;
use crate::telemetry::Metrics;
use anyhow::Context;
use arc_swap::ArcSwap;
use junction_cache::{CacheStore, IdempotencyStore, MemoryIdempotency, MemoryStore, RedisStore};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Pre-bound listeners for the data plane and the admin API.
pub struct Listeners {
    /// Data plane.
    pub data: TcpListener,
    /// Admin API.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses the config names.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let data = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin.listen))?;
        Ok(Self { data, admin })
    }
}

/// The two steps of a graceful shutdown (`junction serve` drives them from signals).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled first: `/readyz` answers 503 while everything keeps serving,
    /// so load balancers take the instance out before anything is refused.
    pub drain: CancellationToken,
    /// Cancelled next: stop accepting, finish in-flight requests and
    /// deliveries within `shutdown.grace`, return. Implies `drain`.
    pub stop: CancellationToken,
}

/// Runs Junction until `shutdown.stop` is cancelled, then drains.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let grace = config.shutdown.grace.0;
    let limits = server::ConnectionLimits {
        header_read_timeout: config.limits.header_read_timeout.0,
        write_timeout: config.limits.write_timeout.0,
        max_header_bytes: usize::try_from(config.limits.max_header_bytes.0).unwrap_or(usize::MAX),
        max_connections: config.limits.max_connections,
    };
    // Certificates first: a bad one stops the start before the queue opens.
    let tls = listener_tls(&config)?;
    let metrics = Metrics::new();
    // Every module's families are listed from the first scrape, used or not.
    crate::proxy::register_metrics(&metrics);
    pipeline::metrics::register(&metrics);
    let upstreams = build_upstreams(&config, &metrics)?;
    let has_async = config.routes.iter().any(|r| r.async_.is_some());
    // The queue is opened only when a route needs it, so sync-only configs touch no disk.
    let queue = if has_async {
        Some(pipeline::open_queue(&config).await?)
    } else {
        None
    };
    let async_routes = queue
        .as_ref()
        .map(|q| pipeline::async_routes(&config, q, &metrics))
        .unwrap_or_default();
    let (cache, idempotency) = open_cache(&config).await?;
    let live = Arc::new(Live::new());
    let gateways: SharedGateway = Arc::new(ArcSwap::from_pointee(Gateway::build(
        &config,
        metrics.clone(),
        upstreams.clone(),
        &async_routes,
        LiveState {
            cache,
            idempotency,
            live: live.clone(),
            rate_limits: Arc::default(),
            buffers: crate::buffers::BufferBudget::new(config.limits.buffer_budget.0, &metrics),
        },
    )?));
    let dispatch_stop = CancellationToken::new();
    if let Some(q) = &queue {
        pipeline::connection::watch(q.clone(), &metrics, dispatch_stop.clone());
    }
    let dispatchers = match &queue {
        Some(q) => pipeline::Dispatchers::start(
            &config,
            &pipeline::DispatchContext {
                queue: q,
                upstreams: &upstreams,
                metrics: &metrics,
                live: &live,
            },
            server::worker_count(),
            dispatch_stop.clone(),
        )?,
        None => pipeline::Dispatchers::none(),
    };
    let token = match &config.admin.token_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("admin.token_env names {var}, which is not set"))?
                .into(),
        ),
        None => None,
    };
    if token.is_none() && !config.admin.listen.ip().is_loopback() {
        // Only reachable with `admin.insecure: true` (validation refuses it otherwise).
        tracing::warn!(
            admin = %config.admin.listen,
            "the admin API is served to other hosts WITHOUT a token (admin.insecure: true)"
        );
    }
    let payload_peek = Arc::new(config.admin.payload_peek.clone());
    let reloader = Arc::new(
        Reloader::new(
            Loaded {
                config,
                upstreams,
                dispatchers,
            },
            gateways.clone(),
            metrics.clone(),
            queue.clone(),
            live.clone(),
        )
        .with_tls(tls.clone()),
    );
    let ready = Arc::new(AtomicBool::new(false));
    let admin_router = admin::router(AdminState {
        gateways: gateways.clone(),
        reloader: reloader.clone(),
        queue: queue.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        token,
        payload_peek,
    });
    let data_addr = listeners.data.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    // The admin port outlives the data plane: `/readyz` says 503 until the very end.
    let admin_stop = CancellationToken::new();
    let admin_stopped = admin_stop.clone();
    let admin_task = tokio::spawn(server::admin::serve_admin(
        listeners.admin,
        admin_router,
        tls.admin.clone(),
        admin_stopped,
    ));
    #[cfg(unix)]
    let hangups = spawn_reload_on_sighup(reloader.clone(), shutdown.stop.clone())?;
    let data_task = tokio::spawn(server::serve_data_threads(
        listeners.data,
        gateways,
        shutdown.stop.clone(),
        grace,
        server::worker_count(),
        limits,
        tls.data.clone(),
    ));
    ready.store(true, Ordering::Release);
    tracing::info!(data = %data_addr, admin = %admin_addr, "junction is serving");
    // systemd `Type=notify`: listeners are bound and the queue is open.
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let not_ready = ready.clone();
    let draining = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = draining.drain.cancelled() => {}
            _ = draining.stop.cancelled() => {}
        }
        not_ready.store(false, Ordering::Release);
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("draining: /readyz answers 503");
    });
    data_task.await??;
    // Stop accepting first (above), then let dispatchers drain their in-flight deliveries.
    #[cfg(unix)]
    hangups.abort();
    dispatch_stop.cancel();
    let dispatchers = reloader.take_dispatchers().await;
    if tokio::time::timeout(grace, dispatchers.join())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "deliveries still in flight after the grace period; they will be delivered again after restart"
        );
    }
    admin_stop.cancel();
    admin_task.await??;
    // Flush the queue now, not whenever its last handle is dropped (possibly while
    // the runtime is already shutting down).
    if let Some(queue) = &queue {
        if let Err(e) = queue.publisher.close().await {
            tracing::error!(error = %e, "could not flush the queue on shutdown");
        }
    }
    tracing::info!("junction stopped");
    Ok(())
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`) how the service stands.
fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Reloads the config on every `SIGHUP` until `stop` (an invalid file is
/// refused and logged; the running config keeps serving).
#[cfg(unix)]
fn spawn_reload_on_sighup(
    reloader: Arc<Reloader>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    // systemd wants RELOADING=1 with the monotonic time, then READY=1 when done.
                    let mut reloading = vec![sd_notify::NotifyState::Reloading];
                    reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
                    notify_systemd(&reloading);
                    // The outcome is logged and counted by the reloader.
                    let _ = reloader.reload().await;
                    notify_systemd(&[sd_notify::NotifyState::Ready]);
                }
                _ = stop.cancelled() => break,
            }
        }
    }))
}

/// Opens the configured cache backend, and the idempotency store beside it
/// (the same Redis, so instances share Idempotency-Key claims). A Redis that is
/// down at start-up is not fatal: the store starts degraded (pass-through) and
/// reconnects by itself.
async fn open_cache(
    config: &Config,
) -> anyhow::Result<(Arc<dyn CacheStore>, Arc<dyn IdempotencyStore>)> {
    Ok(match &config.cache {
        CacheConfig::Memory {
            max_entries,
            max_bytes,
        } => (
            Arc::new(MemoryStore::new(*max_entries, max_bytes.0)),
            Arc::new(MemoryIdempotency::default()),
        ),
        CacheConfig::Redis { url, prefix } => {
            let redis = RedisStore::connect(url, prefix).await.map_err(|e| {
                anyhow::anyhow!("cache: {}", crate::proxy::upstream::error_chain(&e))
            })?;
            (Arc::new(redis.clone()), Arc::new(redis))
        }
    })
}

/// A running Junction started in-process (tests, the demo).
pub struct Running {
    /// Data-plane address.
    pub data: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Cancel to stop (no drain delay: in-process callers stop at once).
    pub shutdown: CancellationToken,
    /// Resolves when stopped.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts Junction in the background on the given listeners.
pub fn spawn(config: Config, listeners: Listeners) -> anyhow::Result<Running> {
    let data = listeners.data.local_addr()?;
    let admin = listeners.admin.local_addr()?;
    let shutdown = Shutdown::default();
    let stop = shutdown.stop.clone();
    let task = tokio::spawn(run(config, listeners, shutdown));
    Ok(Running {
        data,
        admin,
        shutdown: stop,
        task,
    })
}

/// The listeners' TLS from `config` (certificate files read now: a bad one
/// stops the start, naming its key and file).
fn listener_tls(config: &Config) -> anyhow::Result<crate::reload::ListenerCerts> {
    let load = |key: &str, cfg: &Option<crate::config::ListenerTlsConfig>| {
        cfg.as_ref()
            .map(|c| server::tls::ListenerTls::load(c).map(Arc::new))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))
    };
    Ok(crate::reload::ListenerCerts {
        data: load("tls", &config.tls)?,
        admin: load("admin.tls", &config.admin.tls)?,
    })
}
