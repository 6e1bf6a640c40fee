//! The scale-out backend: several CA replicas share one PostgreSQL database.
//!
//! Correctness across replicas rests on row locks and single statements,
//! never on unlocked read-then-write in application code: token uses are
//! decided from token rows read with `SELECT … FOR UPDATE` (a replica's
//! batch waits for the lock and then reads the latest version, so two
//! replicas cannot take the same last use) and added by an `UPDATE` that
//! re-checks the limit; CRL numbers come from one `UPDATE … RETURNING` on a
//! single row, and the migrator holds an advisory lock so replicas starting
//! together do not race. Transactions run at the default READ COMMITTED level.
//!
//! Certificate records go through the store's group commit
//! ([`crate::batch`]): a batch locks the token rows it names
//! (`SELECT … FOR UPDATE`, in id order), decides every item from them, then
//! writes all certificates and all token uses with one statement (a multi-row
//! `INSERT` and an `UPDATE` in data-modifying CTEs): four round trips per
//! batch (`BEGIN`, lock, write, `COMMIT`), plus one write per further
//! ~14 KiB of certificates (each statement fits in one TLS record: see
//! [`STATEMENT_BUDGET`]).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use time::OffsetDateTime;

use crate::batch::{BatchResult, BatchWriter, Committer, Item, plan, token_ids};
use crate::error::{Violation, violation};
use crate::model::{
    REASON_PRIVILEGE_WITHDRAWN, decode_hash, decode_list, decode_origin, encode_list,
    normalize_certificate, normalize_serial, truncate_to_storage_precision as micros,
    validate_reason, validate_token,
};
use crate::{
    Backend, Certificate, NewCertificate, NewToken, RevokeOutcome, RevokeTokenOutcome,
    RevokedCertificate, Store, StoreError, StoreOptions, Token, migrate_error, sql, watch,
};

/// Migrations for this backend, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// A PostgreSQL database behind a connection pool.
pub(crate) struct PgStore {
    /// The pool; every replica has its own.
    pool: PgPool,
    /// Group commit of certificate records.
    committer: Committer,
}

/// The PostgreSQL half of group commit.
struct PgBatch {
    /// The store's pool.
    pool: PgPool,
}

impl PgStore {
    /// Connects to and migrates the database named by `url`.
    ///
    /// Errors name the host, port and database, never the URL (which may hold
    /// a password).
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(crate::redact(&e.to_string(), url)))?;
        let shown = format!(
            "{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(crate::ping_if_idle(conn, meta)))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| {
                let e = crate::Redacted(crate::redact(&e.to_string(), url));
                let ctx = format!("connecting to PostgreSQL at {shown}");
                StoreError::Unavailable {
                    context: ctx,
                    source: Box::new(e),
                }
            })?;
        if !options.create {
            let present: bool = sqlx::query_scalar(
                "SELECT to_regclass('_sqlx_migrations') IS NOT NULL \
                 AND to_regclass('crl_counter') IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .map_err(|e| StoreError::db(format!("inspecting PostgreSQL database {shown}"), e))?;
            if !present {
                pool.close().await;
                return Err(StoreError::Missing(format!(
                    "the PostgreSQL database {shown} holds no Ward CA store; create one \
                     explicitly (`ward ca init --database URL` or `ward ca serve --init-storage`)"
                )));
            }
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| migrate_error(format!("migrating PostgreSQL database {shown}"), e))?;
        let committer = Committer::spawn(PgBatch { pool: pool.clone() }, options.max_batch);
        Ok(Self { pool, committer })
    }
}

