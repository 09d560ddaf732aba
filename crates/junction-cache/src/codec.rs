//! The wire format of cache entries and variant sets (Redis values, idempotency records).
//!
//! Why it exists (and is written by hand): the body is the bulk of every
//! entry. Here it is stored unframed and decoding hands it out as a zero-copy
//! slice of the buffer Redis returned; JSON would inflate it by a third
//! (base64), and postcard would copy it. A magic + version prefix lets a format
//! change read old entries as a clean miss instead of garbage.
//!
//! Layout of an entry (big-endian): magic `JCE`, version, status u16,
//! stored_at u64, fresh_for / stale_while_revalidate / stale_if_error u64 ms;
//! since version 2: initial_age u64 ms, flags u8 (bit 0 shared with
//! credentials, bit 1 revalidate when stale), selecting headers (u32 count,
//! then name, present u8, value); then the ETag, the headers (u32 count, name,
//! value), and the body (u64 length + bytes). Version 1 entries (no version-2
//! fields) still decode. A variant set is magic `JCV`, version, u32 count, then
//! each entry as u64 length + entry.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::entry::CachedResponse;

/// Format marker at the start of every encoded entry.
const MAGIC: &[u8; 3] = b"JCE";
/// Format marker at the start of an encoded variant set.
const VARIANTS_MAGIC: &[u8; 3] = b"JCV";
/// Current entry encoding version.
const VERSION: u8 = 2;
const FLAG_SHARED_WITH_CREDENTIALS: u8 = 1;
const FLAG_REVALIDATE_WHEN_STALE: u8 = 2;

/// Why an encoded entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer does not start with the entry marker.
    #[error("not a cache entry (bad magic)")]
    BadMagic,
    /// The entry was written by an unknown format version.
    #[error("unsupported cache entry version {0}")]
    UnsupportedVersion(u8),
    /// The buffer ended before the entry did, or has bytes past its end.
    #[error("cache entry is truncated or has trailing bytes")]
    BadLength,
    /// A header name or the ETag is not valid UTF-8.
    #[error("cache entry has a non-UTF-8 {0}")]
    NotUtf8(&'static str),
}

// === impl CachedResponse ===

impl CachedResponse {
    /// Encodes the entry in the versioned binary format described in the module docs.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(96 + self.size_bytes() as usize);
        self.encode_into(&mut buf);
        buf.freeze()
    }

    fn encode_into(&self, buf: &mut BytesMut) {
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u16(self.status);
        buf.put_u64(self.stored_at_ms);
        for duration in [
            self.fresh_for,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.initial_age,
        ] {
            buf.put_u64(millis(duration));
        }
        let mut flags = 0;
        if self.shared_with_credentials {
            flags |= FLAG_SHARED_WITH_CREDENTIALS;
        }
        if self.revalidate_when_stale {
            flags |= FLAG_REVALIDATE_WHEN_STALE;
        }
        buf.put_u8(flags);
        buf.put_u32(u32::try_from(self.selecting.len()).unwrap_or(u32::MAX));
        for (name, value) in &self.selecting {
            put_bytes(buf, name.as_bytes());
            buf.put_u8(u8::from(value.is_some()));
            put_bytes(buf, value.as_deref().unwrap_or_default());
        }
        put_bytes(buf, self.etag.as_bytes());
        buf.put_u32(u32::try_from(self.headers.len()).unwrap_or(u32::MAX));
        for (name, value) in &self.headers {
            put_bytes(buf, name.as_bytes());
            put_bytes(buf, value);
        }
        buf.put_u64(self.body.len() as u64);
        buf.put_slice(&self.body);
    }

    /// Decodes an entry written by [`CachedResponse::encode`]; the body is a slice
    /// of `buf`, not a copy.
    pub fn decode(buf: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: &buf, pos: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION && version != 1 {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let mut entry = CachedResponse {
            status: r.u16()?,
            stored_at_ms: r.u64()?,
            fresh_for: Duration::from_millis(r.u64()?),
            stale_while_revalidate: Duration::from_millis(r.u64()?),
            stale_if_error: Duration::from_millis(r.u64()?),
            ..CachedResponse::default()
        };
        if version >= 2 {
            entry.initial_age = Duration::from_millis(r.u64()?);
            let flags = r.u8()?;
            entry.shared_with_credentials = flags & FLAG_SHARED_WITH_CREDENTIALS != 0;
            entry.revalidate_when_stale = flags & FLAG_REVALIDATE_WHEN_STALE != 0;
            let count = r.count(9)?;
            entry.selecting.reserve(count);
            for _ in 0..count {
                let name = utf8(r.bytes()?, "selecting header name")?;
                let present = r.u8()? != 0;
                let value = r.bytes()?;
                entry
                    .selecting
                    .push((name, present.then(|| value.to_vec())));
            }
        }
        entry.etag = utf8(r.bytes()?, "etag")?;
        let count = r.count(8)?;
        entry.headers.reserve(count);
        for _ in 0..count {
            let name = utf8(r.bytes()?, "header name")?;
            entry.headers.push((name, r.bytes()?.to_vec()));
        }
        let body_len = usize::try_from(r.u64()?).map_err(|_| DecodeError::BadLength)?;
        if buf.len() - r.pos != body_len {
            return Err(DecodeError::BadLength);
        }
        entry.body = buf.slice(r.pos..);
        Ok(entry)
    }
}

/// Encodes variants (newest first) as one value.
pub fn encode_variants(variants: &[std::sync::Arc<CachedResponse>]) -> Bytes {
    let size: u64 = variants.iter().map(|v| 104 + v.size_bytes()).sum();
    let mut buf = BytesMut::with_capacity(8 + size as usize);
    buf.put_slice(VARIANTS_MAGIC);
    buf.put_u8(1);
    buf.put_u32(u32::try_from(variants.len()).unwrap_or(u32::MAX));
    for variant in variants {
        let encoded = variant.encode();
        buf.put_u64(encoded.len() as u64);
        buf.put_slice(&encoded);
    }
    buf.freeze()
}

/// Decodes what [`encode_variants`] wrote; a lone entry (an older format) reads as one variant.
pub fn decode_variants(buf: Bytes) -> Result<Vec<CachedResponse>, DecodeError> {
    if buf.starts_with(MAGIC) {
        return CachedResponse::decode(buf).map(|e| vec![e]);
    }
    let mut r = Reader { buf: &buf, pos: 0 };
    if r.take(VARIANTS_MAGIC.len())? != VARIANTS_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8()?;
    if version != 1 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let count = r.count(8)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::try_from(r.u64()?).map_err(|_| DecodeError::BadLength)?;
        let start = r.pos;
        r.take(len)?;
        out.push(CachedResponse::decode(buf.slice(start..start + len))?);
    }
    if r.pos != buf.len() {
        return Err(DecodeError::BadLength);
    }
    Ok(out)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    buf.put_slice(&bytes[..bytes.len().min(u32::MAX as usize)]);
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8(what))
}

/// Bounds-checked big-endian reader over an encoded entry.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::BadLength)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::BadLength)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A u32 count of items each at least `min_size` bytes long; refuses counts
    /// the rest of the buffer cannot hold.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        if count > (self.buf.len() - self.pos) / min_size {
            return Err(DecodeError::BadLength);
        }
        Ok(count)
    }
}
