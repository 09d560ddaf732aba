//! Opening the embedded queue's database, and checking it.
//!
//! `open` creates or opens the redb file (redb repairs it if the last run crashed:
//! every committed transaction is there, nothing half-written is), checks the schema
//! version and loads the small amount of state kept in memory: counters (stored in
//! the same transactions as the data, so exact after any crash), the ordering
//! sequence and the last message id. Leases are not restored: everything pending is
//! due again after a restart.
//!
//! `verify` recomputes the counters from the records and checks every index
//! invariant listed in `tables.rs`; tests run it after random operations and admins
//! can run it as a consistency check (it reads everything, so it is O(stored data)).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata};

use super::journal::{Journal, JournalMessage, Record};
use super::ops::Batch;
use super::state::{now_ms, Counters, IdGen};
use super::tables::*;

/// File name of the database inside the configured queue directory.
pub const DB_FILE: &str = "queue.redb";

/// What `open` recovers.
pub(crate) struct Recovered {
    pub db: Arc<Database>,
    pub counters: Counters,
    pub seq: u64,
    pub ids: IdGen,
    pub journal: Journal,
}

/// Journaled messages moved into redb per transaction at start-up.
const RESTORE_CHUNK: usize = 10_000;

/// Page cache of the queue file.
const CACHE_BYTES: usize = 64 << 20;

