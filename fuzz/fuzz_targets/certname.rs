//! Untrusted text through the certname, `autosign.conf`, duration, `serial` and `inventory.txt`
//! parsers: nothing may panic, and an accepted certname is safe as a file name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pki::{autosign, certname::MAX_CERTNAME_LEN, inventory, timefmt, Certname, Serial};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = Certname::parse(text) {
        let name = name.as_str();
        assert_eq!(name, text);
        assert!(!name.is_empty(), "empty certname");
        assert!(!name.contains('/'), "certname with '/': {name:?}");
        assert!(!name.contains(".."), "certname with '..': {name:?}");
        assert!(!name.chars().any(char::is_uppercase), "upper-case certname: {name:?}");
        assert!(name.len() <= MAX_CERTNAME_LEN, "certname too long: {}", name.len());
    }
    let rules = autosign::parse(text);
    let _ = autosign::matches(&rules, text);
    let _ = timefmt::parse_duration(text);
    let _ = Serial::parse_file(text);
    let _ = inventory::parse(text).count();
});
