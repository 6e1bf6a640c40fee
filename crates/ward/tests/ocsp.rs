//! End-to-end tests of the CA's OCSP responder (issue 6 item 3, SPEC §5
//! `GET /ocsp/{base64}`, `POST /ocsp`): a real `ward ca serve` with both
//! listeners, certificates issued online through tokens, and `openssl ocsp`,
//! curl and nginx (`ssl_ocsp on`) as judges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;
#[path = "revocation/server.rs"]
mod dual;

mod ocsp {
    pub(crate) mod nginx;
    pub(crate) mod nonce;
    pub(crate) mod openssl;
    pub(crate) mod rotated_root;
    pub(crate) mod setup;
}
