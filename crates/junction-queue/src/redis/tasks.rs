//! The broker's background tasks; each ends when the broker is dropped.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::{RedisBroker, BACKLOG_RETRY, DEPTH_REFRESH};

/// Records backlogged outcomes every [`BACKLOG_RETRY`] until the broker is dropped.
pub(super) async fn retry_backlog_forever(broker: Weak<RedisBroker>) {
    loop {
        tokio::time::sleep(BACKLOG_RETRY).await;
        let Some(b) = broker.upgrade() else { return };
        if b.backlog.len() > 0 {
            b.drain_backlog().await;
        }
    }
}

/// Renews this instance's leases every third of their lifetime until the broker is dropped.
pub(super) async fn renew_leases_forever(broker: Weak<RedisBroker>) {
    loop {
        let every = match broker.upgrade() {
            Some(b) => b.cfg.lease_ttl / 3,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(b) = broker.upgrade() else { return };
        if b.closed.load(Ordering::Acquire) {
            return;
        }
        b.renew_leases().await;
    }
}

/// Re-reads the depth every [`DEPTH_REFRESH`] until the broker is dropped.
pub(super) async fn refresh_depth_forever(broker: Weak<RedisBroker>) {
    loop {
        tokio::time::sleep(DEPTH_REFRESH).await;
        let Some(b) = broker.upgrade() else { return };
        if b.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = b.refresh_depth().await {
            tracing::debug!(error = %e, "queue depth not refreshed");
        }
    }
}

/// Wakes local dispatchers on other instances' announcements; resubscribes after a loss.
pub(super) async fn listen_for_wakeups(broker: Weak<RedisBroker>) {
    use futures::StreamExt;
    loop {
        let Some((client, channel)) = broker
            .upgrade()
            .filter(|b| !b.closed.load(Ordering::Acquire))
            .map(|b| (b.client.clone(), b.key("wake")))
        else {
            return;
        };
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(&channel).await.is_ok() {
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let Some(b) = broker.upgrade() else { return };
                        if let Ok(sub) = msg.get_payload::<String>() {
                            b.wake_local(&sub);
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "wake-up channel unavailable; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
