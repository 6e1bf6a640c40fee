//! End-to-end tests of revocation at the gate (issue 6, items 4 and 5): a
//! real `ward ca serve` issuing client certificates through tokens, real
//! `ward gate serve` processes polling its CRL (over HTTP or from a file),
//! clients that keep connections open and resume TLS 1.3 sessions, and
//! Python's `cryptography` (foreign and expired CRLs) and `openssl
//! s_client -status` (OCSP stapling) as independent judges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports)] // the shared gate harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "gate/harness.rs"]
mod harness;
#[path = "gate/pki.rs"]
mod pki;
#[path = "gate/upstream.rs"]
mod upstream;

mod gate_revocation {
    pub(crate) mod ca;
    pub(crate) mod client;
    pub(crate) mod crl;
    pub(crate) mod ocsp;
    pub(crate) mod propagation;
    pub(crate) mod rotation;
    pub(crate) mod support;
    pub(crate) mod timing;
}
