//! Config text through the `[lb]` and `[ca]` parsers: nothing panics, and an accepted `[lb]`
//! can arm every one of its timers. Inputs naming files to read (secrets) are skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.contains("secret") {
        return;
    }
    lb::fuzzing::lb_config(text);
    if let Ok(file) = toml::from_str::<ca::config::FileCaConfig>(text) {
        let _ = ca::config::CaConfig::try_from(file);
    }
});
