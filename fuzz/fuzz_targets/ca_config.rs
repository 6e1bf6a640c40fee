//! The CA's `ca.toml`: parsing and validation, and the documented file
//! `ward ca init` writes, which must read back as the same configuration.
//!
//! Input: the text of a `ca.toml`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_ca::CaConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = CaConfig::parse(text) else {
        return;
    };
    let written = config.to_documented_toml();
    let again = CaConfig::parse(&written)
        .unwrap_or_else(|e| panic!("the written ca.toml does not parse: {e}\n{written}"));
    assert_eq!(format!("{config:?}"), format!("{again:?}"));
    let _ = ward_ca::http::Limits::new(&config.limits);
});
