//! The [`Store`] implementation both backends share: validation, row
//! mapping, the order of statements in each operation and the mapping of
//! their errors. A backend ([`Driver`]) supplies only what differs: its
//! connections (where reads and writes run, how a write transaction starts),
//! its group-commit batch, its revocation watch and how it closes.
//!
//! Must never: run a write outside [`Driver::write`] (SQLite's single
//! writer and PostgreSQL's row locks depend on it), or decide anything from
//! the backend kind.

use async_trait::async_trait;
use time::OffsetDateTime;
use ward_pki::Serial;

use crate::batch::{Committer, Item};
use crate::dialect::{BoxFuture, Columns, Param, Statements, Work, WriteTx};
use crate::error::{Violation, violation};
use crate::model::{
    REASON_PRIVILEGE_WITHDRAWN, decode_hash, decode_list, decode_optional_spiffe_id, decode_origin,
    decode_profile, decode_serial, decode_spiffe_id, encode_list, normalize_certificate, to_micros,
    validate_reason, validate_token,
};
use crate::{
    Backend, Certificate, CertificateSearch, LoginUse, NewCertificate, NewToken, RevocationWatch,
    RevokeOutcome, RevokeTokenOutcome, RevokedCertificate, Store, StoreError, StoreOverview, Token,
    sql,
};

/// What a backend supplies to the shared [`Store`] implementation.
#[async_trait]
pub(crate) trait Driver: Send + Sync + 'static {
    /// The driver's result row.
    type Row: Columns + Send + 'static;

    /// Which backend this is.
    const BACKEND: Backend;

    /// A statement run inside every transaction that revoked a certificate,
    /// announcing it to other processes (PostgreSQL `NOTIFY`); `None` where
    /// they notice by themselves.
    const REVOCATION_NOTICE: Option<&'static str>;

    /// Where reads run: the read pool.
    type Readers<'a>: Statements<Row = Self::Row>
    where
        Self: 'a;

    /// The read pool.
    fn readers(&self) -> Self::Readers<'_>;

    /// Runs `work` in one write transaction and commits it if `work`
    /// succeeds (`ctx` names the operation in errors); on error nothing
    /// `work` did is kept.
    async fn write<T: Send + 'static>(
        &self,
        ctx: &'static str,
        work: Work<T, Self::Row>,
    ) -> Result<T, StoreError>;

    /// Starts watching for revocations (see [`Store::watch_revocations`]).
    async fn watch(&self) -> Result<RevocationWatch, StoreError>;

    /// Closes the connections, once every queued record is committed.
    async fn close(&self);
}

/// A store: a backend's connections and its group commit.
pub(crate) struct SqlStore<D> {
    /// The backend.
    pub(crate) driver: D,
    /// Group commit of certificate records.
    pub(crate) committer: Committer,
}

impl<D: Driver> SqlStore<D> {
    /// Every row `sql` returns, decoded with `decode`.
    pub(crate) async fn read_all<T>(
        &self,
        ctx: &'static str,
        sql: &'static str,
        params: &[Param<'_>],
        decode: fn(&D::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(sql, params)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        rows.iter().map(decode).collect()
    }

    /// Runs `work` in one write transaction of the backend (see
    /// [`Driver::write`]); taking the closure here lets its signature be
    /// inferred before it is boxed.
    pub(crate) async fn write<T, F>(&self, ctx: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut WriteTx<'_, D::Row>) -> BoxFuture<'t, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.driver.write(ctx, Box::new(work)).await
    }
}

#[async_trait]
impl<D: Driver> Store for SqlStore<D> {
    async fn create_token(&self, t: &NewToken) -> Result<(), StoreError> {
        validate_token(t)?;
        let t = t.clone();
        self.write("creating a token", move |tx| {
            Box::pin(async move {
                let dns_names = encode_list(&t.dns_names);
                let allowed_cidrs = encode_list(&t.allowed_cidrs);
                let params = [
                    Param::Text(&t.id),
                    Param::Bytes(&t.hash),
                    Param::Text(t.spiffe_id.as_str()),
                    Param::Text(&dns_names),
                    Param::Text(t.profile.as_str()),
                    Param::Int(t.cert_ttl_secs),
                    Param::Time(t.expires_at),
                    Param::Int(t.max_uses),
                    Param::Text(&allowed_cidrs),
                    Param::Time(t.created_at),
                    Param::OptText(t.common_name.as_deref()),
                ];
                match tx.execute(sql::INSERT_TOKEN, &params).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(match violation(&e) {
                        Some(Violation::Unique) => StoreError::DuplicateToken,
                        _ => StoreError::db("creating a token", e),
                    }),
                }
            })
        })
        .await
    }

    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<Token>, StoreError> {
        let params = [Param::Bytes(hash)];
        let ctx = "looking up a token";
        let rows = self.read_all(ctx, sql::TOKEN_BY_HASH, &params, token_from_row);
        rows.await.map(first)
    }

    async fn token(&self, id: &str) -> Result<Option<Token>, StoreError> {
        let params = [Param::Text(id)];
        let rows = self.read_all("reading a token", sql::TOKEN_BY_ID, &params, token_from_row);
        rows.await.map(first)
    }

    async fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
        self.read_all("listing tokens", sql::LIST_TOKENS, &[], token_from_row)
            .await
    }

