//! The gate's configuration: TOML parsing, path resolution and every check
//! that needs no file.
//!
//! Input: the text of a gate config file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ward_gate::config::GateConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = GateConfig::from_toml(text, Path::new("/etc/ward")) {
        config.validate().expect("a loaded config validates again");
        let _ = config.revocation.sources();
    }
});
