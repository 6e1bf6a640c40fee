//! Ward's certificate authority.
//!
//! [`dir`] owns the on-disk layout of a CA (`ward ca init` writes it, every
//! other command reads it), [`config`] the documented `ca.toml`, and
//! [`files`] the atomic, permission-aware file writes they share.

#![forbid(unsafe_code)]

pub mod acme;
pub mod authority;
pub mod config;
pub mod console;
pub mod cpu;
pub mod csr;
pub mod dir;
pub mod expiry;
pub mod federation;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ocsp;
pub mod offline;
pub mod pkcs11;
pub mod serve;
mod serve_acme;
pub mod tls_files;
pub mod token;
pub mod wire;

pub use config::CaConfig;
pub use dir::{CaDir, InitOptions};

/// Errors of the CA layer. Messages name files and reasons, never secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The directory already holds a CA.
    #[error("{0}")]
    AlreadyExists(String),
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The CA's store is missing, damaged or unreachable (the message names
    /// the file or database).
    #[error("{0}")]
    Storage(String),
    /// PKI-level failure (bad key, bad certificate, policy).
    #[error("{context}: {source}")]
    Pki {
        /// What was being done, with the path when there is one.
        context: String,
        /// The underlying error.
        source: ward_pki::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn pki(context: impl Into<String>) -> impl FnOnce(ward_pki::Error) -> Error {
        let context = context.into();
        move |source| Error::Pki { context, source }
    }
}