#[async_trait]
impl BatchWriter for PgBatch {
    async fn write_batch(&self, items: &[Item]) -> BatchResult {
        let ctx = "committing certificates";
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        // Locked until commit: a replica's batch or a revocation touching
        // these tokens waits, then sees what this batch did.
        let rows = sqlx::query(sql::PG_LOCK_TOKENS)
            .bind(token_ids(items))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        let mut tokens = HashMap::with_capacity(rows.len());
        for row in &rows {
            let token = token_from_row(row)?;
            tokens.insert(token.id.clone(), token);
        }
        let plan = plan(items, &tokens);
        if plan.is_empty() {
            // Dropping `tx` rolls back; nothing was written.
            return Ok(plan.finish(items, &HashSet::new()).0);
        }
        // Certificates and token uses, one statement per chunk that fits
        // in one TLS record (see `STATEMENT_BUDGET`): about a dozen
        // certificates each.
        let planned: Vec<(usize, &NewCertificate)> = plan.inserts(items).collect();
        let mut inserted: HashSet<usize> = HashSet::with_capacity(planned.len());
        for chunk in statement_chunks(&planned) {
            let mut columns = Columns::default();
            let mut index_of = HashMap::with_capacity(chunk.len());
            for (i, c) in chunk {
                columns.push(c, items[*i].consume.is_some());
                index_of.insert(c.serial.as_str(), *i);
            }
            let written: Vec<(String, i64, i64)> = sqlx::query_as(sql::PG_INSERT_CERTIFICATES)
                .bind(columns.serial)
                .bind(columns.spiffe_id)
                .bind(columns.token_id)
                .bind(columns.not_before)
                .bind(columns.not_after)
                .bind(columns.der)
                .bind(columns.fingerprint)
                .bind(columns.issued_at)
                .bind(columns.renewed_from)
                .bind(columns.consumes)
                .bind(columns.origin)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| StoreError::db(ctx, e))?;
            // The tokens this chunk's written rows take a use of.
            let mut charged = HashSet::new();
            for (serial, _, _) in &written {
                if let Some(&i) = index_of.get(serial.as_str()) {
                    inserted.insert(i);
                    if let Some((id, _)) = &items[i].consume {
                        charged.insert(id.as_str());
                    }
                }
            }
            let (needed, added) = written.first().map_or((0, 0), |(_, n, a)| (*n, *a));
            if needed != added || usize::try_from(needed).ok() != Some(charged.len()) {
                // Dropping `tx` rolls back; nothing was written.
                return Err(StoreError::other(
                    ctx,
                    "a token's uses changed under its row lock",
                ));
            }
        }
        let (outcomes, _uses) = plan.finish(items, &inserted);
        tx.commit().await.map_err(|e| StoreError::db(ctx, e))?;
        Ok(outcomes)
    }
}

/// Most bytes of certificate data one write statement carries.
///
/// sqlx 0.9.0 sends each TLS record of a message with its own write and
/// leaves Nagle's algorithm on (launchbadge/sqlx#4335, fixed upstream after
/// 0.9.0): a message longer than one TLS record (16 KiB of plaintext)
/// waits for the server's delayed ACK of the first record, about 40 ms, so
/// one large batch statement costs a whole batch 40 ms. Statements that fit
/// in one record cost one round trip each instead.
const STATEMENT_BUDGET: usize = 14 * 1024;

/// What one row adds to the write statement, near enough: its variable
/// fields, a length word per column, three timestamps and a flag.
fn encoded_len(c: &NewCertificate) -> usize {
    c.der.len()
        + c.serial.len()
        + c.spiffe_id.len()
        + c.token_id.as_ref().map_or(0, String::len)
        + c.fingerprint.len()
        + c.renewed_from.as_ref().map_or(0, String::len)
        + c.origin.as_str().len()
        + 11 * 4
        + 3 * 8
        + 1
}

/// Splits the rows to insert, in order, into runs within
/// [`STATEMENT_BUDGET`] (a run holds at least one row).
fn statement_chunks<'a, 'b>(
    rows: &'a [(usize, &'b NewCertificate)],
) -> impl Iterator<Item = &'a [(usize, &'b NewCertificate)]> + 'a {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let len = rest
            .iter()
            .position(|(_, c)| {
                bytes += encoded_len(c);
                bytes > STATEMENT_BUDGET
            })
            .unwrap_or(rest.len())
            .max(1);
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

