//! End-to-end tests of CA keys in a PKCS#11 token (issue 20 item 1):
//! SoftHSM2 (Debian `softhsm2`) as the token, each test with its own token
//! directory and `SOFTHSM2_CONF`; `ward ca init --pkcs11-module`, a real
//! `ward ca serve` signing through the token, the agent obtaining a
//! certificate from it, and `openssl verify`, `openssl crl -verify` and
//! `openssl ocsp` as judges. OpenSC's `pkcs11-tool` reports the key
//! objects' attributes (sensitive, never extractable).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports, unused_macros)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;
#[path = "revocation/server.rs"]
mod dual;

#[path = "agent/procs.rs"]
mod procs;

mod hsm {
    pub(crate) mod outage;
    pub(crate) mod signing;
    pub(crate) mod softhsm;
}
