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
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use time::OffsetDateTime;
use ward_pki::Serial;

use crate::batch::{BatchResult, BatchWriter, Committer, Item, plan, token_ids};
use crate::dialect::Work;
use crate::model::{encode_optional_spiffe_id, truncate_to_storage_precision as micros};
use crate::shared::{Driver, SqlStore, token_from_row};
use crate::{Backend, NewCertificate, StoreError, StoreOptions, migrate_error, sql, watch};

/// Migrations for this backend, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// A PostgreSQL store: the shared logic over this backend's connections.
pub(crate) type PgStore = SqlStore<PgDriver>;

/// A PostgreSQL database behind a connection pool.
pub(crate) struct PgDriver {
    /// The pool; every replica has its own.
    pool: PgPool,
}

/// The PostgreSQL half of group commit.
struct PgBatch {
    /// The store's pool.
    pool: PgPool,
}

impl PgDriver {
    /// Connects to and migrates the database named by `url`.
    ///
    /// Errors name the host, port and database, never the URL (which may hold
    /// a password).
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<PgStore, StoreError> {
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
        Ok(SqlStore {
            driver: PgDriver { pool },
            committer,
        })
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
                let serial = c.serial.to_string();
                index_of.insert(serial.clone(), *i);
                columns.push(serial, c, &items[*i].dns, items[*i].consume.is_some());
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
                .bind(columns.profile)
                .bind(columns.dns_serial)
                .bind(columns.dns_name)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| StoreError::db(ctx, e))?;
            // The tokens this chunk's written rows take a use of.
            let mut charged = HashSet::new();
            for (serial, _, _) in &written {
                if let Some(&i) = index_of.get(serial) {
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
/// fields, a length word per column, three timestamps and a flag. Its DNS
/// names (`cert_dns`) are not counted: they repeat SANs of the DER, a few
/// dozen bytes, within the 2 KiB the budget leaves below a TLS record.
fn encoded_len(c: &NewCertificate) -> usize {
    let hex = |s: &Serial| 2 * s.as_bytes().len();
    c.der.len()
        + hex(&c.serial)
        + encode_optional_spiffe_id(c.spiffe_id.as_ref()).len()
        + c.token_id.as_ref().map_or(0, String::len)
        + c.fingerprint.len()
        + c.renewed_from.as_ref().map_or(0, hex)
        + c.origin.as_str().len()
        + c.profile.as_ref().map_or(0, String::len)
        + 14 * 4
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
    profile: Vec<Option<String>>,
    /// With `dns_name`: one entry per DNS name of each certificate.
    dns_serial: Vec<String>,
    /// Reversed DNS names (`cert_dns.name_rev`).
    dns_name: Vec<String>,
}

impl Columns {
    /// Appends one (normalised) certificate, its serial as stored, and
    /// whether it consumes a use of its token.
    fn push(&mut self, serial: String, c: &NewCertificate, dns: &[String], consumes: bool) {
        for name in dns {
            self.dns_serial.push(serial.clone());
            self.dns_name.push(name.clone());
        }
        self.serial.push(serial);
        let spiffe_id = encode_optional_spiffe_id(c.spiffe_id.as_ref());
        self.spiffe_id.push(spiffe_id.to_owned());
        self.token_id.push(c.token_id.clone());
        self.not_before.push(micros(c.not_before));
        self.not_after.push(micros(c.not_after));
        self.der.push(c.der.clone());
        self.fingerprint.push(c.fingerprint.clone());
        self.issued_at.push(micros(c.issued_at));
        self.renewed_from
            .push(c.renewed_from.as_ref().map(ToString::to_string));
        self.consumes.push(consumes);
        self.origin.push(c.origin.as_str());
        self.profile.push(c.profile.clone());
    }
}

#[async_trait]
impl Driver for PgDriver {
    type Row = PgRow;

    const BACKEND: Backend = Backend::Postgres;

    // Every replica's CRL follows, at commit (see `watch`).
    const REVOCATION_NOTICE: Option<&'static str> = Some(watch::PG_NOTIFY);

    type Readers<'a> = &'a PgPool;

    fn readers(&self) -> &PgPool {
        &self.pool
    }

    async fn write<T: Send + 'static>(
        &self,
        ctx: &'static str,
        work: Work<T, PgRow>,
    ) -> Result<T, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        let out = work(&mut tx).await?;
        tx.commit().await.map_err(|e| StoreError::db(ctx, e))?;
        Ok(out)
    }

    async fn watch(&self) -> Result<watch::RevocationWatch, StoreError> {
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

    async fn close(&self) {
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
            serial: "40".repeat(16).parse().unwrap(),
            spiffe_id: Some("spiffe://example.org/w".parse().unwrap()),
            token_id: Some("t".repeat(32)),
            not_before: now,
            not_after: now,
            der: vec![0; der_len],
            fingerprint: "00".repeat(32),
            issued_at: now,
            renewed_from: None,
            origin: crate::Origin::Token,
            profile: None,
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
