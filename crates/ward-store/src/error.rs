//! The one error type of the store, and the mapping from driver errors to it.
//!
//! The CA turns these variants into HTTP statuses (401 for the token refusals,
//! 409 for a duplicate, 503 for [`StoreError::Unavailable`]), so the mapping
//! must be exact. Messages never contain a secret: no token, no password.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use sqlx::error::DatabaseError;

/// A boxed error source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store operation failed. On every error nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No token has that id.
    #[error("token not found")]
    TokenNotFound,
    /// The token was revoked.
    #[error("token revoked")]
    TokenRevoked,
    /// The token expired.
    #[error("token expired")]
    TokenExpired,
    /// The token has no uses left.
    #[error("token has no uses left")]
    TokenExhausted,
    /// A certificate with this serial is already recorded.
    #[error("a certificate with this serial already exists")]
    DuplicateSerial,
    /// A token with this id or hash already exists.
    #[error("a token with this id or hash already exists")]
    DuplicateToken,
    /// The row conflicts with one stored (a duplicate ACME key or id, a used
    /// EAB key).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The caller passed a value the store refuses.
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    /// There is no Ward CA store where one was expected (a missing or empty
    /// SQLite file, a database without Ward's tables) and the caller did not
    /// ask to create one ([`StoreOptions::create`](crate::StoreOptions::create)).
    #[error("{0}")]
    Missing(String),
    /// The database file is damaged (truncated, overwritten, corrupt).
    #[error("{0}")]
    Damaged(String),
    /// The database URL could not be used (the message never holds a password).
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The database could not be reached or is overloaded; retrying may help.
    #[error("storage unavailable while {context}: {source}")]
    Unavailable {
        /// What the store was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// Any other failure (a bug, a corrupt row, a failed migration).
    #[error("storage error while {context}: {source}")]
    Other {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether retrying later may succeed (maps to HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Builds [`StoreError::Other`].
    pub(crate) fn other(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Other {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Classifies a driver error: connection, I/O, lock and resource problems
    /// are [`StoreError::Unavailable`], the rest [`StoreError::Other`].
    pub(crate) fn db(context: impl Into<String>, err: sqlx::Error) -> Self {
        let context = context.into();
        let transient = match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => is_transient(db.as_ref()),
            _ => false,
        };
        if transient {
            Self::Unavailable {
                context,
                source: Box::new(err),
            }
        } else {
            Self::Other {
                context,
                source: Box::new(err),
            }
        }
    }
}

/// One failure to be handed to several callers (every waiter of a batch
/// whose transaction failed), keeping its variant and its source chain.
pub(crate) enum SharedError {
    /// A variant without a boxed source, kept as is.
    Plain(StoreError),
    /// [`StoreError::Unavailable`] with a shareable source.
    Unavailable(String, Arc<dyn StdError + Send + Sync>),
    /// [`StoreError::Other`] with a shareable source.
    Other(String, Arc<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// Turns this error into one that can be copied for many callers.
    pub(crate) fn into_shared(self) -> SharedError {
        match self {
            Self::Unavailable { context, source } => {
                SharedError::Unavailable(context, Arc::from(source))
            }
            Self::Other { context, source } => SharedError::Other(context, Arc::from(source)),
            plain => SharedError::Plain(plain),
        }
    }
}

impl SharedError {
    /// A copy of the error for one caller.
    pub(crate) fn to_error(&self) -> StoreError {
        match self {
            SharedError::Unavailable(context, source) => StoreError::Unavailable {
                context: context.clone(),
                source: Box::new(SharedSource(source.clone())),
            },
            SharedError::Other(context, source) => StoreError::Other {
                context: context.clone(),
                source: Box::new(SharedSource(source.clone())),
            },
            SharedError::Plain(e) => match e {
                StoreError::TokenNotFound => StoreError::TokenNotFound,
                StoreError::TokenRevoked => StoreError::TokenRevoked,
                StoreError::TokenExpired => StoreError::TokenExpired,
                StoreError::TokenExhausted => StoreError::TokenExhausted,
                StoreError::DuplicateSerial => StoreError::DuplicateSerial,
                StoreError::DuplicateToken => StoreError::DuplicateToken,
                StoreError::Invalid(m) => StoreError::Invalid(m),
                StoreError::Conflict(m) => StoreError::Conflict(m),
                StoreError::InvalidUrl(m) => StoreError::InvalidUrl(m.clone()),
                other => StoreError::other("committing a batch", other.to_string()),
            },
        }
    }
}

/// A source error shared by several [`StoreError`]s; shows as the original.
#[derive(Debug)]
struct SharedSource(Arc<dyn StdError + Send + Sync>);

impl fmt::Display for SharedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl StdError for SharedSource {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Whether a database-reported error is about availability, not about data.
fn is_transient(db: &dyn DatabaseError) -> bool {
    if let Some(e) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        // Primary result codes: BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN, PROTOCOL.
        let primary = e.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
        return matches!(primary, 5 | 6 | 7 | 10 | 13 | 14 | 15);
    }
    if let Some(e) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = e.code();
        // 08: connection exception; 53: insufficient resources;
        // 57P01..57P03: shutdown / cannot connect now;
        // 40001 / 40P01: serialization failure / deadlock (retryable).
        return code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01");
    }
    false
}

/// What a failed INSERT violated, for the callers that care.
pub(crate) enum Violation {
    /// A UNIQUE or PRIMARY KEY constraint.
    Unique,
    /// A FOREIGN KEY constraint.
    ForeignKey,
}

/// Returns the constraint kind a driver error reports, if any.
pub(crate) fn violation(err: &sqlx::Error) -> Option<Violation> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => Some(Violation::Unique),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => Some(Violation::ForeignKey),
        _ => None,
    }
}