/// A batch of certificates as one array per column (for `UNNEST`).
#[derive(Default)]
struct Columns {
    serial: Vec<String>,
    spiffe_id: Vec<String>,
    token_id: Vec<Option<String>>,
    not_before: Vec<OffsetDateTime>,
    not_after: Vec<OffsetDateTime>,
    der: Vec<Vec<u8>>,
    fingerprint: Vec<String>,
    issued_at: Vec<OffsetDateTime>,
    renewed_from: Vec<Option<String>>,
    consumes: Vec<bool>,
    origin: Vec<&'static str>,
}

impl Columns {
    /// Appends one (normalised) certificate, and whether it consumes a use
    /// of its token.
    fn push(&mut self, c: &NewCertificate, consumes: bool) {
        self.serial.push(c.serial.clone());
        self.spiffe_id.push(c.spiffe_id.clone());
        self.token_id.push(c.token_id.clone());
        self.not_before.push(micros(c.not_before));
        self.not_after.push(micros(c.not_after));
        self.der.push(c.der.clone());
        self.fingerprint.push(c.fingerprint.clone());
        self.issued_at.push(micros(c.issued_at));
        self.renewed_from.push(c.renewed_from.clone());
        self.consumes.push(consumes);
        self.origin.push(c.origin.as_str());
    }
}

/// Decodes a row selected with the `tokens` column list.
fn token_from_row(row: &PgRow) -> Result<Token, StoreError> {
    let d = |e| StoreError::other("decoding a token row", e);
    Ok(Token {
        id: row.try_get(0).map_err(d)?,
        hash: decode_hash(row.try_get::<&[u8], _>(1).map_err(d)?)?,
        spiffe_id: row.try_get(2).map_err(d)?,
        dns_names: decode_list("tokens.dns_names", row.try_get(3).map_err(d)?)?,
        profile: row.try_get(4).map_err(d)?,
        cert_ttl_secs: row.try_get(5).map_err(d)?,
        expires_at: row.try_get(6).map_err(d)?,
        max_uses: row.try_get(7).map_err(d)?,
        uses: row.try_get(8).map_err(d)?,
        allowed_cidrs: decode_list("tokens.allowed_cidrs", row.try_get(9).map_err(d)?)?,
        created_at: row.try_get(10).map_err(d)?,
        revoked_at: row.try_get(11).map_err(d)?,
        revoked_with_certs: row.try_get(12).map_err(d)?,
        common_name: row.try_get(13).map_err(d)?,
    })
}

