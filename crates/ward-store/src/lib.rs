//! Storage for the Ward CA: bootstrap tokens, issued certificates,
//! revocations and the CRL number, behind one object-safe async trait.
//!
//! Two implementations share one set of SQL statements: SQLite (the embedded
//! default, one file in WAL mode) and PostgreSQL (several CA replicas share
//! one database). [`connect`] picks one from a URL and runs the migrations.
//! The CA's domain logic takes an `Arc<dyn Store>` and never sees SQL.
//!
//! Certificate records are group-committed (`batch`): concurrent issuances
//! share one transaction, and so one fsync or one set of round trips, and
//! each caller is answered once the transaction holding its record commits.
//!
//! Storage choices, identical on both backends unless noted:
//! - string lists (`dns_names`, `allowed_cidrs`) are JSON text;
//! - times keep microseconds (SQLite: INTEGER µs since the epoch, PostgreSQL:
//!   `timestamptz`) and come back in UTC;
//! - serials and fingerprints are stored as lowercase hex; a certificate
//!   without a SPIFFE ID stores an empty one;
//! - the secret of a token is never stored, only its SHA-256.
//!
//! This crate must never log or return a secret: no token, no password.

#![forbid(unsafe_code)]

mod acme;
mod batch;
mod console;
mod dialect;
mod entries;
mod error;
mod group;
mod model;
mod postgres;
mod rotation;
mod shared;
mod sql;
mod sqlite;
mod watch;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use ward_pki::Serial;

pub use acme::{AcmeAccount, AcmeEabKey, AcmeOrder, AcmeStore};
pub use console::{AccountDeactivation, ActiveCount, CertificateSearch, LoginUse, StoreOverview};
pub use entries::{MAX_ENTRIES, RegistrationEntry};
pub use error::{BoxError, StoreError};
pub use model::{
    Certificate, NewCertificate, NewToken, Origin, REASON_PRIVILEGE_WITHDRAWN, RevokeOutcome,
    RevokeTokenOutcome, RevokedCertificate, Token, truncate_to_storage_precision,
};
pub use rotation::{CaIntermediate, CaRoot};
pub use watch::RevocationWatch;

