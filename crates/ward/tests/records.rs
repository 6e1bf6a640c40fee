//! End-to-end tests of "every certificate a CA key signs is recorded"
//! (issue 14 items 1 and 6, issue 25 items 3 and 7): offline certificates
//! revocable through OCSP, the CRL and nginx; the origin of every
//! certificate in the admin list; a CN bound by a token, read by a real
//! PostgreSQL (`clientcert=verify-full`); reserved SPIFFE IDs refused; a
//! missing, emptied or damaged store refused by name.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;
#[path = "revocation/server.rs"]
mod dual;

mod records {
    pub(crate) mod identity;
    pub(crate) mod offline;
    pub(crate) mod postgres;
    pub(crate) mod storage;
}