/// Decodes a row selected with the `certificates` column list.
fn certificate_from_row(row: &PgRow) -> Result<Certificate, StoreError> {
    let d = |e| StoreError::other("decoding a certificate row", e);
    Ok(Certificate {
        serial: row.try_get(0).map_err(d)?,
        spiffe_id: row.try_get(1).map_err(d)?,
        token_id: row.try_get(2).map_err(d)?,
        not_before: row.try_get(3).map_err(d)?,
        not_after: row.try_get(4).map_err(d)?,
        der: row.try_get(5).map_err(d)?,
        fingerprint: row.try_get(6).map_err(d)?,
        issued_at: row.try_get(7).map_err(d)?,
        renewed_from: row.try_get(8).map_err(d)?,
        revoked_at: row.try_get(9).map_err(d)?,
        revocation_reason: row.try_get(10).map_err(d)?,
        origin: decode_origin(row.try_get(11).map_err(d)?)?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn create_token(&self, t: &NewToken) -> Result<(), StoreError> {
        validate_token(t)?;
        sqlx::query(sql::INSERT_TOKEN)
            .bind(&t.id)
            .bind(&t.hash[..])
            .bind(&t.spiffe_id)
            .bind(encode_list(&t.dns_names))
            .bind(&t.profile)
            .bind(t.cert_ttl_secs)
            .bind(micros(t.expires_at))
            .bind(t.max_uses)
            .bind(encode_list(&t.allowed_cidrs))
            .bind(micros(t.created_at))
            .bind(&t.common_name)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| match violation(&e) {
                Some(Violation::Unique) => StoreError::DuplicateToken,
                _ => StoreError::db("creating a token", e),
            })
    }

    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<Token>, StoreError> {
        let row = sqlx::query(sql::TOKEN_BY_HASH)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db("looking up a token", e))?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn token(&self, id: &str) -> Result<Option<Token>, StoreError> {
        let row = sqlx::query(sql::TOKEN_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db("reading a token", e))?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
        let rows = sqlx::query(sql::LIST_TOKENS)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::db("listing tokens", e))?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(
        &self,
        id: &str,
        with_certificates: bool,
        at: OffsetDateTime,
    ) -> Result<RevokeTokenOutcome, StoreError> {
        let ctx = "revoking a token";
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        let marked = sqlx::query(sql::REVOKE_TOKEN)
            .bind(id)
            .bind(micros(at))
            .bind(with_certificates)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        if marked.rows_affected() == 0 {
            return Ok(RevokeTokenOutcome::NotFound);
        }
        let mut certificates_revoked = 0;
        if with_certificates {
            // The token row is locked by the UPDATE above, so no certificate
            // can be issued from it until this transaction ends.
            certificates_revoked = sqlx::query(sql::REVOKE_TOKEN_CERTIFICATES)
                .bind(id)
                .bind(micros(at))
                .bind(REASON_PRIVILEGE_WITHDRAWN)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(ctx, e))?
                .rows_affected();
            if certificates_revoked > 0 {
                // Every replica's CRL, at commit (see `watch`).
                sqlx::query(watch::PG_NOTIFY)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(ctx, e))?;
            }
        }
        tx.commit().await.map_err(|e| StoreError::db(ctx, e))?;
        Ok(RevokeTokenOutcome::Revoked {
            certificates_revoked,
        })
    }

    async fn issue_with_token(
        &self,
        token_id: &str,
        now: OffsetDateTime,
        certificate: &NewCertificate,
    ) -> Result<(), StoreError> {
        let c = crate::bind_to_token(normalize_certificate(certificate)?, token_id)?;
        self.committer
            .submit(Item::with_token(token_id, now, c))
            .await
    }

    async fn record_certificate(&self, certificate: &NewCertificate) -> Result<(), StoreError> {
        let c = normalize_certificate(certificate)?;
        self.committer.submit(Item::record(c)).await
    }

    async fn certificate(&self, serial: &str) -> Result<Option<Certificate>, StoreError> {
        let Some(serial) = normalize_serial(serial) else {
            return Ok(None);
        };
        let row = sqlx::query(sql::CERTIFICATE_BY_SERIAL)
            .bind(serial)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db("reading a certificate", e))?;
        row.as_ref().map(certificate_from_row).transpose()
    }

    async fn list_certificates(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Certificate>, StoreError> {
        let offset = i64::try_from(offset).map_err(|_| StoreError::Invalid("offset too large"))?;
        let rows = sqlx::query(sql::LIST_CERTIFICATES)
            .bind(i64::from(limit))
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::db("listing certificates", e))?;
        rows.iter().map(certificate_from_row).collect()
    }

    async fn count_certificates(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::COUNT_CERTIFICATES)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::db("counting certificates", e))?;
        u64::try_from(n).map_err(|e| StoreError::other("counting certificates", e))
    }

    async fn revoke_certificate(
        &self,
        serial: &str,
        reason: Option<i16>,
        at: OffsetDateTime,
    ) -> Result<RevokeOutcome, StoreError> {
        validate_reason(reason)?;
        let Some(serial) = normalize_serial(serial) else {
            return Ok(RevokeOutcome::NotFound);
        };
        let ctx = "revoking a certificate";
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        let revoked = sqlx::query(sql::REVOKE_CERTIFICATE)
            .bind(&serial)
            .bind(micros(at))
            .bind(reason)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        if revoked.rows_affected() == 1 {
            // Announced to every replica when, and only if, it commits.
            sqlx::query(watch::PG_NOTIFY)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(ctx, e))?;
            tx.commit().await.map_err(|e| StoreError::db(ctx, e))?;
            return Ok(RevokeOutcome::Revoked);
        }
        // Nothing changed; revocation is final and rows are never deleted,
        // so the existence check needs no transaction.
        drop(tx);
        let n: i64 = sqlx::query_scalar(sql::CERTIFICATE_EXISTS)
            .bind(&serial)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        Ok(if n == 0 {
            RevokeOutcome::NotFound
        } else {
            RevokeOutcome::AlreadyRevoked
        })
    }

    async fn revoked_certificates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedCertificate>, StoreError> {
        let d = |e| StoreError::db("listing revoked certificates", e);
        let rows = sqlx::query(sql::REVOKED_CERTIFICATES)
            .bind(micros(now))
            .fetch_all(&self.pool)
            .await
            .map_err(d)?;
        rows.iter()
            .map(|row| {
                Ok(RevokedCertificate {
                    serial: row.try_get(0).map_err(d)?,
                    revoked_at: row.try_get(1).map_err(d)?,
                    reason: row.try_get(2).map_err(d)?,
                })
            })
            .collect()
    }

    async fn watch_revocations(&self) -> Result<watch::RevocationWatch, StoreError> {
        let ctx = "listening for revocations";
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        listener
            .listen(watch::PG_CHANNEL)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        let (signal, rx) = watch::channel();
        tokio::spawn(listen_for_revocations(listener, signal));
        Ok(rx)
    }

    async fn next_crl_number(&self) -> Result<u64, StoreError> {
        let ctx = "taking a CRL number";
        let n: i64 = sqlx::query_scalar(sql::NEXT_CRL_NUMBER)
            .bind(crate::model::to_micros(OffsetDateTime::now_utc()))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        u64::try_from(n).map_err(|e| StoreError::other(ctx, e))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PING)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| StoreError::db("pinging the database", e))
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn close(&self) {
        self.committer.flush().await;
        self.pool.close().await;
    }
}

