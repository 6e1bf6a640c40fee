//! What the CA's web console asks of storage: certificate searches, the
//! overview's aggregates and one-time login links.
//!
//! Every query here is answered from an index (see the `0010_console`
//! migrations), so each stays fast with millions of certificates: a search
//! reads at most `limit` rows of an index range, the overview counts only
//! unexpired certificates and the last day's issuance.

use time::OffsetDateTime;
use ward_pki::Serial;

use crate::acme::{account_from_row, order_from_row};
use crate::dialect::{Columns, Param, Statements};
use crate::model::{decode_origin, dns_index_key, dns_index_names};
use crate::shared::{Driver, SqlStore, certificate_from_row};
use crate::{AcmeAccount, AcmeOrder, Certificate, Origin, StoreError};

/// Columns of `certificates`, in the order the row decoders read them.
macro_rules! cert_columns {
    () => {
        "serial, spiffe_id, token_id, not_before, not_after, der, fingerprint, issued_at, \
         renewed_from, revoked_at, revocation_reason, origin, profile"
    };
}

/// The same columns of `certificates` as `c`, for joins.
macro_rules! joined_cert_columns {
    () => {
        "c.serial, c.spiffe_id, c.token_id, c.not_before, c.not_after, c.der, c.fingerprint, \
         c.issued_at, c.renewed_from, c.revoked_at, c.revocation_reason, c.origin, c.profile"
    };
}

/// Certificates with a DNS name exactly `$1` (reversed), newest first.
pub(crate) const BY_DNS_NAME: &str = concat!(
    "SELECT ",
    joined_cert_columns!(),
    " FROM cert_dns d JOIN certificates c ON c.serial = d.serial WHERE d.name_rev = $1 \
     ORDER BY d.issued_at DESC LIMIT $2"
);

/// Certificates with a DNS name whose reversal lies in `[$1, $2)` (a
/// suffix), by name then newest first.
pub(crate) const BY_DNS_SUFFIX: &str = concat!(
    "SELECT ",
    joined_cert_columns!(),
    " FROM cert_dns d JOIN certificates c ON c.serial = d.serial \
     WHERE d.name_rev >= $1 AND d.name_rev < $2 ORDER BY d.name_rev, d.issued_at DESC LIMIT $3"
);

/// Takes the DNS backfill's cursor, locking its row until commit (none: done).
const BACKFILL_CURSOR: &str =
    "UPDATE cert_dns_backfill SET after = after WHERE id = 1 RETURNING after";

/// The next certificates the DNS backfill reads.
const BACKFILL_ROWS: &str = "SELECT serial, der, issued_at FROM certificates \
     WHERE serial > $1 ORDER BY serial LIMIT $2";

/// Moves the DNS backfill's cursor.
const BACKFILL_ADVANCE: &str = "UPDATE cert_dns_backfill SET after = $1 WHERE id = 1";

/// Ends the DNS backfill.
const BACKFILL_DONE: &str = "DELETE FROM cert_dns_backfill";

/// Whether the DNS backfill is still running.
const BACKFILL_PENDING: &str = "SELECT COUNT(*) FROM cert_dns_backfill";

/// Indexes one DNS name of a certificate.
const INSERT_DNS: &str = "INSERT INTO cert_dns (name_rev, issued_at, serial) \
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

/// ACME accounts, newest first, with how many orders each placed.
const ACME_ACCOUNTS: &str = "SELECT a.id, a.provisioner, a.thumbprint, a.jwk, a.status, \
     a.contact, a.eab_key_id, a.created_at, \
     (SELECT COUNT(*) FROM acme_orders o WHERE o.account_id = a.id) \
     FROM acme_accounts a ORDER BY a.created_at DESC, a.id LIMIT $1";

/// ACME orders, newest first.
const ACME_ORDERS: &str = "SELECT id, account_id, provisioner, status, expires_at, doc, \
     cert_serial, version, created_at FROM acme_orders ORDER BY created_at DESC, id LIMIT $1";

/// One account's ACME orders, newest first.
const ACME_ORDERS_OF: &str = "SELECT id, account_id, provisioner, status, expires_at, doc, \
     cert_serial, version, created_at FROM acme_orders WHERE account_id = $1 \
     ORDER BY created_at DESC, id LIMIT $2";

/// Deactivates a valid ACME account (RFC 8555 §7.3.6: final).
const DEACTIVATE_ACCOUNT: &str =
    "UPDATE acme_accounts SET status = 'deactivated' WHERE id = $1 AND status = 'valid'";

/// An ACME account's status, to say why it was not deactivated.
const ACCOUNT_STATUS: &str = "SELECT status FROM acme_accounts WHERE id = $1";

