//! End-to-end tests of SPIFFE federation (issue 24 item 2): two real
//! `ward ca serve` with different trust domains (example.org and
//! partner.example), a `ward gate serve` of example.org that follows
//! partner.example's bundle endpoint, curl as the client, openssl to forge
//! certificates that claim the other trust domain, and a Python bundle
//! endpoint (`federation/relay.py`) whose answers the test controls.
//! `federation/through_ca.rs`: the `https_spiffe` profile, and the CA
//! following partners for its gates and agents (py-spiffe reads them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports)] // the shared harness serves several test binaries

mod common;
#[path = "gate_extra/harness.rs"]
mod harness;
#[path = "federation/scenarios.rs"]
mod scenarios;
#[path = "federation/through_ca.rs"]
mod through_ca;
