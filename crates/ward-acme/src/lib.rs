//! Ward's ACME client: obtains and renews a DNS-named server certificate
//! from any RFC 8555 CA (Let's Encrypt, Pebble, Ward's own ACME server) for
//! the gate, the CA's HTTPS API and the agent.
//!
//! [`Manager`] owns one certificate: it restores the account and the
//! current certificate from its state directory (so a restart serves at
//! once and orders nothing), orders when there is none, and renews inside
//! the server's ARI window (RFC 9773) or at two thirds of the lifetime,
//! with jitter and exponential backoff. Challenges are answered through
//! [`Challenges`]: tls-alpn-01 certificates that the caller's TLS listener
//! serves for ALPN `acme-tls/1`, http-01 key authorizations served by
//! [`http01::serve`], and dns-01 TXT records set by an exec hook.
//!
//! This crate never logs key material or key authorizations' secrets
//! beyond what the ACME protocol publishes anyway.

#![forbid(unsafe_code)]

pub mod challenges;
pub mod dns01;
mod error;
pub mod http01;
pub mod manager;
pub mod order;
pub mod schedule;
pub mod settings;
pub mod state;

pub use challenges::{ACME_TLS_ALPN, Challenges};
pub use error::Error;
pub use manager::{Issued, Manager, Observer};
pub use settings::{AcmeSettings, ChallengeKind};

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
