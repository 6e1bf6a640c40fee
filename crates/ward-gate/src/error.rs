//! The gate's error type, in its own module so that every part of the gate
//! (configuration, runtime, listeners) names one type without reaching
//! into the crate root.

/// Errors of the gate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration or a file it names is invalid.
    #[error("{0}")]
    Config(String),
    /// A listener failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}
