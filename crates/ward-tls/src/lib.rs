//! The only crate that builds rustls configurations.
//!
//! Everything Ward speaks TLS with comes from here, so the protocol versions,
//! key-exchange groups and crypto provider are decided once: TLS 1.3, groups
//! X25519MLKEM768 → X25519 → P-256, aws-lc-rs. [`config`] builds server and
//! client configurations, [`verifier`] holds every certificate verifier
//! (anything that weakens verification lives in [`danger`]; [`chain_cache`]
//! remembers which client chains passed),
//! [`credentials`] is the one store of a certificate and key that rotation,
//! file reload, CA renewal and OCSP stapling publish into, [`http`] is the
//! client for fetching CRLs and OCSP responses, [`server`] serves HTTP(S)
//! on top of these configurations, and [`watch`] tells when the files they
//! are read from change (renames, symlink swaps, Kubernetes Secret updates).

#![forbid(unsafe_code)]

pub mod acme;
pub mod chain_cache;
pub mod config;
pub mod credentials;
pub mod danger;
pub mod http;
pub mod probe;
pub mod probe_legacy;
pub mod server;
pub mod verifier;
pub mod watch;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};

/// TLS 1.3 only: Ward's default everywhere.
pub static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Ward's crypto provider: aws-lc-rs with the key-exchange groups in Ward's
/// order of preference (hybrid post-quantum first).
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
    ];
    Arc::new(provider)
}

/// Installs [`provider`] as the process default. Harmless when one is
/// already installed.
pub fn install_default_provider() {
    let _ = Arc::unwrap_or_clone(provider()).install_default();
}

/// Errors from building TLS configurations or talking to an endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rustls refused the configuration or the handshake.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The operation did not finish in time.
    #[error("{0} timed out")]
    Timeout(String),
    /// The input was not usable (bad name, bad address).
    #[error("{0}")]
    Input(String),
    /// A certificate chain or private key was unusable (empty chain, key
    /// in an unknown format, key that does not belong to the leaf).
    #[error("credentials: {0}")]
    Credentials(String),
    /// The client-certificate verifier could not be built (for example, no
    /// trust anchors).
    #[error("client verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

#[cfg(test)]
mod tests {
    /// The workspace builds aws-lc without CPU jitter entropy
    /// (`.cargo/config.toml`, docs/entropy.md): its DRBG is seeded from the
    /// kernel. A build that lost the switch fails here.
    #[test]
    fn entropy_source_is_the_operating_system() {
        let mut b = [0u8; 32];
        // Initialises the DRBG and with it the entropy source.
        super::provider().secure_random.fill(&mut b).unwrap();
        assert_ne!(b, [0u8; 32]);
        assert_eq!(
            aws_lc_rs::try_fips_cpu_jitter_entropy(),
            Err("FIPS CPU Jitter Entropy not enabled!"),
            "aws-lc was built with CPU jitter entropy; is AWS_LC_SYS_NO_JITTER_ENTROPY=1 set?"
        );
    }
}