/// Everything the CA stores. Every method is atomic: on error nothing changed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a token with zero uses; [`StoreError::DuplicateToken`] if its id or hash exists.
    async fn create_token(&self, token: &NewToken) -> Result<(), StoreError>;

    /// Finds a token by the SHA-256 of its secret.
    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<Token>, StoreError>;

    /// Finds a token by its public id.
    async fn token(&self, id: &str) -> Result<Option<Token>, StoreError>;

    /// Lists every token, newest first.
    async fn list_tokens(&self) -> Result<Vec<Token>, StoreError>;

    /// Revokes a token (idempotent, keeps the first time); with `with_certificates`, also revokes its unrevoked, unexpired certificates with [`REASON_PRIVILEGE_WITHDRAWN`].
    async fn revoke_token(
        &self,
        id: &str,
        with_certificates: bool,
        at: OffsetDateTime,
    ) -> Result<RevokeTokenOutcome, StoreError>;

    /// In one transaction, consumes one use of a usable token and records the certificate; on any error the use is not consumed.
    ///
    /// The transaction may be shared with other calls' records (group
    /// commit); the call returns once that transaction has committed, and
    /// its outcome is what the call would have had alone. If the shared
    /// transaction fails, every call in it gets the error and none of them
    /// wrote anything.
    ///
    /// `certificate.token_id` is set to `token_id` (a different non-empty
    /// value is [`StoreError::Invalid`]). Refusals are
    /// [`StoreError::TokenNotFound`], [`StoreError::TokenRevoked`],
    /// [`StoreError::TokenExpired`] (`expires_at <= now`) and
    /// [`StoreError::TokenExhausted`]; a reused serial is
    /// [`StoreError::DuplicateSerial`].
    async fn issue_with_token(
        &self,
        token_id: &str,
        now: OffsetDateTime,
        certificate: &NewCertificate,
    ) -> Result<(), StoreError>;

    /// Records a certificate issued without a token use (renewals); never overwrites a serial.
    ///
    /// Group-committed like [`Store::issue_with_token`]; a `token_id` that
    /// names no token is [`StoreError::TokenNotFound`], a reused serial
    /// [`StoreError::DuplicateSerial`].
    async fn record_certificate(&self, certificate: &NewCertificate) -> Result<(), StoreError>;

    /// Finds a certificate by serial.
    async fn certificate(&self, serial: &Serial) -> Result<Option<Certificate>, StoreError>;

    /// Lists certificates, newest first, `limit` from `offset`.
    async fn list_certificates(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Certificate>, StoreError>;

    /// Counts recorded certificates.
    async fn count_certificates(&self) -> Result<u64, StoreError>;

    /// Revokes a certificate with an RFC 5280 reason code; idempotent, keeps the first time and reason.
    async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: Option<i16>,
        at: OffsetDateTime,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Lists revoked certificates that have not expired at `now` (a CRL's entries).
    async fn revoked_certificates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedCertificate>, StoreError>;

    /// Starts watching for revocations recorded by any process sharing this
    /// storage (replicas, `ward revoke --dir`, token kill switches), this one
    /// included: PostgreSQL `LISTEN`, SQLite `PRAGMA data_version` polling.
    /// Signals may be spurious; a lost connection counts as a change. The
    /// watch stops when the returned value is dropped.
    async fn watch_revocations(&self) -> Result<RevocationWatch, StoreError>;

    /// Takes the next CRL number: strictly increasing across all processes sharing the database, and never below the current time in microseconds since the epoch (so a store made anew never goes back).
    async fn next_crl_number(&self) -> Result<u64, StoreError>;

    /// Checks that the database answers (for readiness probes).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The ACME server's tables (accounts, orders, nonces, EAB keys).
    fn acme(&self) -> &dyn AcmeStore;

    /// Certificates matching `search`, at most `limit` (the console's search).
    async fn search_certificates(
        &self,
        search: &CertificateSearch,
        limit: u32,
    ) -> Result<Vec<Certificate>, StoreError>;

    /// The console overview's aggregates at `now`, with `list` rows of each list.
    async fn overview(&self, now: OffsetDateTime, list: u32) -> Result<StoreOverview, StoreError>;

    /// How many certificates were issued between each pair of consecutive `bounds` (`[a, b)`).
    async fn count_issued(&self, bounds: &[OffsetDateTime]) -> Result<Vec<u64>, StoreError>;

    /// Records a console login link by the SHA-256 of its secret.
    async fn create_console_login(
        &self,
        hash: &[u8; 32],
        created_at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Uses a console login link: accepted once, before it expires.
    async fn use_console_login(
        &self,
        hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<LoginUse, StoreError>;

    /// Indexes the DNS names of up to `rows` certificates recorded before
    /// the DNS index existed, in one transaction; `true` once none is left.
    async fn backfill_dns(&self, rows: u32) -> Result<bool, StoreError>;

    /// Whether every certificate's DNS names are indexed (the backfill is done).
    async fn dns_index_complete(&self) -> Result<bool, StoreError>;

    /// ACME accounts, newest first, each with how many orders it placed.
    async fn acme_accounts(&self, limit: u32) -> Result<Vec<(AcmeAccount, u64)>, StoreError>;

    /// ACME orders (of one account, or all), newest first.
    async fn acme_orders(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AcmeOrder>, StoreError>;

    /// Deactivates a valid ACME account (final); other states are left as they are.
    async fn deactivate_acme_account(&self, id: &str) -> Result<AccountDeactivation, StoreError>;

    /// Records the next intermediate of a rotation (`ward ca rotate
    /// intermediate`); a conflict while another one is pending.
    async fn add_intermediate(&self, next: &CaIntermediate) -> Result<(), StoreError>;

    /// Every intermediate rotations made (cancelled ones too), by `signs_from`.
    async fn intermediates(&self) -> Result<Vec<CaIntermediate>, StoreError>;

    /// Cancels the intermediates that do not sign yet at `now` (and the
    /// pending root that came with one); how many intermediates.
    async fn cancel_pending_intermediates(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// Records the next root of a root rotation (`ward ca rotate root`)
    /// with its first intermediate, in one transaction; a conflict while
    /// any rotation is pending.
    async fn add_root(&self, root: &CaRoot, first: &CaIntermediate) -> Result<(), StoreError>;

    /// Every root root rotations made (cancelled ones too), by `signs_from`.
    async fn roots(&self) -> Result<Vec<CaRoot>, StoreError>;

    /// Records a registration entry (node attestation); sizes checked, ids unique.
    async fn create_entry(&self, entry: &RegistrationEntry) -> Result<(), StoreError>;

    /// Registration entries, oldest first: all, or those of one node agent.
    async fn entries(&self, node: Option<&str>) -> Result<Vec<RegistrationEntry>, StoreError>;

    /// Deletes a registration entry; `false` when there was none by that id.
    async fn delete_entry(&self, id: &str) -> Result<bool, StoreError>;

    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Closes the pool, waiting for in-flight work (for graceful shutdown).
    async fn close(&self);
}

/// The kind of database behind a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A shared PostgreSQL database.
    Postgres,
}

/// Tuning for [`connect_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most connections the pool opens (default 10).
    pub max_connections: u32,
    /// How long a call waits for a free connection before [`StoreError::Unavailable`] (default 10 s).
    pub acquire_timeout: Duration,
    /// Most certificate records committed in one transaction by group commit (default 256).
    pub max_batch: usize,
    /// Whether a missing store may be created (default true). The CA opens
    /// with `false` everywhere but `ward ca init` and an explicit
    /// `--init-storage`: a missing, empty or foreign database is then
    /// [`StoreError::Missing`], never silently a new, empty CA store.
    pub create: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            max_batch: 256,
            create: true,
        }
    }
}

/// Opens the store named by `url` with default options and runs its migrations.
///
/// `postgres://…` or `postgresql://…` selects PostgreSQL; `sqlite://PATH`,
/// `sqlite:PATH` or a plain file path selects SQLite (the file is created
/// with mode 0600 if missing).
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(url, &StoreOptions::default()).await
}

