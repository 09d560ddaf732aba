//! Recovering from a disk that refused a write (full, read-only), with no restart.
//!
//! What a failed write leaves: the journal cuts the failed batch off its segment and
//! takes the next batch as before (`journal/`); redb, after a failed write or sync,
//! refuses every later write until the file is reopened (its `PreviousIo`). The
//! writer records the fault in memory (`MemState::note_fault`, one log line); from
//! then on [`health`](crate::IndexedStore::health) fails, so `/readyz` answers 503
//! and `junction_queue_connected` is 0. Enqueues are not refused up front: each one
//! still tries, and gets 503 while the disk refuses it.
//!
//! Once a second this guard tries to recover:
//! 1. after a database fault, it closes the instance, waits for readers to let go
//!    of the file and opens the directory again: the recovery a restart runs, so
//!    every accepted event (in the journal or in redb) is still delivered, and
//!    deliveries in flight are delivered again (at-least-once);
//! 2. it writes and syncs a probe file of [`PROBE_BYTES`] in the directory, then
//!    makes a durable commit: both pass only once the disk takes writes again;
//! 3. it puts the instance back in service and clears the fault.
//!
//! A reopen that fails (the disk is still full) leaves no file behind and is
//! tried again a second later. `close` and a reopen exclude each other.
//!
//! A queue directory removed (or replaced) under the open files is noticed here
//! too, within a second: writes would go to unlinked files and be lost at the
//! next start, so new events are refused up front; what is pending is still
//! delivered from the open files, and once nothing is, the queue starts over in
//! a new directory at the configured path (dead letters went with the old one).
//! Until then new events get 503, however long that takes (a retry due in an
//! hour keeps it refusing for an hour; a restart starts over at once).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::instance::{blocking, Instance};
use super::state::Fault;
use super::tables::{DiskFault, EmbeddedError};
use super::writer::Op;
use super::EmbeddedBroker;

/// How often a fault is looked at and recovery tried.
const PERIOD: Duration = Duration::from_secs(1);
/// Size of the probe write: room for more than one small batch.
pub(super) const PROBE_BYTES: usize = 256 << 10;
/// The probe's file name in the queue directory (deleted after each probe).
const PROBE_FILE: &str = ".write-probe";
/// Longest wait for readers of a closed instance to let go of the file.
const LET_GO: Duration = Duration::from_secs(5);

/// Watches `broker` until it is closed or dropped.
pub(super) fn spawn(broker: Weak<EmbeddedBroker>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PERIOD).await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            if broker.closed() {
                return;
            }
            broker.check_directory();
            if let Err(e) = broker.recover().await {
                tracing::debug!(error = %e, "the queue's disk still refuses writes");
            }
        }
    });
}

impl EmbeddedBroker {
    /// Notices a queue directory removed or replaced under the open files.
    fn check_directory(&self) {
        let Some(inst) = self.live.load_full() else {
            return;
        };
        let vanished = |f: Fault| f.kind == DiskFault::Vanished;
        if inst.mem.fault().is_some_and(vanished) || !inst.moved(&self.cfg.path) {
            return;
        }
        let error = format!(
            "the queue directory {} was removed or replaced while in use",
            self.cfg.path.display()
        );
        tracing::error!(%error, "new events get 503 until what is pending has been delivered; then the queue starts over there");
        inst.mem.note_fault(DiskFault::Vanished, error);
    }

    /// One recovery attempt, when there is a fault.
    async fn recover(&self) -> Result<(), String> {
        let live = self.live.load_full();
        let fault = live.as_ref().map(|i| i.mem.fault());
        match (live, fault) {
            (Some(_), Some(None)) => Ok(()),
            (Some(inst), Some(Some(fault))) if fault.kind == DiskFault::Journal => {
                check(&self.cfg.path, &inst).await?;
                if inst.mem.clear_fault(fault.generation) {
                    tracing::info!("the queue's disk takes writes again; accepting events");
                }
                Ok(())
            }
            (Some(inst), Some(Some(fault))) if fault.kind == DiskFault::Vanished => {
                // The open (unlinked) files still deliver what they hold; only an
                // empty queue may start over in a new directory. The writer refuses
                // enqueues from the fault on; a round trip through it first, so
                // the count includes every enqueue it took before.
                inst.call(Op::Flush).await.map_err(|e| e.to_string())?;
                let pending = inst.mem.counters.read().total();
                if pending > 0 {
                    return Err(format!(
                        "{pending} events still to deliver from the removed directory"
                    ));
                }
                self.reopen(Some(inst), Some(fault)).await
            }
            (live, fault) => self.reopen(live, fault.flatten()).await,
        }
    }

    /// Replaces the instance whose redb refuses writes (or none, after a reopen
    /// that failed) with a freshly opened one that has passed [`check`].
    async fn reopen(&self, old: Option<Arc<Instance>>, fault: Option<Fault>) -> Result<(), String> {
        // `close` waits for a reopen under way, and none starts after it.
        let _switch = self.switch.lock().await;
        if self.closed() {
            return Ok(());
        }
        if let Some(old) = old {
            let reason = fault.map_or_else(String::new, |f| f.error);
            tracing::warn!(error = %reason, "reopening the embedded queue after a failed write");
            self.live.store(None);
            if let Err(e) = old.close().await {
                tracing::debug!(error = %e, "closing the failed queue instance");
            }
            let deadline = Instant::now() + LET_GO;
            while (Arc::strong_count(&old) > 1 || Arc::strong_count(&old.db) > 1)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let previous = self.mem.load_full();
        let inst = Instance::open(&self.cfg, Some(&previous))
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = check(&self.cfg.path, &inst).await {
            let _ = inst.close().await;
            return Err(e);
        }
        let inst = Arc::new(inst);
        self.mem.store(Arc::clone(&inst.mem));
        self.live.store(Some(Arc::clone(&inst)));
        inst.mem.wake_all();
        tracing::info!("embedded queue reopened; the disk takes writes again; accepting events");
        Ok(())
    }
}

/// Whether the disk takes writes: a synced probe file, then a durable commit.
async fn check(dir: &Path, inst: &Instance) -> Result<(), String> {
    let path = dir.join(PROBE_FILE);
    blocking(move || probe(&path))
        .await
        .map_err(|e| e.to_string())?;
    inst.call(Op::Flush).await.map_err(|e| e.to_string())
}

fn probe(path: &Path) -> Result<(), EmbeddedError> {
    let io = |source| EmbeddedError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    };
    let written = std::fs::File::create(path).and_then(|mut f| {
        f.write_all(&[0u8; PROBE_BYTES])?;
        f.sync_data()
    });
    let removed = std::fs::remove_file(path);
    written.map_err(io)?;
    removed.map_err(io)
}
