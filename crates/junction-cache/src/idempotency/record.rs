//! The stored form of an idempotency record, shared by every backend.
//!
//! Binary, like cache entries: magic `JIK`, a version byte, a kind byte, the
//! request fingerprint, then the claim's token (pending) or the encoded
//! [`CachedResponse`] (done). The Redis backend compares whole pending records
//! byte for byte to check that a token still holds its key.

use bytes::{BufMut, Bytes, BytesMut};

use super::Token;
use crate::codec::DecodeError;
use crate::entry::CachedResponse;

const MAGIC: &[u8; 3] = b"JIK";
const VERSION: u8 = 1;
const PENDING: u8 = b'P';
const DONE: u8 = b'D';

/// One idempotency key's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Claimed by `token`; the request is running.
    Pending {
        /// The request's fingerprint.
        fingerprint: u128,
        /// The claim's owner.
        token: Token,
    },
    /// The request ran; this was its answer.
    Done {
        /// The request's fingerprint.
        fingerprint: u128,
        /// The answer to replay.
        response: CachedResponse,
    },
}

impl Record {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        match self {
            Record::Pending { fingerprint, token } => {
                buf.put_u8(PENDING);
                buf.put_u128(*fingerprint);
                buf.put_u128(*token);
            }
            Record::Done {
                fingerprint,
                response,
            } => {
                buf.put_u8(DONE);
                buf.put_u128(*fingerprint);
                buf.put_slice(&response.encode());
            }
        }
        buf.freeze()
    }

    /// Reads the wire form back.
    pub fn decode(buf: Bytes) -> Result<Self, DecodeError> {
        const HEAD: usize = 3 + 1 + 1 + 16;
        if buf.len() < HEAD || &buf[..3] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if buf[3] != VERSION {
            return Err(DecodeError::UnsupportedVersion(buf[3]));
        }
        let fingerprint = u128::from_be_bytes(buf[5..HEAD].try_into().expect("16 bytes"));
        match buf[4] {
            PENDING if buf.len() == HEAD + 16 => Ok(Record::Pending {
                fingerprint,
                token: u128::from_be_bytes(buf[HEAD..].try_into().expect("16 bytes")),
            }),
            DONE => Ok(Record::Done {
                fingerprint,
                response: CachedResponse::decode(buf.slice(HEAD..))?,
            }),
            _ => Err(DecodeError::BadLength),
        }
    }

    /// Approximate bytes held, for memory bounds.
    pub fn size_bytes(&self) -> u64 {
        match self {
            Record::Pending { .. } => 32,
            Record::Done { response, .. } => 16 + response.size_bytes(),
        }
    }
}