/// Opens (or creates) the queue in directory `dir`.
pub(crate) fn open(dir: &Path) -> Res<Recovered> {
    std::fs::create_dir_all(dir)
        .map_err(|e| EmbeddedError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
    // redb's page cache defaults to 1 GiB, which a deep backlog fills: cap it so
    // memory stays bounded however many events are pending (they live on disk).
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(dir.join(DB_FILE))?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let mut counters = Counters::default();
    let mut seq = 0;
    let last_id;
    {
        // Opening a table creates it, so a fresh file gets every table.
        let messages = txn.open_table(MESSAGES)?;
        txn.open_table(DELIVERIES)?;
        txn.open_table(DUE)?;
        txn.open_table(ORDER)?;
        txn.open_table(DLQ)?;
        txn.open_table(IDEM)?;
        txn.open_table(IDEM_EXPIRY)?;
        txn.open_table(COMPLETED)?;
        let mut stats = txn.open_table(STATS)?;
        let version = stats.get(("schema", "version"))?.map(|g| g.value());
        match version {
            None => drop(stats.insert(("schema", "version"), SCHEMA_VERSION)?),
            Some(SCHEMA_VERSION) => {}
            Some(found) => return Err(EmbeddedError::Schema { found }),
        }
        for entry in stats.iter()? {
            let (k, v) = entry?;
            let (kind, name) = k.value();
            match kind {
                "depth" => {
                    counters.depth.insert(name.to_owned(), v.value());
                }
                "dlq" => {
                    counters.dlq.insert(name.to_owned(), v.value());
                }
                "seq" => seq = v.value(),
                _ => {}
            }
        }
        last_id = messages.last()?.map(|(k, _)| k.value().to_owned());
    }
    txn.commit()?;
    let (journal, counters, seq, last_journaled) = restore_journal(&db, dir, counters, seq)?;
    let last = last_id.max(last_journaled);
    Ok(Recovered {
        db: Arc::new(db),
        counters,
        seq,
        ids: IdGen::after(last.as_deref()),
        journal,
    })
}

/// Moves every journaled message redb lacks into redb: pending for the subscribers
/// without an `ACK`, completed when all have one; then deletes the old journal
/// segments. Two passes over the journal (acks first, then messages in chunks, each
/// committed durably), so memory holds one segment and one chunk at a time, and a
/// crash midway only repeats work (`restore` skips what redb has). Returns the
/// journal (on a fresh segment), the updated counters and sequence, and the greatest
/// journaled id.
fn restore_journal(
    db: &Database,
    dir: &Path,
    counters: Counters,
    seq: u64,
) -> Res<(Journal, Counters, u64, Option<String>)> {
    let mut journal = Journal::open(dir)?;
    let mut acked: HashMap<String, Vec<String>> = HashMap::new();
    let mut last: Option<String> = None;
    journal.replay(|rec| {
        match rec {
            Record::Enq(m) => last = Some(m.id),
            Record::Ack { id, sub } => acked.entry(id).or_default().push(sub),
        }
        Ok(())
    })?;
    let (mut counters, mut seq, mut restored) = (counters, seq, 0usize);
    let mut chunk: Vec<JournalMessage> = Vec::with_capacity(RESTORE_CHUNK);
    let flush = |chunk: &mut Vec<JournalMessage>, counters: &mut Counters, seq: &mut u64| {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let mut batch = Batch::open(&txn, now_ms(), counters.clone(), *seq)?;
        for m in chunk.drain(..) {
            let subs = acked.get(&m.id).map_or(&[][..], Vec::as_slice);
            batch.restore(&m, subs)?;
        }
        let done = batch.finish()?;
        txn.commit()?;
        (*counters, *seq) = (done.counters, done.seq);
        Ok::<(), EmbeddedError>(())
    };
    journal.replay(|rec| {
        if let Record::Enq(m) = rec {
            restored += 1;
            chunk.push(m);
            if chunk.len() >= RESTORE_CHUNK {
                flush(&mut chunk, &mut counters, &mut seq)?;
            }
        }
        Ok(())
    })?;
    flush(&mut chunk, &mut counters, &mut seq)?;
    if restored > 0 {
        tracing::info!(messages = restored, "restored messages from the journal");
    }
    let old = journal.older().to_vec();
    journal.retire(&old);
    Ok((journal, counters, seq, last))
}

/// Recomputes the counters from the records and checks the index invariants.
pub(crate) fn verify(db: &Database) -> Res<Counters> {
    let txn = db.begin_read()?;
    let messages = txn.open_table(MESSAGES)?;
    let deliveries = txn.open_table(DELIVERIES)?;
    let due = txn.open_table(DUE)?;
    let order = txn.open_table(ORDER)?;
    let dlq = txn.open_table(DLQ)?;
    let completed = txn.open_table(COMPLETED)?;
    let bad = |what: String| EmbeddedError::Corrupt(what);

    let mut counters = Counters::default();
    let (mut due_expected, mut order_expected) = (0u64, 0u64);
    for entry in deliveries.iter()? {
        let (k, v) = entry?;
        let (id, sub) = k.value();
        let rec: DeliveryRecord = decode(v.value())?;
        let Some(at) = rec.next_at() else { continue };
        let meta_raw = messages
            .get(id)?
            .ok_or_else(|| bad(format!("{id}: delivery without message")))?;
        let meta: MessageMeta = decode_meta(meta_raw.value())?;
        let is_due = due.get((sub, at, id))?.is_some();
        match (rec.order_seq, meta.ordering_key.as_deref()) {
            (None, None) if is_due => due_expected += 1,
            (Some(seq), Some(key)) => {
                order_expected += 1;
                let chained = order.get((sub, key, seq))?.is_some_and(|g| g.value() == id);
                let head = order
                    .range((sub, key, 0)..=(sub, key, u64::MAX))?
                    .next()
                    .transpose()?;
                let is_head = head.is_some_and(|(s, _)| s.value().2 == seq);
                if !chained || is_head != is_due {
                    return Err(bad(format!(
                        "{id}/{sub}: chained={chained} head={is_head} due={is_due}"
                    )));
                }
                due_expected += u64::from(is_due);
            }
            _ => return Err(bad(format!("{id}/{sub}: pending but not indexed"))),
        }
    }
    if due.len()? != due_expected || order.len()? != order_expected {
        return Err(bad(format!(
            "index sizes: due {} (expected {due_expected}), order {} (expected {order_expected})",
            due.len()?,
            order.len()?
        )));
    }
    for entry in messages.iter()? {
        let (k, v) = entry?;
        let id = k.value();
        let (meta, body): (MessageMeta, &[u8]) = decode_with_body(v.value())?;
        let mut pending = false;
        for d in deliveries.range((id, "")..)? {
            let (dk, dv) = d?;
            if dk.value().0 != id {
                break;
            }
            pending |= decode::<DeliveryRecord>(dv.value())?.next_at().is_some();
        }
        match meta.completed_at_ms {
            None if pending => Counters::add(&mut counters.depth, &meta.topic, 1),
            Some(at) if !pending && body.is_empty() && completed.get((at, id))?.is_some() => {}
            _ => {
                return Err(bad(format!(
                    "{id}: completed={:?} pending={pending}",
                    meta.completed_at_ms
                )))
            }
        }
    }
    for entry in dlq.iter()? {
        let (_, v) = entry?;
        let dead: DeadLetterMeta = decode_meta(v.value())?;
        Counters::add(&mut counters.dlq, &dead.message.topic, 1);
    }
    Ok(counters)
}
