//! The ordering key's JSON pointer: the first line is the pointer, the rest
//! the event body, JSON-typed or not.
#![no_main]
use junction_gateway::pipeline::ingest::json_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ptr, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => return,
    };
    let Ok(ptr) = std::str::from_utf8(ptr) else {
        return;
    };
    for is_json in [true, false] {
        // Ok or a 400 for bad JSON; never a panic.
        let _ = json_key(body, ptr, is_json);
    }
});
