//! Read paths of the embedded queue: leasing, due times, status and DLQ listing.
//!
//! Reads use redb read transactions (MVCC snapshots), so they never wait for the
//! writer's fsync. Leasing is the one read that touches memory: it holds the
//! subscriber's lease lock while it opens its snapshot and scans the due index.
//! The writer drops a lease only after the commit that moved or removed the due
//! entry, and it takes the same lock to do so; hence a scan either runs on a
//! snapshot that already lacks the entry, or still sees the lease and skips it.
//! A delivery is therefore never leased twice at once.

use std::ops::Bound;

use redb::{Database, ReadableTable};

use super::state::MemState;
use super::tables::*;
use crate::types::{
    split_dead_letter_id, DeadLetter, DlqFilter, DlqPage, Lease, MessageId, MessageStatus,
    SubscriberStatus,
};

/// Largest DLQ page returned at once.
pub(crate) const MAX_PAGE: usize = 1000;

/// Leases up to `max` due deliveries of `sub` that nobody holds.
pub(crate) fn lease_due(
    db: &Database,
    mem: &MemState,
    sub: &str,
    now: u64,
    max: usize,
) -> Res<Vec<Lease>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let state = mem.subscriber(sub);
    let mut picked: Vec<String> = Vec::new();
    let gen = state.cold_gen();
    let txn = {
        let mut leases = state.leases();
        let txn = db.begin_read()?;
        let due = txn.open_table(DUE)?;
        let mut seen_any = false;
        for entry in due.range((sub, 0u64, "")..)? {
            let (k, _) = entry?;
            let (s, at, id) = k.value();
            if s != sub {
                break;
            }
            seen_any = true;
            if at > now || picked.len() >= max {
                break;
            }
            if !leases.contains(id) {
                picked.push(id.to_owned());
            }
        }
        if !seen_any {
            state.saw_no_cold(gen);
        }
        leases.extend(picked.iter().cloned());
        txn
    };
    // Same snapshot as the scan, so every picked delivery is there and pending.
    let load = || -> Res<Vec<Lease>> {
        let messages = txn.open_table(MESSAGES)?;
        let deliveries = txn.open_table(DELIVERIES)?;
        let mut out = Vec::with_capacity(picked.len());
        for id in &picked {
            let missing = || EmbeddedError::Corrupt(format!("due entry {id}/{sub} without record"));
            let raw = messages.get(id.as_str())?.ok_or_else(missing)?;
            let (meta, body): (MessageMeta, &[u8]) = decode_with_body(raw.value())?;
            let rec: DeliveryRecord = decode(
                deliveries
                    .get((id.as_str(), sub))?
                    .ok_or_else(missing)?
                    .value(),
            )?;
            out.push(Lease {
                message: std::sync::Arc::new(meta.to_message(body)),
                subscriber: sub.to_owned(),
                attempts: rec.attempts,
                first_enqueued_ms: meta.enqueued_at_ms,
            });
        }
        Ok(out)
    };
    load().inspect_err(|_| {
        let mut leases = state.leases();
        for id in &picked {
            leases.remove(id);
        }
    })
}

