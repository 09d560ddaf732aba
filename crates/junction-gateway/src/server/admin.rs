//! Serving the admin API: axum's own server over plain HTTP, or, with
//! `admin.tls`, an accept loop that does the TLS handshake first (axum's
//! server takes only plain TCP listeners).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::tls::ListenerTls;

/// How long a TLS handshake and then a request head may take on the admin port.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open admin connections get to finish once `stop` fires.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `stop`.
pub async fn serve_admin(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ListenerTls>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    };
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, %peer, "admin connection ended with an error");
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "admin TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "admin TLS handshake not done in time"),
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    Ok(())
}
