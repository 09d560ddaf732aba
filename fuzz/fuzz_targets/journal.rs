//! The embedded queue's journal decoder, fed what a crash or a bad disk may
//! leave: the raw bytes as a segment, and the bytes framed as one record
//! with a valid checksum (so the decoder's field parsing is reached).
#![no_main]
use junction_queue::embedded::fuzzing::decode_journal_segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_journal_segment(data);
    let mut framed = Vec::with_capacity(data.len() + 8);
    framed.extend_from_slice(&(data.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    framed.extend_from_slice(data);
    assert!(decode_journal_segment(&framed) <= 1);
});
