//! The one error type of the PKI crate.

/// What can go wrong while parsing identities, keys or certificates, or while
/// building and signing certificates.
///
/// Messages are written for a human operator and never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SPIFFE ID or trust domain did not follow the SPIFFE ID specification.
    #[error("invalid SPIFFE ID {input:?}: {reason}")]
    InvalidSpiffeId {
        /// The rejected input, as given.
        input: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A trust domain name did not follow the SPIFFE ID specification.
    #[error("invalid trust domain {input:?}: {reason}")]
    InvalidTrustDomain {
        /// The rejected input, as given.
        input: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A hex value (serial number, fingerprint) could not be parsed.
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidHex {
        /// What was being parsed ("serial number", "fingerprint").
        what: &'static str,
        /// The rejected input, as given.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An unknown key type name.
    #[error(
        "unknown key type {0:?} (expected ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096, ml-dsa-44, ml-dsa-65 or ml-dsa-87)"
    )]
    UnknownKeyType(String),
    /// A duration could not be parsed.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The rejected input, as given.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A private key could not be parsed or is of an unsupported kind.
    /// The message never includes the key's bytes.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// PEM input held nothing usable.
    #[error("invalid PEM: {0}")]
    InvalidPem(String),
    /// A request to build a certificate broke Ward's issuance policy.
    #[error("{0}")]
    Policy(String),
    /// Signing or key generation failed inside the crypto library.
    #[error("crypto operation failed: {0}")]
    Crypto(String),
    /// A key held outside the process (a PKCS#11 token) could not sign
    /// now: the token is gone, busy or refused. Worth retrying later.
    #[error("the signing key is unavailable: {0}")]
    KeyUnavailable(String),
    /// The private key lives in a token and cannot be written out.
    #[error("the private key is held in a token and cannot be exported")]
    NotExportable,
}

impl From<rcgen::Error> for Error {
    fn from(err: rcgen::Error) -> Self {
        match err {
            // Only a [`crate::key::RemoteKey`] fails this way, and it has
            // logged why.
            rcgen::Error::RemoteKeyError => {
                Error::KeyUnavailable("the key's token did not sign (see the log)".into())
            }
            other => Error::Crypto(other.to_string()),
        }
    }
}
