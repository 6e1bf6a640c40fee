//! `ward_tls::server` and `ward_tls::credentials` over real sockets on
//! 127.0.0.1: an axum `Router` served over HTTP/1.1 and HTTP/2 with and
//! without client certificates, handshake deadlines, connection limits,
//! certificate rotation and graceful shutdown. Every wait is on an event
//! (a handshake, a response, an EOF); the only timeouts bound a test that
//! would otherwise hang, or prove that something has *not* happened yet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

mod chain_cache;
mod common;
mod credentials;
mod https;
mod lifecycle;
