//! End-to-end tests of revocation on the CA side (SPEC §4 `ward revoke`,
//! §5 `POST /v1/revoke`, `GET /v1/crl`, `/v1/crl.pem`; issue 6 items 1–2):
//! a real `ward ca serve` with an HTTPS and a plain-HTTP listener,
//! certificates issued online through tokens, and openssl and curl as judges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;

mod revocation {
    pub(crate) mod crl;
    pub(crate) mod server;
}