/// Opens an existing store: like [`connect`], but a missing or empty SQLite
/// file or a database without Ward's tables is [`StoreError::Missing`] and a
/// damaged file [`StoreError::Damaged`] (pending migrations still run).
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let options = StoreOptions {
        create: false,
        ..StoreOptions::default()
    };
    connect_with(url, &options).await
}

/// Like [`connect`], with explicit pool options.
pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if options.max_connections == 0 {
        return Err(StoreError::Invalid("max_connections must be at least 1"));
    }
    match parse_url(url)? {
        Target::Postgres => Ok(Arc::new(postgres::PgDriver::open(url, options).await?)),
        Target::Sqlite(path) => Ok(Arc::new(sqlite::SqliteDriver::open(path, options).await?)),
    }
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// A PostgreSQL server.
    Postgres,
    /// A SQLite file.
    Sqlite(&'a Path),
}

/// Chooses a backend from a URL without echoing it (it may hold a password).
fn parse_url(url: &str) -> Result<Target<'_>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres);
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.contains('?') {
            return Err(StoreError::InvalidUrl(
                "sqlite URLs take no query parameters; Ward sets the options itself".into(),
            ));
        }
        path
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(StoreError::InvalidUrl(format!(
            "unsupported scheme {scheme:?}: use postgres://, sqlite:// or a file path"
        )));
    } else {
        url
    };
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::InvalidUrl("SQLite needs a file path".into()));
    }
    Ok(Target::Sqlite(Path::new(path)))
}

/// Replaces the URL's password, wherever it appears in `message`, with `***`.
fn redact(message: &str, url: &str) -> String {
    let mut secrets = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            secrets.push(password);
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some(password) = pair.strip_prefix("password=") {
                secrets.push(password);
            }
        }
    }
    secrets
        .into_iter()
        .filter(|s| !s.is_empty())
        .fold(message.to_owned(), |m, s| m.replace(s, "***"))
}

/// An error message that has been through [`redact`].
#[derive(Debug)]
struct Redacted(String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

/// Maps a migration failure, keeping connection problems retryable.
fn migrate_error(context: String, err: sqlx::migrate::MigrateError) -> StoreError {
    match err {
        sqlx::migrate::MigrateError::Execute(e) => StoreError::db(context, e),
        other => StoreError::other(context, other),
    }
}

/// How long a pooled connection may have sat idle before it is pinged when
/// taken from the pool. A busy CA (a batch every few milliseconds) skips the
/// ping, one round trip per transaction; a connection that waited longer,
/// and may have been cut meanwhile, is checked as before.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The pool's `before_acquire` hook: pings a connection that sat idle for
/// [`PING_IF_IDLE_FOR`] or longer (an error makes the pool drop it and take
/// or open another), passes busy ones through untested.
async fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for >= PING_IF_IDLE_FOR {
        conn.ping().await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(parse_url("postgres://u:p@h/db").unwrap(), Target::Postgres);
        assert_eq!(parse_url("postgresql://h/db").unwrap(), Target::Postgres);
        let abs = Target::Sqlite(Path::new("/var/lib/ward/ca.db"));
        assert_eq!(parse_url("sqlite:///var/lib/ward/ca.db").unwrap(), abs);
        assert_eq!(parse_url("sqlite:/var/lib/ward/ca.db").unwrap(), abs);
        assert_eq!(parse_url("/var/lib/ward/ca.db").unwrap(), abs);
        let rel = Target::Sqlite(Path::new("ca.db"));
        assert_eq!(parse_url("sqlite://ca.db").unwrap(), rel);
        assert_eq!(parse_url("ca.db").unwrap(), rel);
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in [
            "mysql://u:hunter2@h/db",
            "sqlite://",
            "sqlite::memory:",
            "sqlite://x?mode=rwc",
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(matches!(e, StoreError::InvalidUrl(_)), "{url}");
            assert!(!e.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn redact_hides_passwords() {
        let url = "postgres://ward:s3cr%21t@db:5432/ward?password=other&sslmode=require";
        let msg = "failed for ward:s3cr%21t and other";
        assert_eq!(redact(msg, url), "failed for ward:*** and ***");
        assert_eq!(redact("x", "postgres://db/ward"), "x");
    }
}
