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

use super::journal::{replay, Journal, JournalMessage, Record};
use super::ops::Batch;
use super::state::{now_ms, Counters, IdGen};
use super::tables::*;
use super::writer::fastpath::Overflow;

/// File name of the database inside the configured queue directory.
pub const DB_FILE: &str = "queue.redb";

/// What `open` recovers.
pub(crate) struct Recovered {
    pub db: Arc<Database>,
    pub counters: Counters,
    pub seq: u64,
    pub ids: IdGen,
    pub journal: Journal,
    /// Undelivered messages kept in the journal, for the writer to load.
    pub overflow: Option<Overflow>,
}

/// Journaled messages moved into redb per transaction at start-up.
const RESTORE_CHUNK: usize = 10_000;
/// Bytes of copied journal records written at a time at start-up.
const COPY_BUFFER: usize = 8 << 20;

/// Page cache of the queue file.
const CACHE_BYTES: usize = 64 << 20;

/// Opens (or creates) the queue in directory `dir`.
pub(crate) fn open(dir: &Path) -> Res<Recovered> {
    std::fs::create_dir_all(dir).map_err(|e| EmbeddedError::Io {
        what: format!("cannot create {}", dir.display()),
        source: e,
    })?;
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
        counters.backlog = count_backlog(&txn.open_table(DUE)?, &txn.open_table(ORDER)?)?;
    }
    txn.commit()?;
    let r = restore_journal(&db, dir, counters, seq)?;
    let last = last_id.max(r.last);
    Ok(Recovered {
        db: Arc::new(db),
        counters: r.counters,
        seq: r.seq,
        ids: IdGen::after(last.as_deref()),
        journal: r.journal,
        overflow: r.overflow,
    })
}

/// Pending deliveries per subscriber in redb (not stored: counted at each start).
/// Every pending delivery is in `due` (unkeyed) or `order` (keyed), and a chain's
/// head is in both: so `due` + `order` − the number of chains.
fn count_backlog(
    due: &impl ReadableTable<(&'static str, u64, &'static str), ()>,
    order: &impl ReadableTable<(&'static str, &'static str, u64), &'static str>,
) -> Res<std::collections::BTreeMap<String, u64>> {
    let mut backlog = std::collections::BTreeMap::new();
    for entry in due.iter()? {
        let (k, _) = entry?;
        Counters::add(&mut backlog, k.value().0, 1);
    }
    let mut chain: Option<(String, String)> = None;
    for entry in order.iter()? {
        let (k, _) = entry?;
        let (sub, key, _) = k.value();
        if chain
            .as_ref()
            .is_some_and(|(s, c)| s.as_str() == sub && c.as_str() == key)
        {
            Counters::add(&mut backlog, sub, 1);
        } else {
            // A chain's first entry is its head, counted in `due` already.
            chain = Some((sub.to_owned(), key.to_owned()));
        }
    }
    Ok(backlog)
}

/// Resumes from the journal. Messages redb already has are left alone; ones some
/// subscribers acknowledged go into redb (pending for the others, or completed);
/// ones nobody acknowledged are copied, in order, into the fresh journal segment
/// and become the overflow the writer loads from. Then the old segments are
/// deleted. So a restart with a deep backlog costs a sequential copy, not a redb
/// insert per message, and memory holds one segment and one chunk at a time.
///
/// Crash-safe at every step: the old segments go only after the copy is synced and
/// the redb chunks are committed durably. A crash midway leaves old segments plus
/// a partial copy; ids grow along the journal, so the next start skips any `ENQ`
/// whose id is not greater than every id before it (the copy's duplicates).
fn restore_journal(db: &Database, dir: &Path, counters: Counters, seq: u64) -> Res<Restored> {
    let mut journal = Journal::open(dir)?;
    match restore_into(db, &mut journal, counters, seq) {
        Ok(r) => Ok(Restored {
            journal,
            counters: r.counters,
            seq: r.seq,
            last: r.last,
            overflow: r.overflow,
        }),
        Err(e) => {
            // The fresh segment holds at most part of a copy (the old segments stay):
            // a start that is retried, say on a full disk, leaves no files behind.
            journal.discard();
            Err(e)
        }
    }
}

