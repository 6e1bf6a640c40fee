//! The PROXY protocol header parser (v1 text, v2 binary): whatever the
//! bytes, it answers without panicking, never claims more bytes than it
//! was given, and a header it encodes parses back to the same addresses.
//!
//! Input: the first bytes of a connection from a load balancer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_gate::proxy_protocol::{Header, MAX_HEADER, Parsed, encode_v2, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Complete { header, len, .. }) = parse(data) {
        assert!(len <= data.len() && len <= MAX_HEADER);
        if let Header::Proxied { source, destination } = header {
            let again = encode_v2(source, destination);
            match parse(&again) {
                Ok(Parsed::Complete { header: Header::Proxied { source: s, destination: d }, .. }) => {
                    assert_eq!(s.port(), source.port());
                    assert_eq!(d.port(), destination.port());
                }
                other => panic!("re-encoded header does not parse: {other:?}"),
            }
        }
    }
});
