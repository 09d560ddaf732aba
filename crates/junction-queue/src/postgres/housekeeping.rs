//! What an instance does in the background: renews the claims it holds (so a
//! live instance's slow delivery is not taken by another), prunes completed
//! records and expired idempotency keys, and re-reads the counters (other
//! instances' changes reach the depth snapshot here).

use super::prepared;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::{now_ms, storage, PostgresBroker, HOUSEKEEPING};
use crate::types::QueueError;

/// Renews held claims, prunes old records, re-reads the counters; stops when
/// the broker is dropped or closed.
pub async fn run(weak: std::sync::Weak<PostgresBroker>) {
    let mut last_prune = std::time::Instant::now();
    loop {
        let period = match weak.upgrade() {
            Some(b) => b.cfg.lease_ttl / 3,
            None => return,
        };
        tokio::time::sleep(period.min(HOUSEKEEPING)).await;
        let Some(b) = weak.upgrade() else { return };
        if b.closed.load(Ordering::Acquire) {
            return;
        }
        let held: Vec<(String, String)> = b.held.lock().iter().cloned().collect();
        if let Err(e) = renew(&b, &held).await {
            tracing::warn!(error = %e, "could not renew claims on postgres deliveries");
        }
        if last_prune.elapsed() >= HOUSEKEEPING {
            last_prune = std::time::Instant::now();
            if let Err(e) = prune(&b).await {
                tracing::warn!(error = %e, "postgres queue housekeeping failed");
            }
        }
    }
}

async fn renew(b: &PostgresBroker, held: &[(String, String)]) -> Result<(), QueueError> {
    if held.is_empty() {
        return Ok(());
    }
    let conn = b.settle_conn().await?;
    let until = (now_ms() + b.cfg.lease_ttl.as_millis() as u64) as i64;
    // Per subscriber, so ANY($1) x ANY($2) names exactly the held pairs.
    let mut by_sub: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, sub) in held {
        by_sub.entry(sub).or_default().push(id);
    }
    for (sub, ids) in by_sub {
        conn.execute(
            &prepared(&conn, &b.sql.renew).await?,
            &[&ids, &vec![sub], &until],
        )
        .await
        .map_err(|e| storage("renewing claims", e))?;
    }
    Ok(())
}

async fn prune(b: &PostgresBroker) -> Result<(), QueueError> {
    let conn = b.conn().await?;
    let now = now_ms();
    let cutoff = now.saturating_sub(b.cfg.completed_retention.as_millis() as u64) as i64;
    conn.execute(&prepared(&conn, &b.sql.prune_messages).await?, &[&cutoff])
        .await
        .map_err(|e| storage("pruning completed messages", e))?;
    conn.execute(&prepared(&conn, &b.sql.prune_keys).await?, &[&(now as i64)])
        .await
        .map_err(|e| storage("pruning idempotency keys", e))?;
    drop(conn);
    // Other instances' changes reach the snapshot here.
    b.refresh_depth().await
}
