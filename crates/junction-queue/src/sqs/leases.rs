//! Keeps in-flight deliveries hidden while their subscriber is still working
//! on them.
//!
//! SQS gives a received message out again once its visibility timeout passes,
//! whether or not the receiver is done. A delivery that takes longer than the
//! timeout (a slow subscriber, a backlog of retries ahead of it in the
//! dispatcher) would then reach a second instance as well: a duplicate. So
//! every delivery holds a [`Lease`] from receive until it is settled or
//! dropped, and one task per broker extends the visibility of every leased
//! message to a full timeout again every third of it (batches of ten, SQS's
//! limit). A lease dropped without settling stops being extended, and SQS
//! gives the message out again after the timeout, as for a crashed instance.
//!
//! Settling a lease removes it. A settlement that shortens the visibility (a
//! retry, a release) then waits for an extension round that may have included
//! it, so a late extension does not overwrite it; an ack (a delete) does not
//! wait: extending a deleted receipt just fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use parking_lot::Mutex;

use super::{visibility_secs, Shared};

/// Most entries in one `ChangeMessageVisibilityBatch` (SQS's limit).
const BATCH: usize = 10;

/// The receipts being worked on, by queue URL.
#[derive(Default)]
pub(crate) struct Leases {
    held: Arc<Mutex<HashMap<u64, (String, String)>>>,
    next: AtomicU64,
    /// Held for the length of one extension round (see the module doc).
    round: tokio::sync::Mutex<()>,
}

impl Leases {
    /// Starts extending `receipt` (a message of the queue at `url`).
    pub(crate) fn take(&self, url: &str, receipt: &str) -> Lease {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.held
            .lock()
            .insert(id, (url.to_owned(), receipt.to_owned()));
        Lease {
            id,
            held: Arc::downgrade(&self.held),
        }
    }

    /// Stops extending `lease`, once any round that may still extend it is
    /// over (before making its message visible sooner than a round would).
    pub(crate) async fn end(&self, lease: Lease) {
        drop(lease);
        drop(self.round.lock().await);
    }

    /// Messages currently leased.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().len()
    }
}

/// One delivery's claim on its message; dropping it ends the extensions.
pub(crate) struct Lease {
    id: u64,
    held: Weak<Mutex<HashMap<u64, (String, String)>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(held) = self.held.upgrade() {
            held.lock().remove(&self.id);
        }
    }
}

/// How often leased messages are hidden again: a third of the timeout, so
/// one failed round still leaves time for the next.
fn period(visibility: Duration) -> Duration {
    (visibility / 3).max(Duration::from_millis(200))
}

/// Extends every leased message's visibility until the broker is dropped or closed.
pub(crate) async fn extend_forever(weak: Weak<Shared>) {
    let Some(visibility) = weak.upgrade().map(|s| s.cfg.visibility_timeout) else {
        return;
    };
    let mut tick = tokio::time::interval(period(visibility));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(s) = weak.upgrade() else { return };
        if s.closed.load(Ordering::Acquire) {
            return;
        }
        extend_once(&s, visibility).await;
    }
}

async fn extend_once(s: &Shared, visibility: Duration) {
    let _round = s.leases.round.lock().await;
    let mut by_url: HashMap<String, Vec<String>> = HashMap::new();
    for (url, receipt) in s.leases.held.lock().values() {
        by_url.entry(url.clone()).or_default().push(receipt.clone());
    }
    // Every batch at once (a round must end well within a third of the
    // timeout, whatever the number of deliveries in flight).
    let batches = by_url.iter().flat_map(|(url, receipts)| {
        receipts.chunks(BATCH).map(move |chunk| {
            let entries = chunk.iter().enumerate().map(|(i, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(visibility_secs(visibility))
                    .build()
                    .expect("id and receipt are set")
            });
            s.sqs
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries.collect()))
                .send()
        })
    });
    for sent in futures::future::join_all(batches).await {
        match sent {
            Ok(out) if !out.failed().is_empty() => tracing::debug!(
                failed = out.failed().len(),
                "some sqs deliveries could not be kept hidden (settled meanwhile?)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %aws_sdk_sqs::error::DisplayErrorContext(e),
                "could not keep in-flight sqs deliveries hidden; they may be delivered again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_lease_is_no_longer_extended() {
        let leases = Leases::default();
        let a = leases.take("u", "r1");
        let _b = leases.take("u", "r2");
        assert_eq!(leases.len(), 2);
        drop(a);
        assert_eq!(leases.len(), 1);
    }

    #[tokio::test]
    async fn ending_a_lease_waits_for_a_running_round() {
        let leases = Arc::new(Leases::default());
        let lease = leases.take("u", "r");
        let round = leases.round.lock().await;
        let ending = tokio::spawn({
            let leases = leases.clone();
            async move { leases.end(lease).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ending.is_finished(), "ended while a round was running");
        assert_eq!(leases.len(), 0, "removed before waiting");
        drop(round);
        ending.await.unwrap();
    }

    #[test]
    fn extensions_run_three_times_per_timeout() {
        assert_eq!(period(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(
            period(Duration::from_millis(300)),
            Duration::from_millis(200)
        );
    }
}
