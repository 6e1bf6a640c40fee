//! The gate's ClientHello reader: rustls' `Acceptor` on the first bytes of
//! a connection, then the SNI and the TLS 1.3 check the gate makes before
//! choosing a tenant.
//!
//! Input: the bytes a client sends first (TLS records).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(hello)) = ward_gate::fuzzing::client_hello(data)
        && let Some(sni) = hello.sni
    {
        // rustls hands over only DNS names.
        assert!(!sni.is_empty() && sni.is_ascii(), "{sni:?}");
    }
});
