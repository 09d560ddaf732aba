//! Stored cache entries as read back from Redis (another instance, an older
//! version, or a tampered key may have written anything).
#![no_main]
use bytes::Bytes;
use junction_cache::codec::decode_variants;
use junction_cache::CachedResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(entry) = CachedResponse::decode(bytes.clone()) {
        // What decodes, re-encodes to the same entry.
        let again = CachedResponse::decode(entry.encode()).expect("re-encoded entry decodes");
        assert_eq!(again.encode(), entry.encode());
    }
    let _ = decode_variants(bytes);
});