/// Certificates whose SPIFFE ID lies in `[$1, $2)`, by ID then newest first.
pub(crate) const BY_SPIFFE_PREFIX: &str = concat!(
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

/// Unexpired, unrevoked certificates by origin and profile. Grouping by
/// expressions (`origin || ''`) keeps SQLite from walking the whole
/// `certificates_origin` index (and every row) to avoid a sort: it reads
/// the unexpired entries of the covering `certificates_active` instead (1M
/// rows: 14 s before, milliseconds after).
pub(crate) const ACTIVE_BY_ORIGIN: &str = "SELECT origin || '', COALESCE(profile, ''), COUNT(*) \
     FROM certificates WHERE not_after > $1 AND revoked_at IS NULL \
     GROUP BY origin || '', COALESCE(profile, '')";

/// What expires next.
pub(crate) const EXPIRING: &str = concat!(
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

/// Most intervals one issuance-count statement covers.
const COUNT_CHUNK: usize = 32;

/// Certificates issued in each of `k` consecutive intervals (bounds `$1` to
/// `$k+1`), one row per interval, (index, count): one round trip for many
/// index-range counts (the overview's 84 cost 84 round trips on PostgreSQL).
fn issued_between_sql(k: usize) -> &'static str {
    static TEXTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (1..=COUNT_CHUNK)
            .map(|k| {
                (0..k)
                    .map(|i| {
                        format!(
                            "SELECT CAST({i} AS BIGINT), COUNT(*) FROM certificates \
                             WHERE issued_at >= ${} AND issued_at < ${}",
                            i + 1,
                            i + 2
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ")
            })
            .collect()
    });
    TEXTS[k.clamp(1, COUNT_CHUNK) - 1].as_str()
}

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
    /// Those with exactly this DNS name (case-insensitive).
    DnsName(String),
    /// Those with a DNS name ending in this suffix (`.example.test`,
    /// case-insensitive; a wildcard `*.example.test` in a certificate ends
    /// in it too).
    DnsSuffix(String),
}

/// Active certificates of one origin and profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveCount {
    /// Where they came from.
    pub origin: Origin,
    /// The profile they were issued with (`None`: not recorded).
    pub profile: Option<String>,
    /// How many are unexpired and unrevoked.
    pub count: u64,
}

/// What became of deactivating an ACME account from the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountDeactivation {
    /// It was valid and is now deactivated.
    Deactivated,
    /// No such account.
    NotFound,
    /// It was not valid (already deactivated or revoked): this status.
    NotValid(String),
}

