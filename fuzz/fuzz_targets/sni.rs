//! The passthrough path's own server-name reader against rustls: whatever
//! the bytes, where the small reader names a server (or says there is
//! none), rustls names the same one or refuses the ClientHello; where
//! rustls accepts one, the reader agrees or leaves the decision to it.
//!
//! Input: the bytes a client sends first (TLS records).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_gate::fuzzing::{Sni, client_hello, sni};

fuzz_target!(|data: &[u8]| {
    let fast = sni(data);
    if let Sni::Found(Some(name)) = &fast {
        assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
    }
    match (&fast, client_hello(data)) {
        (Sni::Found(name), Ok(Some(hello))) => assert_eq!(name, &hello.sni),
        (Sni::Found(_), Ok(None)) => panic!("a complete ClientHello that rustls still waits for"),
        (Sni::Incomplete, Ok(Some(_))) => {
            panic!("rustls read a ClientHello from an incomplete record")
        }
        // Found + rustls refuses: a part this reader does not check.
        // Unsure: rustls decides, whatever it says.
        _ => {}
    }
});