    async fn revoke_token(
        &self,
        id: &str,
        with_certificates: bool,
        at: OffsetDateTime,
    ) -> Result<RevokeTokenOutcome, StoreError> {
        let ctx = "revoking a token";
        let id = id.to_owned();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let mark = [
                    Param::Text(&id),
                    Param::Time(at),
                    Param::Flag(with_certificates),
                ];
                if tx.execute(sql::REVOKE_TOKEN, &mark).await.map_err(db)? == 0 {
                    return Ok(RevokeTokenOutcome::NotFound);
                }
                let mut certificates_revoked = 0;
                if with_certificates {
                    // The token row is locked by the UPDATE above (the
                    // write lock on SQLite), so no certificate can be
                    // issued from it until this transaction ends.
                    let kill = [
                        Param::Text(&id),
                        Param::Time(at),
                        Param::Reason(Some(REASON_PRIVILEGE_WITHDRAWN)),
                    ];
                    certificates_revoked = tx
                        .execute(sql::REVOKE_TOKEN_CERTIFICATES, &kill)
                        .await
                        .map_err(db)?;
                    if certificates_revoked > 0 {
                        announce_revocation::<D>(tx, ctx).await?;
                    }
                }
                Ok(RevokeTokenOutcome::Revoked {
                    certificates_revoked,
                })
            })
        })
        .await
    }

    async fn issue_with_token(
        &self,
        token_id: &str,
        now: OffsetDateTime,
        certificate: &NewCertificate,
    ) -> Result<(), StoreError> {
        let c = bind_to_token(normalize_certificate(certificate)?, token_id)?;
        self.committer
            .submit(Item::with_token(token_id, now, c))
            .await
    }

    async fn record_certificate(&self, certificate: &NewCertificate) -> Result<(), StoreError> {
        let c = normalize_certificate(certificate)?;
        self.committer.submit(Item::record(c)).await
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<Certificate>, StoreError> {
        let serial = serial.to_string();
        let params = [Param::Text(&serial)];
        let ctx = "reading a certificate";
        let rows = self.read_all(
            ctx,
            sql::CERTIFICATE_BY_SERIAL,
            &params,
            certificate_from_row,
        );
        rows.await.map(first)
    }

    async fn list_certificates(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Certificate>, StoreError> {
        let offset = i64::try_from(offset).map_err(|_| StoreError::Invalid("offset too large"))?;
        let params = [Param::Int(i64::from(limit)), Param::Int(offset)];
        let ctx = "listing certificates";
        self.read_all(ctx, sql::LIST_CERTIFICATES, &params, certificate_from_row)
            .await
    }

    async fn count_certificates(&self) -> Result<u64, StoreError> {
        let ctx = "counting certificates";
        let n = self
            .read_all(ctx, sql::COUNT_CERTIFICATES, &[], |row| {
                row.int(0)
                    .map_err(|e| StoreError::db("counting certificates", e))
            })
            .await?
            .first()
            .copied()
            .unwrap_or(0);
        u64::try_from(n).map_err(|e| StoreError::other(ctx, e))
    }

    async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: Option<i16>,
        at: OffsetDateTime,
    ) -> Result<RevokeOutcome, StoreError> {
        validate_reason(reason)?;
        let serial = serial.to_string();
        let ctx = "revoking a certificate";
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let revoke = [Param::Text(&serial), Param::Time(at), Param::Reason(reason)];
                if tx
                    .execute(sql::REVOKE_CERTIFICATE, &revoke)
                    .await
                    .map_err(db)?
                    == 1
                {
                    // Announced when, and only if, it commits.
                    announce_revocation::<D>(tx, ctx).await?;
                    return Ok(RevokeOutcome::Revoked);
                }
                // Nothing changed: revocation is final and rows are
                // never deleted, so existence decides the answer.
                let row = tx
                    .fetch_one(sql::CERTIFICATE_EXISTS, &[Param::Text(&serial)])
                    .await
                    .map_err(db)?;
                Ok(if row.int(0).map_err(db)? == 0 {
                    RevokeOutcome::NotFound
                } else {
                    RevokeOutcome::AlreadyRevoked
                })
            })
        })
        .await
    }

    async fn revoked_certificates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedCertificate>, StoreError> {
        let ctx = "listing revoked certificates";
        let params = [Param::Time(now)];
        self.read_all(ctx, sql::REVOKED_CERTIFICATES, &params, |row| {
            let d = |e| StoreError::db("listing revoked certificates", e);
            Ok(RevokedCertificate {
                serial: decode_serial("certificates.serial", &row.text(0).map_err(d)?)?,
                revoked_at: row.time(1)?,
                reason: row.reason(2).map_err(d)?,
            })
        })
        .await
    }

    async fn watch_revocations(&self) -> Result<RevocationWatch, StoreError> {
        self.driver.watch().await
    }

    async fn next_crl_number(&self) -> Result<u64, StoreError> {
        let ctx = "taking a CRL number";
        let floor = to_micros(OffsetDateTime::now_utc());
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let row = tx
                    .fetch_one(sql::NEXT_CRL_NUMBER, &[Param::Int(floor)])
                    .await
                    .map_err(db)?;
                let n = row.int(0).map_err(db)?;
                u64::try_from(n).map_err(|e| StoreError::other(ctx, e))
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.driver
            .readers()
            .fetch_all(sql::PING, &[])
            .await
            .map(drop)
            .map_err(|e| StoreError::db("pinging the database", e))
    }

    fn acme(&self) -> &dyn crate::AcmeStore {
        self
    }

    async fn search_certificates(
        &self,
        search: &CertificateSearch,
        limit: u32,
    ) -> Result<Vec<Certificate>, StoreError> {
        self.console_search(search, limit).await
    }

    async fn overview(&self, now: OffsetDateTime, list: u32) -> Result<StoreOverview, StoreError> {
        self.console_overview(now, list).await
    }

    async fn count_issued(&self, bounds: &[OffsetDateTime]) -> Result<Vec<u64>, StoreError> {
        self.console_count_issued(bounds).await
    }

    async fn create_console_login(
        &self,
        hash: &[u8; 32],
        created_at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.console_create_login(hash, created_at, expires_at)
            .await
    }

    async fn use_console_login(
        &self,
        hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<LoginUse, StoreError> {
        self.console_use_login(hash, now).await
    }

    async fn backfill_dns(&self, rows: u32) -> Result<bool, StoreError> {
        self.console_backfill_dns(rows).await
    }

    async fn dns_index_complete(&self) -> Result<bool, StoreError> {
        self.console_dns_index_complete().await
    }

    async fn acme_accounts(
        &self,
        limit: u32,
    ) -> Result<Vec<(crate::AcmeAccount, u64)>, StoreError> {
        self.console_acme_accounts(limit).await
    }

    async fn acme_orders(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::AcmeOrder>, StoreError> {
        self.console_acme_orders(account, limit).await
    }

    async fn deactivate_acme_account(
        &self,
        id: &str,
    ) -> Result<crate::AccountDeactivation, StoreError> {
        self.console_deactivate_account(id).await
    }

    async fn add_intermediate(&self, next: &crate::CaIntermediate) -> Result<(), StoreError> {
        self.rotation_add(next).await
    }

    async fn intermediates(&self) -> Result<Vec<crate::CaIntermediate>, StoreError> {
        self.rotation_all().await
    }

    async fn cancel_pending_intermediates(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.rotation_cancel(now).await
    }

    async fn add_root(
        &self,
        root: &crate::CaRoot,
        first: &crate::CaIntermediate,
    ) -> Result<(), StoreError> {
        self.rotation_add_root(root, first).await
    }

    async fn roots(&self) -> Result<Vec<crate::CaRoot>, StoreError> {
        self.rotation_roots().await
    }

    async fn create_entry(&self, entry: &crate::RegistrationEntry) -> Result<(), StoreError> {
        self.entry_create(entry).await
    }

    async fn entries(
        &self,
        node: Option<&str>,
    ) -> Result<Vec<crate::RegistrationEntry>, StoreError> {
        self.entry_list(node).await
    }

    async fn delete_entry(&self, id: &str) -> Result<bool, StoreError> {
        self.entry_delete(id).await
    }

    fn backend(&self) -> Backend {
        D::BACKEND
    }

    async fn close(&self) {
        self.committer.flush().await;
        self.driver.close().await;
    }
}

/// The one row a lookup by key returns, if any.
fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// Runs the backend's revocation announcement, if it has one.
async fn announce_revocation<D: Driver>(
    tx: &mut WriteTx<'_, D::Row>,
    ctx: &'static str,
) -> Result<(), StoreError> {
    if let Some(notice) = D::REVOCATION_NOTICE {
        tx.execute(notice, &[])
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
    }
    Ok(())
}

/// Ties a certificate to the token it is issued from.
pub(crate) fn bind_to_token(
    mut c: NewCertificate,
    token_id: &str,
) -> Result<NewCertificate, StoreError> {
    match c.token_id.as_deref() {
        None => c.token_id = Some(token_id.to_owned()),
        Some(id) if id == token_id => {}
        Some(_) => {
            return Err(StoreError::Invalid(
                "certificate.token_id differs from token_id",
            ));
        }
    }
    Ok(c)
}

/// Decodes a row selected with the `tokens` column list.
pub(crate) fn token_from_row(row: &impl Columns) -> Result<Token, StoreError> {
    let d = |e| StoreError::other("decoding a token row", e);
    Ok(Token {
        created: NewToken {
            id: row.text(0).map_err(d)?,
            hash: decode_hash(&row.bytes(1).map_err(d)?)?,
            spiffe_id: decode_spiffe_id("tokens.spiffe_id", &row.text(2).map_err(d)?)?,
            dns_names: decode_list("tokens.dns_names", &row.text(3).map_err(d)?)?,
            profile: decode_profile(&row.text(4).map_err(d)?)?,
            cert_ttl_secs: row.int(5).map_err(d)?,
            expires_at: row.time(6)?,
            max_uses: row.int(7).map_err(d)?,
            allowed_cidrs: decode_list("tokens.allowed_cidrs", &row.text(9).map_err(d)?)?,
            created_at: row.time(10)?,
            common_name: row.opt_text(13).map_err(d)?,
        },
        uses: row.int(8).map_err(d)?,
        revoked_at: row.opt_time(11)?,
        revoked_with_certs: row.flag(12).map_err(d)?,
    })
}

/// Decodes a row selected with the `certificates` column list.
pub(crate) fn certificate_from_row(row: &impl Columns) -> Result<Certificate, StoreError> {
    let d = |e| StoreError::other("decoding a certificate row", e);
    let renewed_from = row.opt_text(8).map_err(d)?;
    Ok(Certificate {
        record: NewCertificate {
            serial: decode_serial("certificates.serial", &row.text(0).map_err(d)?)?,
            spiffe_id: decode_optional_spiffe_id(&row.text(1).map_err(d)?)?,
            token_id: row.opt_text(2).map_err(d)?,
            not_before: row.time(3)?,
            not_after: row.time(4)?,
            der: row.bytes(5).map_err(d)?,
            fingerprint: row.text(6).map_err(d)?,
            issued_at: row.time(7)?,
            renewed_from: renewed_from
                .map(|s| decode_serial("certificates.renewed_from", &s))
                .transpose()?,
            origin: decode_origin(&row.text(11).map_err(d)?)?,
            profile: row.opt_text(12).map_err(d)?,
        },
        revoked_at: row.opt_time(9)?,
        revocation_reason: row.reason(10).map_err(d)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;

    #[test]
    fn certificates_are_bound_to_their_token() {
        let c = NewCertificate {
            serial: "01".parse().unwrap(),
            spiffe_id: Some("spiffe://t/a".parse().unwrap()),
            token_id: None,
            not_before: OffsetDateTime::UNIX_EPOCH,
            not_after: OffsetDateTime::UNIX_EPOCH,
            der: vec![],
            fingerprint: "00".repeat(32),
            issued_at: OffsetDateTime::UNIX_EPOCH,
            renewed_from: None,
            origin: Origin::Token,
            profile: None,
        };
        let bound = bind_to_token(c.clone(), "tok_a").unwrap();
        assert_eq!(bound.token_id.as_deref(), Some("tok_a"));
        assert!(bind_to_token(bound.clone(), "tok_a").is_ok());
        assert!(bind_to_token(bound, "tok_b").is_err());
    }
}
