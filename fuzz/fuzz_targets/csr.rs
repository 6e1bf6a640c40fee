//! CSR parsing (PEM, DER, self-signature, key checks) and the check of the
//! names it asks for against a token's binding, as `/v1/sign` runs them.
//!
//! Input: PEM text when it starts with `-----`, else DER that is wrapped in
//! a PEM block first (so mutations reach the DER parser).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pem = if data.starts_with(b"-----") {
        match std::str::from_utf8(data) {
            Ok(s) => s.to_owned(),
            Err(_) => return,
        }
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
    };
    let dns = ["localhost".to_owned(), "fuzz.example.org".to_owned()];
    if let Ok(checked) = ward_ca::fuzzing::csr(&pem, "spiffe://example.org/fuzz", &dns) {
        // Accepted: the key is one Ward issues for, and every name asked
        // for is inside the binding.
        assert!(checked.key.key_type().is_ok());
        assert!(checked.requested.other.is_empty());
        assert!(checked.requested.ips.is_empty());
        for uri in &checked.requested.uris {
            assert_eq!(uri, "spiffe://example.org/fuzz");
        }
        for name in &checked.requested.dns {
            assert!(dns.contains(name), "{name:?}");
        }
    }
});