/// Earliest due time among the unleased pending deliveries of `sub`.
pub(crate) fn next_due_at(db: &Database, mem: &MemState, sub: &str) -> Res<Option<u64>> {
    let state = mem.subscriber(sub);
    let leases = state.leases();
    let txn = db.begin_read()?;
    let due = txn.open_table(DUE)?;
    for entry in due.range((sub, 0u64, "")..)? {
        let (k, _) = entry?;
        let (s, at, id) = k.value();
        if s != sub {
            break;
        }
        if !leases.contains(id) {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// Per-subscriber state of a message, ordered as its subscriber list.
pub(crate) fn message_status(
    db: &Database,
    mem: &MemState,
    id: &str,
) -> Res<Option<MessageStatus>> {
    let txn = db.begin_read()?;
    let messages = txn.open_table(MESSAGES)?;
    let deliveries = txn.open_table(DELIVERIES)?;
    let Some(raw) = messages.get(id)? else {
        return Ok(None);
    };
    let mut meta: MessageMeta = decode_meta(raw.value())?;
    let mut subscribers = Vec::new();
    for (sub, rec) in meta
        .subscribers
        .iter()
        .zip(std::mem::take(&mut meta.final_states))
    {
        subscribers.push(SubscriberStatus {
            subscriber: sub.clone(),
            next_attempt_at_ms: None,
            state: rec.state,
            attempts: rec.attempts,
            history: rec.history,
            leased: false,
        });
    }
    for entry in deliveries.range((id, "")..)? {
        let (k, v) = entry?;
        let (mid, sub) = k.value();
        if mid != id {
            break;
        }
        let rec: DeliveryRecord = decode(v.value())?;
        let leased = mem
            .existing_subscriber(sub)
            .is_some_and(|s| s.leases().contains(id));
        subscribers.push(SubscriberStatus {
            subscriber: sub.to_owned(),
            next_attempt_at_ms: rec.next_at(),
            state: rec.state,
            attempts: rec.attempts,
            history: rec.history,
            leased,
        });
    }
    let position = |s: &SubscriberStatus| meta.subscribers.iter().position(|n| *n == s.subscriber);
    subscribers.sort_by_key(|s| position(s).unwrap_or(usize::MAX));
    Ok(Some(MessageStatus {
        id: MessageId::new(meta.id),
        topic: meta.topic,
        ordering_key: meta.ordering_key,
        enqueued_at_ms: meta.enqueued_at_ms,
        completed_at_ms: meta.completed_at_ms,
        subscribers,
    }))
}

/// Walks dead letters after `after` (and up to `upto`, inclusive) that match `filter`,
/// calling `take` for each until it has `limit` of them; returns the cursor of the next
/// page if another match exists.
fn dlq_scan(
    db: &Database,
    filter: &DlqFilter,
    after: Option<&str>,
    upto: Option<&str>,
    limit: usize,
    mut take: impl FnMut(&str, DeadLetterMeta, &[u8]) -> Res<()>,
) -> Res<Option<String>> {
    let txn = db.begin_read()?;
    let dlq = txn.open_table(DLQ)?;
    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
    let upper = upto.map_or(Bound::Unbounded, Bound::Included);
    let (mut taken, mut last) = (0usize, None::<String>);
    for entry in dlq.range::<&str>((lower, upper))? {
        let (k, v) = entry?;
        let dl_id = k.value();
        let Some((_, sub)) = split_dead_letter_id(dl_id) else {
            continue;
        };
        let (dead, body): (DeadLetterMeta, &[u8]) = decode_with_body(v.value())?;
        if !filter.matches(&dead.message.topic, sub) {
            continue;
        }
        if taken == limit {
            return Ok(last);
        }
        take(dl_id, dead, body)?;
        taken += 1;
        last = Some(dl_id.to_owned());
    }
    Ok(None)
}

/// One page of dead letters.
pub(crate) fn dlq_list(
    db: &Database,
    filter: &DlqFilter,
    after: Option<&str>,
    limit: usize,
) -> Res<DlqPage> {
    let limit = limit.min(MAX_PAGE);
    if limit == 0 {
        return Ok(DlqPage::default());
    }
    let mut items = Vec::new();
    let next = dlq_scan(db, filter, after, None, limit, |dl_id, dead, body| {
        items.push(DeadLetter {
            id: dl_id.to_owned(),
            message: dead.message.to_message(body),
            subscriber: dead.subscriber,
            attempts: dead.attempts,
            reason: dead.reason,
            dead_at_ms: dead.dead_at_ms,
        });
        Ok(())
    })?;
    Ok(DlqPage { items, next })
}

/// Ids of matching dead letters, for replaying them in batches.
pub(crate) fn dlq_ids(
    db: &Database,
    filter: &DlqFilter,
    after: Option<&str>,
    upto: &str,
    limit: usize,
) -> Res<(Vec<String>, Option<String>)> {
    let mut ids = Vec::new();
    let next = dlq_scan(db, filter, after, Some(upto), limit, |dl_id, _, _| {
        ids.push(dl_id.to_owned());
        Ok(())
    })?;
    Ok((ids, next))
}

/// The greatest dead-letter id now stored.
pub(crate) fn dlq_last(db: &Database) -> Res<Option<String>> {
    let txn = db.begin_read()?;
    let dlq = txn.open_table(DLQ)?;
    let last = dlq.last()?.map(|(k, _)| k.value().to_owned());
    Ok(last)
}
