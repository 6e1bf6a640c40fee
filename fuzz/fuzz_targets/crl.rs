//! The CRL verifier (`ward_pki::crl`, used by the gate and `ward check`):
//! PEM or DER decoding, parsing, issuer lookup, signature, time and
//! extension checks, and matching client leaves.
//!
//! Input: a CRL (DER or PEM). The trusted issuers are the test fixtures'
//! root and intermediate.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ward_pki::crl::{LeafRef, Trust, decode, verify};

const ROOT: &str = include_str!("../../crates/ward-testkit/fixtures/root.crt");
const INTERMEDIATE: &str = include_str!("../../crates/ward-testkit/fixtures/intermediate.crt");
const CLIENT: &str = include_str!("../../crates/ward-testkit/fixtures/client.crt");

fn first_der(pem: &str) -> Vec<u8> {
    ward_pki::pem::parse_certs_any(pem.as_bytes()).unwrap()[0].to_vec()
}

static TRUST: LazyLock<Trust> = LazyLock::new(|| {
    let mut trust = Trust::default();
    trust.set_roots(&[first_der(ROOT)]);
    assert!(trust.learn(&first_der(INTERMEDIATE), NOW));
    trust
});

static LEAF: LazyLock<LeafRef> = LazyLock::new(|| LeafRef::from_der(&first_der(CLIENT)).unwrap());

/// 2030-03-17, inside the fixtures' validity.
const NOW: i64 = 1_900_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(der) = decode(data) else {
        return;
    };
    match verify(&der, &TRUST, NOW) {
        Ok(crl) => {
            assert!(!crl.older_than(&crl));
            let _ = crl.number_display();
            if crl.revoked.contains(&LEAF.serial) {
                let _ = LEAF.issued_by(&crl);
            }
        }
        Err(e) => {
            let _ = (e.label(), e.retry_on_learn(), e.to_string());
        }
    }
});
