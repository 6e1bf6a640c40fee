//! The crate's error type.

/// What went wrong while obtaining or keeping a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The settings are unusable.
    #[error("acme: {0}")]
    Config(String),
    /// A file in the state directory could not be read or written.
    #[error("acme: {context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The ACME server refused or could not be reached.
    #[error("acme: {context}: {source}")]
    Protocol {
        /// The step that failed.
        context: String,
        /// instant-acme's error (problem documents included).
        #[source]
        source: instant_acme::Error,
    },
    /// A challenge could not be answered or was not accepted.
    #[error("acme: challenge: {0}")]
    Challenge(String),
    /// The issued certificate is unusable.
    #[error("acme: certificate: {0}")]
    Certificate(String),
}

impl Error {
    pub(crate) fn protocol(
        context: impl Into<String>,
    ) -> impl FnOnce(instant_acme::Error) -> Error {
        let context = context.into();
        move |source| Error::Protocol { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