/// Relays notifications on [`watch::PG_CHANNEL`] until nobody listens or
/// the pool closes. The listener reconnects by itself (and `LISTEN`s
/// again); notifications sent meanwhile are lost, so a reconnect or an
/// error counts as a change.
async fn listen_for_revocations(mut listener: PgListener, signal: watch::Signal) {
    loop {
        let received = tokio::select! {
            () = signal.closed() => return,
            r = listener.try_recv() => r,
        };
        match received {
            Ok(Some(_)) => signal.fire(),
            Ok(None) => {
                tracing::warn!("revocation watch: PostgreSQL connection lost; reconnected");
                signal.fire();
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "revocation watch: LISTEN failed; retrying");
                signal.fire();
                tokio::time::sleep(watch::RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cert(der_len: usize) -> NewCertificate {
        let now = OffsetDateTime::now_utc();
        NewCertificate {
            serial: "40".repeat(16),
            spiffe_id: "spiffe://example.org/w".into(),
            token_id: Some("t".repeat(32)),
            not_before: now,
            not_after: now,
            der: vec![0; der_len],
            fingerprint: "00".repeat(32),
            issued_at: now,
            renewed_from: None,
            origin: crate::Origin::Token,
        }
    }

    #[test]
    fn statements_stay_within_one_tls_record_and_keep_every_row_in_order() {
        let certs: Vec<NewCertificate> = (0..100).map(|_| cert(700)).collect();
        let rows: Vec<(usize, &NewCertificate)> = certs.iter().enumerate().collect();
        let chunks: Vec<_> = statement_chunks(&rows).collect();
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(|(_, c)| encoded_len(c)).sum();
            assert!(bytes <= STATEMENT_BUDGET, "{bytes}");
        }
        let order: Vec<usize> = chunks
            .iter()
            .flat_map(|c| c.iter().map(|(i, _)| *i))
            .collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
        // One row larger than the budget still goes, alone.
        let big = [cert(20_000), cert(700)];
        let rows: Vec<(usize, &NewCertificate)> = big.iter().enumerate().collect();
        let lens: Vec<usize> = statement_chunks(&rows).map(<[_]>::len).collect();
        assert_eq!(lens, [1, 1]);
        assert_eq!(statement_chunks(&[]).count(), 0);
    }
}
