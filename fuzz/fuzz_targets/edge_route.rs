//! A request line and headers through the edge check and routing: an accepted head has one
//! `Host` and an origin-form target, and `/puppet-ca/` paths always go to the CA pool.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        lb::fuzzing::edge_and_route(text);
    }
});
