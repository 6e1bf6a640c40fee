//! What the CA's web console asks of storage: certificate searches, the
//! overview's aggregates and one-time login links.
//!
//! Every query here is answered from an index (see the `0010_console`
//! migrations), so each stays fast with millions of certificates: a search
//! reads at most `limit` rows of an index range, the overview counts only
//! unexpired certificates and the last day's issuance.

use time::OffsetDateTime;
use ward_pki::Serial;

use crate::dialect::{Columns, Param, Statements};
use crate::model::decode_origin;
use crate::shared::{Driver, SqlStore, certificate_from_row};
use crate::{Certificate, Origin, StoreError};

/// Columns of `certificates`, in the order the row decoders read them.
macro_rules! cert_columns {
    () => {
        "serial, spiffe_id, token_id, not_before, not_after, der, fingerprint, issued_at, \
         renewed_from, revoked_at, revocation_reason, origin"
    };
}

/// Certificates whose SPIFFE ID lies in `[$1, $2)`, by ID then newest first.
const BY_SPIFFE_PREFIX: &str = concat!(
    "SELECT ",
    cert_columns!(),
    " FROM certificates WHERE spiffe_id >= $1 AND spiffe_id < $2 \
     ORDER BY spiffe_id, issued_at DESC LIMIT $3"
);

/// A token's certificates, newest first.
const BY_TOKEN: &str = concat!(
    "SELECT ",
    cert_columns!(),
    " FROM certificates WHERE token_id = $1 ORDER BY issued_at DESC LIMIT $2"
);

/// The newest certificates.
const RECENT: &str = concat!(
    "SELECT ",
    cert_columns!(),
    " FROM certificates ORDER BY issued_at DESC LIMIT $1"
);

/// Unexpired, unrevoked certificates by origin. Grouping by `origin || ''`
/// keeps SQLite from walking the whole `certificates_origin` index (and
/// every row) to avoid a sort: it reads the few unexpired entries of
/// `certificates_active` instead (1M rows: 14 s before, milliseconds after).
const ACTIVE_BY_ORIGIN: &str = "SELECT origin || '', COUNT(*) FROM certificates \
     WHERE not_after > $1 AND revoked_at IS NULL GROUP BY origin || ''";

/// What expires next.
const EXPIRING: &str = concat!(
    "SELECT ",
    cert_columns!(),
    " FROM certificates WHERE not_after > $1 AND revoked_at IS NULL \
     ORDER BY not_after LIMIT $2"
);

/// Revoked certificates that have not expired (the CRL's size).
const REVOKED_UNEXPIRED: &str =
    "SELECT COUNT(*) FROM certificates WHERE revoked_at IS NOT NULL AND not_after > $1";

/// The latest revocations.
const RECENT_REVOCATIONS: &str = concat!(
    "SELECT ",
    cert_columns!(),
    " FROM certificates WHERE revoked_at IS NOT NULL ORDER BY revoked_at DESC LIMIT $1"
);

/// Certificates issued in `[$1, $2)`.
const ISSUED_BETWEEN: &str =
    "SELECT COUNT(*) FROM certificates WHERE issued_at >= $1 AND issued_at < $2";

/// Tokens that could still issue.
const USABLE_TOKENS: &str = "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL \
     AND expires_at > $1 AND (max_uses = 0 OR uses < max_uses)";

/// Records a login link (by the hash of its secret).
const INSERT_LOGIN: &str =
    "INSERT INTO console_logins (hash, created_at, expires_at, used_at) VALUES ($1, $2, $3, NULL)";

/// Forgets links that expired before `$1`.
const PRUNE_LOGINS: &str = "DELETE FROM console_logins WHERE expires_at < $1";

/// Uses a link: only once, only before it expires.
const USE_LOGIN: &str = "UPDATE console_logins SET used_at = $2 \
     WHERE hash = $1 AND used_at IS NULL AND expires_at > $2";

/// A link's state, to say why it was refused.
const LOGIN_STATE: &str = "SELECT used_at FROM console_logins WHERE hash = $1";

/// How long a used or expired link is kept (to tell "used" from "unknown").
const KEEP_LOGINS: time::Duration = time::Duration::days(1);

/// What to look for among certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateSearch {
    /// The newest.
    Recent,
    /// Those whose SPIFFE ID starts with this text (exactly, byte for byte).
    SpiffePrefix(String),
    /// The one with this serial.
    Serial(Serial),
    /// Those issued from (or renewed from a certificate of) this token.
    Token(String),
}

/// The aggregates of the console's overview, at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOverview {
    /// Unexpired, unrevoked certificates per origin (origins with none left out).
    pub active_by_origin: Vec<(Origin, u64)>,
    /// Revoked certificates not yet expired (a CRL's entries).
    pub revoked_unexpired: u64,
    /// The unexpired, unrevoked certificates that expire first.
    pub expiring: Vec<Certificate>,
    /// The latest revocations.
    pub recent_revocations: Vec<Certificate>,
    /// Tokens that could still issue a certificate.
    pub usable_tokens: u64,
}

/// What became of an attempt to use a login link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginUse {
    /// The link was valid and is now used up.
    Accepted,
    /// No such link (never made, or forgotten a day after expiry).
    Unknown,
    /// The link was used before.
    Used,
    /// The link expired.
    Expired,
}