/// The aggregates of the console's overview, at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOverview {
    /// Unexpired, unrevoked certificates per origin (origins with none left out).
    pub active_by_origin: Vec<(Origin, u64)>,
    /// Unexpired, unrevoked certificates per origin and profile, by origin
    /// then profile (pairs with none left out).
    pub active_by_profile: Vec<ActiveCount>,
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
            CertificateSearch::DnsName(name) => {
                let Some(key) = dns_index_key(name.trim()) else {
                    return Ok(Vec::new());
                };
                let params = [Param::Text(&key), limit];
                self.read_all(ctx, BY_DNS_NAME, &params, certificate_from_row)
                    .await
            }
            CertificateSearch::DnsSuffix(suffix) => {
                // `*.example.test` and `.example.test` both mean "under
                // example.test": reversed, the prefix `tset.elpmaxe.`.
                let suffix = suffix.trim();
                let suffix = suffix.strip_prefix('*').unwrap_or(suffix);
                let Some(key) = dns_index_key(suffix) else {
                    return Ok(Vec::new());
                };
                let upper = format!("{key}\u{10FFFF}");
                let params = [Param::Text(&key), Param::Text(&upper), limit];
                let mut found = self
                    .read_all(ctx, BY_DNS_SUFFIX, &params, certificate_from_row)
                    .await?;
                // A certificate with several matching names comes once.
                let mut seen = std::collections::HashSet::new();
                found.retain(|c| seen.insert(c.serial.clone()));
                Ok(found)
            }
        }
    }

    /// See [`crate::Store::backfill_dns`].
    pub(crate) async fn console_backfill_dns(&self, rows: u32) -> Result<bool, StoreError> {
        let ctx = "indexing the DNS names of earlier certificates";
        let rows = i64::from(rows.max(1));
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let cursor = tx.fetch_all(BACKFILL_CURSOR, &[]).await.map_err(db)?;
                let Some(after) = cursor.first().map(|r| r.text(0)).transpose().map_err(db)? else {
                    return Ok(true);
                };
                drop(cursor);
                let found = tx
                    .fetch_all(BACKFILL_ROWS, &[Param::Text(&after), Param::Int(rows)])
                    .await
                    .map_err(db)?;
                // Decoded first: rows are not held across the inserts.
                let found = found
                    .iter()
                    .map(|row| {
                        Ok((
                            row.text(0).map_err(db)?,
                            dns_index_names(&row.bytes(1).map_err(db)?),
                            row.time(2)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let mut last = None;
                for (serial, names, issued_at) in &found {
                    let (serial, issued_at) = (serial.clone(), *issued_at);
                    for name in names {
                        let params = [
                            Param::Text(name),
                            Param::Time(issued_at),
                            Param::Text(&serial),
                        ];
                        tx.execute(INSERT_DNS, &params).await.map_err(db)?;
                    }
                    last = Some(serial);
                }
                match last {
                    Some(last) if i64::try_from(found.len()).ok() == Some(rows) => {
                        tx.execute(BACKFILL_ADVANCE, &[Param::Text(&last)])
                            .await
                            .map_err(db)?;
                        Ok(false)
                    }
                    _ => {
                        tx.execute(BACKFILL_DONE, &[]).await.map_err(db)?;
                        Ok(true)
                    }
                }
            })
        })
        .await
    }

    /// See [`crate::Store::dns_index_complete`].
    pub(crate) async fn console_dns_index_complete(&self) -> Result<bool, StoreError> {
        Ok(self
            .count("reading the DNS index's state", BACKFILL_PENDING, &[])
            .await?
            == 0)
    }

    /// See [`crate::Store::acme_accounts`].
    pub(crate) async fn console_acme_accounts(
        &self,
        limit: u32,
    ) -> Result<Vec<(AcmeAccount, u64)>, StoreError> {
        self.read_all(
            "listing ACME accounts",
            ACME_ACCOUNTS,
            &[Param::Int(i64::from(limit))],
            |row| {
                let orders = row
                    .int(8)
                    .map_err(|e| StoreError::db("listing ACME accounts", e))?;
                Ok((account_from_row(row)?, count(orders)))
            },
        )
        .await
    }

    /// See [`crate::Store::acme_orders`].
    pub(crate) async fn console_acme_orders(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AcmeOrder>, StoreError> {
        let ctx = "listing ACME orders";
        let limit = Param::Int(i64::from(limit));
        match account {
            Some(id) => {
                self.read_all(
                    ctx,
                    ACME_ORDERS_OF,
                    &[Param::Text(id), limit],
                    order_from_row,
                )
                .await
            }
            None => {
                self.read_all(ctx, ACME_ORDERS, &[limit], order_from_row)
                    .await
            }
        }
    }

    /// See [`crate::Store::deactivate_acme_account`].
    pub(crate) async fn console_deactivate_account(
        &self,
        id: &str,
    ) -> Result<AccountDeactivation, StoreError> {
        let ctx = "deactivating an ACME account";
        let id = id.to_owned();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                if tx
                    .execute(DEACTIVATE_ACCOUNT, &[Param::Text(&id)])
                    .await
                    .map_err(db)?
                    == 1
                {
                    return Ok(AccountDeactivation::Deactivated);
                }
                let rows = tx
                    .fetch_all(ACCOUNT_STATUS, &[Param::Text(&id)])
                    .await
                    .map_err(db)?;
                match rows.first() {
                    None => Ok(AccountDeactivation::NotFound),
                    Some(row) => Ok(AccountDeactivation::NotValid(row.text(0).map_err(db)?)),
                }
            })
        })
        .await
    }

    /// See [`crate::Store::overview`].
    pub(crate) async fn console_overview(
        &self,
        now: OffsetDateTime,
        list: u32,
    ) -> Result<StoreOverview, StoreError> {
        let ctx = "reading the overview";
        let at = [Param::Time(now)];
        let mut active_by_profile = self
            .read_all(ctx, ACTIVE_BY_ORIGIN, &at, |row| {
                let d = |e| StoreError::db("reading the overview", e);
                let origin = decode_origin(&row.text(0).map_err(d)?)?;
                let profile = row.text(1).map_err(d)?;
                Ok(ActiveCount {
                    origin,
                    profile: (!profile.is_empty()).then_some(profile),
                    count: count(row.int(2).map_err(d)?),
                })
            })
            .await?;
        active_by_profile.sort_by(|a, b| {
            let rank = |o: &Origin| Origin::ALL.iter().position(|x| x == o);
            (rank(&a.origin), &a.profile).cmp(&(rank(&b.origin), &b.profile))
        });
        let mut active_by_origin: Vec<(Origin, u64)> = Vec::new();
        for a in &active_by_profile {
            match active_by_origin.last_mut() {
                Some((o, n)) if *o == a.origin => *n += a.count,
                _ => active_by_origin.push((a.origin, a.count)),
            }
        }
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
            active_by_profile,
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
        let intervals = bounds.len().saturating_sub(1);
        let mut counts = vec![0; intervals];
        let mut start = 0;
        while start < intervals {
            let k = (intervals - start).min(COUNT_CHUNK);
            let params: Vec<Param<'_>> = bounds[start..=start + k]
                .iter()
                .map(|t| Param::Time(*t))
                .collect();
            let rows = self
                .read_all(ctx, issued_between_sql(k), &params, |row| {
                    let d = |e| StoreError::db("counting issuance", e);
                    Ok((row.int(0).map_err(d)?, count(row.int(1).map_err(d)?)))
                })
                .await?;
            if rows.len() != k {
                return Err(StoreError::other(ctx, "one count per interval expected"));
            }
            for (i, n) in rows {
                let slot = usize::try_from(i)
                    .ok()
                    .filter(|i| *i < k)
                    .and_then(|i| counts.get_mut(start + i))
                    .ok_or_else(|| StoreError::other(ctx, "an interval index out of range"))?;
                *slot = n;
            }
            start += k;
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