/// [`restore_journal`]'s work, into `journal`'s fresh segment.
fn restore_into(
    db: &Database,
    journal: &mut Journal,
    counters: Counters,
    seq: u64,
) -> Res<Restored<()>> {
    let jdir = journal.dir().to_path_buf();
    let old = journal.older().to_vec();
    let mut acked: HashMap<String, Vec<String>> = HashMap::new();
    let mut last: Option<String> = None;
    replay(&jdir, &old, |rec| {
        match rec {
            Record::Enq(m) if last.as_ref().is_none_or(|l| m.id > *l) => last = Some(m.id),
            Record::Enq(_) => {}
            Record::Ack { id, sub } => acked.entry(id).or_default().push(sub),
        }
        Ok(())
    })?;
    let snapshot = db.begin_read()?;
    let stored = snapshot.open_table(MESSAGES)?;
    let (mut counters, mut seq) = (counters, seq);
    let (mut to_redb, mut copied) = (0usize, 0usize);
    let mut overflow: Option<Overflow> = None;
    // Messages to restore into redb, and (topic, key, id, expiry) of journaled keys.
    let mut chunk: Vec<JournalMessage> = Vec::with_capacity(RESTORE_CHUNK);
    let mut keys: Vec<(String, String, String, u64)> = Vec::new();
    let flush = |chunk: &mut Vec<JournalMessage>,
                 keys: &mut Vec<(String, String, String, u64)>,
                 counters: &mut Counters,
                 seq: &mut u64| {
        if chunk.is_empty() && keys.is_empty() {
            return Ok(());
        }
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let mut batch = Batch::open(&txn, now_ms(), counters.clone(), *seq)?;
        for m in chunk.drain(..) {
            let subs = acked.get(&m.id).map_or(&[][..], Vec::as_slice);
            batch.restore(m, subs)?;
        }
        for (topic, key, id, expires_at_ms) in keys.drain(..) {
            batch.idem_restore(&topic, &key, &id, expires_at_ms)?;
        }
        let done = batch.finish()?;
        txn.commit()?;
        (*counters, *seq) = (done.counters, done.seq);
        Ok::<(), EmbeddedError>(())
    };
    let mut max_seen: Option<String> = None;
    replay(&jdir, &old, |rec| {
        let Record::Enq(m) = rec else { return Ok(()) };
        if max_seen.as_ref().is_some_and(|l| m.id <= *l) {
            return Ok(()); // a copy left by an interrupted restart
        }
        max_seen = Some(m.id.clone());
        if let Some((key, expires_at_ms)) = &m.idempotency {
            keys.push((m.topic.clone(), key.clone(), m.id.clone(), *expires_at_ms));
            if keys.len() >= RESTORE_CHUNK {
                flush(&mut chunk, &mut keys, &mut counters, &mut seq)?;
            }
        }
        if stored.get(m.id.as_str())?.is_some() {
            return Ok(());
        }
        if acked.contains_key(&m.id) {
            to_redb += 1;
            chunk.push(m);
            if chunk.len() >= RESTORE_CHUNK {
                flush(&mut chunk, &mut keys, &mut counters, &mut seq)?;
            }
            return Ok(());
        }
        let o = overflow.get_or_insert_with(|| Overflow {
            cursor: journal.head(),
            ..Overflow::default()
        });
        o.count += 1;
        *o.depth.entry(m.topic.clone()).or_insert(0) += 1;
        for sub in &m.subscribers {
            *o.subs.entry(sub.clone()).or_insert(0) += 1;
        }
        journal.append_enq(&m);
        copied += 1;
        if journal.buffered() >= COPY_BUFFER {
            journal.sync()?;
        }
        Ok(())
    })?;
    flush(&mut chunk, &mut keys, &mut counters, &mut seq)?;
    journal.sync()?;
    drop(stored);
    drop(snapshot);
    if to_redb + copied > 0 {
        tracing::info!(
            into_redb = to_redb,
            kept_in_journal = copied,
            "resumed undelivered messages from the journal"
        );
    }
    journal.retire(&old);
    Ok(Restored {
        journal: (),
        counters,
        seq,
        last,
        overflow,
    })
}

/// What [`restore_journal`] hands over.
struct Restored<J = Journal> {
    journal: J,
    counters: Counters,
    seq: u64,
    last: Option<String>,
    overflow: Option<Overflow>,
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
        Counters::add(&mut counters.backlog, sub, 1);
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