impl<D: Driver> SqlStore<D> {
    /// See [`crate::Store::search_certificates`].
    pub(crate) async fn console_search(
        &self,
        search: &CertificateSearch,
        limit: u32,
    ) -> Result<Vec<Certificate>, StoreError> {
        let ctx = "searching certificates";
        let limit = Param::Int(i64::from(limit));
        match search {
            CertificateSearch::Recent => {
                self.read_all(ctx, RECENT, &[limit], certificate_from_row)
                    .await
            }
            CertificateSearch::SpiffePrefix(prefix) => {
                // Every SPIFFE ID is ASCII, so all that start with the prefix
                // sort before prefix + U+10FFFF (bytes F4 8F BF BF).
                let upper = format!("{prefix}\u{10FFFF}");
                let params = [Param::Text(prefix), Param::Text(&upper), limit];
                self.read_all(ctx, BY_SPIFFE_PREFIX, &params, certificate_from_row)
                    .await
            }
            CertificateSearch::Serial(serial) => Ok(crate::Store::certificate(self, serial)
                .await?
                .into_iter()
                .collect()),
            CertificateSearch::Token(id) => {
                let params = [Param::Text(id), limit];
                self.read_all(ctx, BY_TOKEN, &params, certificate_from_row)
                    .await
            }
        }
    }

    /// See [`crate::Store::overview`].
    pub(crate) async fn console_overview(
        &self,
        now: OffsetDateTime,
        list: u32,
    ) -> Result<StoreOverview, StoreError> {
        let ctx = "reading the overview";
        let at = [Param::Time(now)];
        let mut active_by_origin = self
            .read_all(ctx, ACTIVE_BY_ORIGIN, &at, |row| {
                let d = |e| StoreError::db("reading the overview", e);
                let origin = decode_origin(&row.text(0).map_err(d)?)?;
                Ok((origin, count(row.int(1).map_err(d)?)))
            })
            .await?;
        active_by_origin.sort_by_key(|(o, _)| Origin::ALL.iter().position(|x| x == o));
        let revoked_unexpired = self.count(ctx, REVOKED_UNEXPIRED, &at).await?;
        let usable_tokens = self.count(ctx, USABLE_TOKENS, &at).await?;
        let limit = Param::Int(i64::from(list));
        let expiring = self
            .read_all(ctx, EXPIRING, &[at[0], limit], certificate_from_row)
            .await?;
        let recent_revocations = self
            .read_all(ctx, RECENT_REVOCATIONS, &[limit], certificate_from_row)
            .await?;
        Ok(StoreOverview {
            active_by_origin,
            revoked_unexpired,
            expiring,
            recent_revocations,
            usable_tokens,
        })
    }

    /// See [`crate::Store::count_issued`].
    pub(crate) async fn console_count_issued(
        &self,
        bounds: &[OffsetDateTime],
    ) -> Result<Vec<u64>, StoreError> {
        let ctx = "counting issuance";
        let mut counts = Vec::with_capacity(bounds.len().saturating_sub(1));
        for pair in bounds.windows(2) {
            let params = [Param::Time(pair[0]), Param::Time(pair[1])];
            counts.push(self.count(ctx, ISSUED_BETWEEN, &params).await?);
        }
        Ok(counts)
    }

    /// The one count `sql` returns.
    async fn count(
        &self,
        ctx: &'static str,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<u64, StoreError> {
        let row = self
            .driver
            .readers()
            .fetch_one(sql, params)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        Ok(count(row.int(0).map_err(|e| StoreError::db(ctx, e))?))
    }

    /// See [`crate::Store::create_console_login`].
    pub(crate) async fn console_create_login(
        &self,
        hash: &[u8; 32],
        created_at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let ctx = "creating a console login link";
        let hash = *hash;
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                tx.execute(PRUNE_LOGINS, &[Param::Time(created_at - KEEP_LOGINS)])
                    .await
                    .map_err(db)?;
                let params = [
                    Param::Bytes(&hash),
                    Param::Time(created_at),
                    Param::Time(expires_at),
                ];
                tx.execute(INSERT_LOGIN, &params).await.map_err(db)?;
                Ok(())
            })
        })
        .await
    }

    /// See [`crate::Store::use_console_login`].
    pub(crate) async fn console_use_login(
        &self,
        hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<LoginUse, StoreError> {
        let ctx = "using a console login link";
        let hash = *hash;
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let params = [Param::Bytes(&hash), Param::Time(now)];
                if tx.execute(USE_LOGIN, &params).await.map_err(db)? == 1 {
                    return Ok(LoginUse::Accepted);
                }
                let rows = tx
                    .fetch_all(LOGIN_STATE, &[Param::Bytes(&hash)])
                    .await
                    .map_err(db)?;
                let Some(row) = rows.first() else {
                    return Ok(LoginUse::Unknown);
                };
                // Not used, so the UPDATE failed on its expiry.
                if row.opt_time(0)?.is_some() {
                    Ok(LoginUse::Used)
                } else {
                    Ok(LoginUse::Expired)
                }
            })
        })
        .await
    }
}

/// A `COUNT(*)` as unsigned (never negative).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
