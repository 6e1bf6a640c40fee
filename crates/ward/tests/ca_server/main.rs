//! End-to-end tests of the CA server (SPEC §4, §5, §8; issue 3): real
//! `ward ca serve` processes on ephemeral ports, real HTTPS sockets, tokens
//! made with the CLI, and openssl, curl and Node.js as clients and judges.
//! Every scenario runs on SQLite and on PostgreSQL (a fresh database in
//! `WARD_TEST_DATABASE_URL`; skipped, saying so, when it is not set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

#[path = "../common/mod.rs"]
mod common;
#[macro_use]
mod harness;

mod api;
mod hardening;
mod load;
mod seed;
mod sign;
mod startup;
