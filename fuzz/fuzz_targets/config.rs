//! The config loader (YAML, aliases, validation, file:line:key errors) must
//! answer any text with a config or errors, never a panic or a blow-up.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = junction_gateway::config::load_str(text, "fuzz.yaml");
    }
});
