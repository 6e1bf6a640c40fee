//! Talk to a Ward CA and keep a workload identity fresh.
//!
//! Two layers:
//!
//! - [`CaClient`]: a small HTTPS client for the CA API (tokens, issuance,
//!   administration), one TLS 1.3 connection per request.
//! - [`Rotator`]: a workload identity (an X.509-SVID) that renews itself.
//!   [`Rotator::bootstrap`] makes a key where the workload runs, sends a CSR
//!   with a bootstrap token (`POST /v1/sign`), then renews over mTLS with the
//!   current certificate and a fresh key (`POST /v1/renew`) at two thirds of
//!   the lifetime ([`schedule`]). [`Rotator::from_workload_api`] takes the
//!   identity from a SPIFFE Workload API socket instead (an `ward agent run
//!   --socket`, or SPIRE), honouring `SPIFFE_ENDPOINT_SOCKET`.
//!
//! # Entry points for a server or proxy (e.g. the gate's own identity)
//!
//! A [`Rotator`] is a cheap, clonable handle:
//!
//! - [`Rotator::current`] is the identity now, [`Rotator::subscribe`] a
//!   `watch::Receiver<Arc<Svid>>` that sees every rotation;
//! - [`Rotator::resolver`] is ward-tls' [`Credentials`] store, both a
//!   rustls `ResolvesServerCert` and `ResolvesClientCert`: plug it into any
//!   `ServerConfig`/`ClientConfig` and new handshakes use the new key while
//!   open connections keep theirs;
//! - [`Rotator::server_config`] and [`Rotator::client_config`] build Ward's
//!   TLS 1.3 configurations around that resolver, verifying peers against the
//!   trust bundle the CA sent;
//! - [`Rotator::jwt_svids`] mints JWT-SVIDs for the identity (cached per
//!   audience) and fetches the CA's SPIFFE bundle ([`jwt`]);
//! - [`Rotator::status`] reports renewals, failures and a definitive refusal
//!   (a revoked identity), for health checks and metrics.
//!
//! The CA is trusted by a bundle of roots or by the SHA-256 fingerprint of its
//! root ([`CaTrust`]), as `step ca bootstrap` does.
//!
//! This crate never logs or prints tokens or private keys: the types that
//! hold them have redacting `Debug` implementations.

#![forbid(unsafe_code)]

mod ca;
mod csr;
mod error;
pub mod federated;
pub mod federation;
pub mod jwt;
pub mod node;
mod rotator;
pub mod schedule;
mod svid;
mod token;
pub mod trust;
pub mod workload_api;

use std::time::Duration;

pub use ca::{CaClient, Identity};
pub use error::ClientError;
pub use jwt::JwtSvids;
pub use rotator::{
    BootstrapConfig, Refusal, RotationState, RotationStatus, Rotator, WorkloadApiConfig,
};
pub use svid::Svid;
pub use token::Token;
pub use trust::CaTrust;
pub use ward_tls::credentials::Credentials;

/// Largest response body read from the CA.
pub const MAX_RESPONSE: usize = 1024 * 1024;
/// Time allowed for one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
