//! End-to-end tests of `ward gate serve` (SPEC §6; issue 4): real gate
//! processes on ephemeral ports, real sockets, an upstream that echoes the
//! request it received, and curl, `openssl s_client`, Python's `ssl` and a
//! rustls client on the other side. The Rego policy and `ward gate client`
//! are covered in `tests/gate_extra.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

#[path = "../common/mod.rs"]
mod common;

mod clients;
mod harness;
mod pki;
mod upstream;

mod handshake;
mod jwt_svid;
mod observability;
mod pq;
mod reload;
mod routing;
mod tenants;
