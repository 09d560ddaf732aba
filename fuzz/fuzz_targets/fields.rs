//! `?fields=` lists: the first line is the list, the rest a JSON body to
//! project with it (the streaming projector and the value one must agree).
#![no_main]
use junction_cache::{project_json_bytes, FieldSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (list, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(list) = std::str::from_utf8(list) else {
        return;
    };
    let Ok(fields) = FieldSet::parse(list) else {
        return;
    };
    // Parsing what it prints gives the same set.
    let again = FieldSet::parse(&fields.to_string()).expect("a printed field set parses");
    assert_eq!(again.to_string(), fields.to_string());
    if let Ok(projected) = project_json_bytes(body, &fields) {
        let value: serde_json::Value =
            serde_json::from_slice(&projected).expect("a projection is JSON");
        // The streaming projector skips unselected values without checking
        // their UTF-8 (found by this target; the output is valid all the
        // same), so the two are compared only when the whole body is JSON.
        if let Ok(whole) = serde_json::from_slice::<serde_json::Value>(body) {
            assert_eq!(value, fields.apply(&whole), "streamed and value projections agree");
        }
    }
});
