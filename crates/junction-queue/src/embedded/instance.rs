//! One opening of the queue directory: the redb file, the in-memory state and the
//! writer thread. [`EmbeddedBroker`](super::EmbeddedBroker) holds the current one
//! and replaces it when the disk made redb refuse writes (see `guard.rs`).

use std::path::Path;
use std::sync::Arc;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::hot;
use super::recovery;
use super::state::{Counters, MemState};
use super::tables::{EmbeddedError, Res};
use super::writer::{self, Core, Op};
use super::EmbeddedConfig;
use crate::types::{QueueError, StorageError};

/// Requests that may wait for the writer before `enqueue` itself waits (back-pressure).
const CHANNEL_CAPACITY: usize = 4096;

/// The open database, its memory and its writer.
pub(super) struct Instance {
    pub db: Arc<Database>,
    pub mem: Arc<MemState>,
    /// Device and inode of the database file as opened (see [`Instance::moved`]).
    file: Option<(u64, u64)>,
    tx: mpsc::Sender<Op>,
    /// Resolves when the writer thread has stopped.
    writer: parking_lot::Mutex<Option<oneshot::Receiver<()>>>,
}

impl Instance {
    /// Opens the directory and recovers its state; `previous` (the instance this
    /// one replaces) hands over its subscribers' notifiers.
    pub async fn open(
        cfg: &EmbeddedConfig,
        previous: Option<&MemState>,
    ) -> Result<Self, QueueError> {
        let dir = cfg.path.clone();
        let rec = blocking(move || recovery::open(&dir)).await?;
        let mem = Arc::new(previous.map(MemState::adopting).unwrap_or_default());
        *mem.hot.lock() = hot::Hot::with_limits(cfg.hot_max_messages, cfg.hot_max_bytes);
        let mut published = rec.counters.clone();
        if let Some(o) = &rec.overflow {
            for (topic, n) in &o.depth {
                Counters::add(&mut published.depth, topic, *n as i64);
            }
            for (sub, n) in &o.subs {
                Counters::add(&mut published.backlog, sub, *n as i64);
            }
            *mem.overflow.lock() = Some(o.summary());
        }
        *mem.counters.write() = published;
        let mut core = Core::new(
            Arc::clone(&rec.db),
            Arc::clone(&mem),
            rec.counters,
            rec.seq,
            rec.ids,
            rec.journal,
        );
        core.overflow = rec.overflow;
        core.limit = cfg
            .max_depth
            .filter(|m| *m > 0)
            .map(|max| writer::limits::BacklogLimit {
                max,
                on_full: cfg.on_full,
            });
        core.retention_ms = u64::try_from(cfg.completed_retention.as_millis()).unwrap_or(u64::MAX);
        core.max_completed = cfg.max_completed;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        // Loads what waits in the journal before the first op arrives.
        core.resume();
        let writer = writer::spawn(core, rx).map_err(|e| {
            QueueError::Storage(StorageError::new("starting the embedded queue writer", e))
        })?;
        Ok(Self {
            db: rec.db,
            mem,
            file: file_id(&cfg.path),
            tx,
            writer: parking_lot::Mutex::new(Some(writer)),
        })
    }

    /// Whether the database file in `dir` is no longer the one this instance has
    /// open (the directory was removed or replaced).
    pub fn moved(&self, dir: &Path) -> bool {
        self.file.is_some() && file_id(dir) != self.file
    }

    /// Flushes and stops the writer; later writes fail with `Closed`.
    pub async fn close(&self) -> Result<(), QueueError> {
        let res = match self.call(Op::Close).await {
            Err(QueueError::Closed) => Ok(()),
            other => other,
        };
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            if handle.await.is_err() {
                tracing::error!("queue writer ended abnormally");
            }
        }
        res
    }

    /// Sends an op to the writer and waits for its answer.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Op,
    ) -> Result<T, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Sends an op no one waits for.
    pub async fn send(&self, op: Op) -> Result<(), QueueError> {
        self.tx.send(op).await.map_err(|_| QueueError::Closed)
    }

    /// Runs a read off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &MemState) -> Res<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        let (db, mem) = (Arc::clone(&self.db), Arc::clone(&self.mem));
        blocking(move || {
            let res = f(&db, &mem);
            if let Some(kind) = res.as_ref().err().and_then(EmbeddedError::disk_fault) {
                // redb fails reads too once a write failed: the same fault.
                mem.note_fault(
                    kind,
                    res.as_ref()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                );
            }
            res
        })
        .await
    }
}

/// Device and inode of the database file in `dir`, if it is there.
fn file_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join(recovery::DB_FILE)).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Runs blocking redb work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Res<T> + Send + 'static,
) -> Result<T, QueueError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(res) => res.map_err(writer::storage),
        Err(e) => Err(QueueError::Storage(StorageError::new(
            "embedded queue task",
            e,
        ))),
    }
}
