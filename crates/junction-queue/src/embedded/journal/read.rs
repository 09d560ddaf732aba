//! Reading the journal back: replay at start-up, loading overflowed messages from
//! a position, finding one message for a status look-up, and the record decoder.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;

use super::{io, segment_path, JournalMessage, Pos, Record, KIND_ACK, KIND_ENQ};
use crate::embedded::tables::{EmbeddedError, Res};

/// Calls `f` with every record of `segments` of the journal in `dir` (a journal
/// directory), in order, one segment in memory at a time; a segment's torn tail (a
/// crash while writing) is skipped.
pub(crate) fn replay(
    dir: &Path,
    segments: &[u64],
    mut f: impl FnMut(Record) -> Res<()>,
) -> Res<()> {
    for seg in segments {
        let path = segment_path(dir, *seg);
        let mut raw = Vec::new();
        File::open(&path)
            .and_then(|mut file| file.read_to_end(&mut raw))
            .map_err(|e| io("read", &path, e))?;
        // Record by record, so memory holds the segment's bytes and one record.
        let mut rest: &[u8] = &raw;
        while !rest.is_empty() {
            let Some(rec) = decode_one(&mut rest) else {
                tracing::warn!(segment = %path.display(), "journal segment ends in a torn record (crash while writing); ignoring the tail");
                break;
            };
            f(rec)?;
        }
    }
    Ok(())
}

/// Bytes read from a segment at a time while loading overflowed messages.
const READ_CHUNK: u64 = 4 << 20;

/// See [`Journal::read_enqs`]; `dir` is the journal directory.
pub(crate) fn read_enqs(
    dir: &Path,
    mut at: Pos,
    upto: Pos,
    max: usize,
    max_bytes: usize,
) -> Res<(Vec<(Pos, JournalMessage)>, Pos)> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let full = |n: usize, b: usize| n >= max || (n > 0 && b >= max_bytes);
    while !full(out.len(), bytes) && at < upto {
        let path = segment_path(dir, at.segment);
        let end = if at.segment == upto.segment {
            upto.offset
        } else {
            match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                // Past the last segment (a reader that does not know the head): done.
                Err(_) => break,
            }
        };
        if at.offset >= end {
            // The rest of an older segment: on to the next one.
            at = Pos {
                segment: at.segment + 1,
                offset: 0,
            };
            continue;
        }
        let mut chunk = READ_CHUNK;
        loop {
            let left = end - at.offset;
            let want = left.min(chunk);
            let raw = read_at(&path, at.offset, want)?;
            let mut rest: &[u8] = &raw;
            let mut progressed = false;
            while !full(out.len(), bytes) {
                let before = rest.len();
                let Some(rec) = decode_one(&mut rest) else {
                    break;
                };
                let pos = at;
                at.offset += (before - rest.len()) as u64;
                progressed = true;
                if let Record::Enq(m) = rec {
                    bytes += m.body.len();
                    out.push((pos, m));
                }
            }
            if progressed || full(out.len(), bytes) {
                break;
            }
            if want < left {
                // One record longer than the chunk: read exactly that record.
                let len = raw
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                chunk = 8 + u64::from(len);
                continue;
            }
            if at.segment < upto.segment {
                // A torn record ends this (abandoned) segment: on to the next one.
                at = Pos {
                    segment: at.segment + 1,
                    offset: 0,
                };
                break;
            }
            return Err(EmbeddedError::Corrupt(format!(
                "journal: bad record at {}:{}",
                path.display(),
                at.offset
            )));
        }
    }
    Ok((out, at))
}

/// Finds the `ENQ` of `id` at or after `from` (ids grow along the journal, so the
/// search stops at the first greater one). For status look-ups of overflowed
/// messages; `dir` is the queue directory.
pub(crate) fn find_enq(queue_dir: &Path, mut from: Pos, id: &str) -> Res<Option<JournalMessage>> {
    let dir = queue_dir.join("journal");
    let end = Pos {
        segment: u64::MAX,
        offset: 0,
    };
    loop {
        let (read, next) = read_enqs(&dir, from, end, 1024, 16 << 20)?;
        if read.is_empty() {
            return Ok(None);
        }
        for (_, m) in read {
            match m.id.as_str().cmp(id) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(Some(m)),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
        from = next;
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> Res<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut raw = vec![0u8; len as usize];
    let mut f = File::open(path).map_err(|e| io("open", path, e))?;
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut raw))
        .map_err(|e| io("read", path, e))?;
    Ok(raw)
}

/// Decodes the records of a journal segment's bytes, as start-up recovery
/// does, until the first torn or corrupt one; returns how many decoded. For
/// the fuzz target (a recovered file may hold anything).
pub(crate) fn decode_segment(mut raw: &[u8]) -> usize {
    let mut n = 0;
    while !raw.is_empty() {
        if decode_one(&mut raw).is_none() {
            break;
        }
        n += 1;
    }
    n
}

fn decode_one(rest: &mut &[u8]) -> Option<Record> {
    let len = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
    let mut p = take(rest, len)?;
    if crc32fast::hash(p) != crc {
        return None;
    }
    match *take(&mut p, 1)?.first()? {
        KIND_ENQ => {
            let id = get_str(&mut p)?;
            let enqueued_at_ms = u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?);
            let topic = get_str(&mut p)?;
            let content_type = match *take(&mut p, 1)?.first()? {
                0 => None,
                _ => Some(get_str(&mut p)?),
            };
            let n = get_len(&mut p)?;
            let mut headers = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                headers.push((get_str(&mut p)?, get_str(&mut p)?));
            }
            let n = get_len(&mut p)?;
            let mut subscribers = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                subscribers.push(get_str(&mut p)?);
            }
            let blen =
                usize::try_from(u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?)).ok()?;
            let body = Bytes::copy_from_slice(take(&mut p, blen)?);
            let idempotency = match *take(&mut p, 1)?.first()? {
                0 => None,
                _ => Some((
                    get_str(&mut p)?,
                    u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?),
                )),
            };
            Some(Record::Enq(JournalMessage {
                id,
                topic,
                content_type,
                headers,
                subscribers,
                enqueued_at_ms,
                body,
                idempotency,
            }))
        }
        KIND_ACK => Some(Record::Ack {
            id: get_str(&mut p)?,
            sub: get_str(&mut p)?,
        }),
        _ => None,
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn get_len(p: &mut &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(take(p, 4)?.try_into().ok()?) as usize)
}

fn get_str(p: &mut &[u8]) -> Option<String> {
    let n = get_len(p)?;
    String::from_utf8(take(p, n)?.to_vec()).ok()
}
