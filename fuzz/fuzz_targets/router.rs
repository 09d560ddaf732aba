//! The path-template router: up to 8 templates (one per line, the rest of the
//! input is paths to look up), inserted and matched without a panic.
#![no_main]
use http::Method;
use junction_gateway::proxy::router::Router;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let mut router: Router<usize> = Router::default();
    for (i, template) in lines.by_ref().take(8).enumerate() {
        let method = (i % 2 == 0).then_some(Method::GET);
        let _ = router.insert(method, template, Arc::new(i));
    }
    for path in lines {
        for m in [Method::GET, Method::HEAD, Method::POST] {
            if let Some(found) = router.find(&m, path) {
                assert!(*found.route < 8);
            }
        }
    }
});
