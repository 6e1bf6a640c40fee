//! End-to-end tests of Ward's ACME client (issue 18): a real `ward gate
//! serve` whose tenants get their server certificates from Pebble (the
//! Debian `pebble` package, an ACME server nobody here wrote), with
//! `pebble-challtestsrv` answering DNS and holding dns-01 TXT records, and
//! curl (verifying against Pebble's issuing root, fetched from Pebble's
//! management interface) and openssl as the clients.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "gate/harness.rs"]
mod harness;
#[path = "gate/pki.rs"]
mod pki;
#[path = "gate/upstream.rs"]
mod upstream;

mod acme_client {
    pub(crate) mod agent;
    pub(crate) mod ca;
    pub(crate) mod gate;
    pub(crate) mod pebble;
    pub(crate) mod renewal;
    pub(crate) mod ward_server;
}
