//! Client request headers through the LB's header policy: no identity or `X-Crossbar-` header
//! a client sent survives in any spelling, exactly one `X-Client-Verify` is set from the TLS
//! session, and no hop-by-hop header is forwarded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        lb::fuzzing::header_policy(text);
    }
});
