//! End-to-end tests of CA rotation (issue 20, docs/rotation.md): real `ward
//! ca serve` processes, a real gate, a real agent and a `ward-client`
//! rotator on short certificates under continuous traffic while the
//! intermediate rotates, then the root; openssl judges the old and new chains; a rotation
//! is cancelled before its switch; two replicas on one PostgreSQL database
//! switch together; nothing is issued past its issuer's notAfter.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports, unused_macros)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;

#[path = "revocation/server.rs"]
mod dual;
#[path = "hsm/softhsm.rs"]
mod softhsm;

mod agent {
    #[path = "../agent/procs.rs"]
    pub(crate) mod procs;
}

mod rotation {
    pub(crate) mod cancel;
    pub(crate) mod crls;
    pub(crate) mod external;
    pub(crate) mod load;
    pub(crate) mod replicas;
    pub(crate) mod root;
    pub(crate) mod support;
    pub(crate) mod token;
    pub(crate) mod traffic;
}
