//! End-to-end tests of `ward agent run` and the `ward-client` rotation
//! library (SPEC §4, §7; issue 5 items 1–2, issue 6 item 6): a real
//! `ward ca serve`, real agents with short-lived certificates, openssl as
//! the judge of every file, the `spiffe` crate as an unmodified Workload API
//! client, and a raw gRPC client for what `spiffe` would never send.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports, unused_macros)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;

mod agent {
    pub(crate) mod gate_identity;
    pub(crate) mod interop;
    pub(crate) mod jwt_svid;
    pub(crate) mod library;
    pub(crate) mod outage;
    pub(crate) mod procs;
    pub(crate) mod revocation;
    pub(crate) mod rotation;
    pub(crate) mod traffic;
}
