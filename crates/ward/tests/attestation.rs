//! End-to-end tests of node attestation (issue 24 item 3): registration
//! entries in a real `ward ca serve`, a real `ward agent run` serving
//! several workloads on one socket, py-spiffe clients running as different
//! users, and curl + openssl asking the CA for SVIDs with the agent's own
//! certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports, unused_macros)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;
#[path = "agent/procs.rs"]
mod procs;

mod attestation {
    pub(crate) mod node;
}
