//! Storage of the ACME server (RFC 8555): nonces, external account binding
//! keys, accounts and orders, on both backends through the shared driver.
//!
//! An order row carries its authorizations and challenges as a JSON
//! document the CA owns (this crate never reads it); every change to an
//! order is a compare-and-swap on its `version`, so replicas sharing a
//! PostgreSQL database never both move the same order. Nonces are issued
//! without a write (the CA authenticates them with the key of
//! [`AcmeStore::nonce_key`], shared by replicas) and recorded when used: a
//! nonce used on one replica is refused by all.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;
use crate::dialect::{Columns, Param, Statements, WriteTx};
use crate::error::{Violation, violation};
use crate::shared::{Driver, SqlStore};

/// An ACME account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeAccount {
    /// Account id (the last segment of its URL).
    pub id: String,
    /// The provisioner (directory) it belongs to.
    pub provisioner: String,
    /// RFC 7638 thumbprint of its key, base64url.
    pub thumbprint: String,
    /// Its public key as a JWK (JSON text).
    pub jwk: String,
    /// `valid`, `deactivated` or `revoked`.
    pub status: String,
    /// Contact URLs, JSON array text.
    pub contact: String,
    /// The external account binding key it was created with.
    pub eab_key_id: Option<String>,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// An ACME order; `doc` holds its authorizations and challenges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeOrder {
    /// Order id.
    pub id: String,
    /// The account that owns it.
    pub account_id: String,
    /// The provisioner it was placed with.
    pub provisioner: String,
    /// `pending`, `ready`, `processing`, `valid` or `invalid`.
    pub status: String,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// The CA's JSON document (identifiers, authorizations, challenges).
    pub doc: String,
    /// Serial (lowercase hex) of the issued certificate.
    pub cert_serial: Option<String>,
    /// Bumped by every update (compare-and-swap).
    pub version: i64,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// An external account binding key (RFC 8555 §7.3.4); never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct AcmeEabKey {
    /// The key id the client sends as `kid`.
    pub id: String,
    /// The provisioner it is valid for.
    pub provisioner: String,
    /// The HMAC key.
    pub hmac_key: Vec<u8>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// The account it was bound to (a key binds one account only).
    pub account_id: Option<String>,
    /// When an administrator revoked it.
    pub revoked_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for AcmeEabKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeEabKey")
            .field("id", &self.id)
            .field("provisioner", &self.provisioner)
            .field("account_id", &self.account_id)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Everything the ACME server stores. Every method is atomic.
#[async_trait]
pub trait AcmeStore: Send + Sync {
    /// The key nonces are authenticated with, the same for every replica
    /// of the database: the stored one, or `candidate` stored now if there
    /// is none yet.
    async fn nonce_key(&self, candidate: &[u8], now: OffsetDateTime)
    -> Result<Vec<u8>, StoreError>;

    /// Records a nonce as used: `true` the first time, `false` when it was
    /// used before (a replay). The record is kept until `expires_at`, which
    /// must be no earlier than the last moment any replica would still
    /// accept the nonce; used nonces that expired before `now` are dropped
    /// now and then.
    async fn use_nonce(
        &self,
        nonce: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Stores an EAB key; [`StoreError::Conflict`] if its id exists.
    async fn create_eab_key(&self, key: &AcmeEabKey) -> Result<(), StoreError>;

    /// Finds an EAB key.
    async fn eab_key(&self, id: &str) -> Result<Option<AcmeEabKey>, StoreError>;

    /// Creates an account, binding `eab_key_id` to it in the same
    /// transaction; [`StoreError::Conflict`] if the key is already bound or
    /// an account with this key exists.
    async fn create_account(&self, account: &AcmeAccount) -> Result<(), StoreError>;

    /// Finds an account by id.
    async fn account(&self, id: &str) -> Result<Option<AcmeAccount>, StoreError>;

    /// Finds an account of a provisioner by its key thumbprint.
    async fn account_by_thumbprint(
        &self,
        provisioner: &str,
        thumbprint: &str,
    ) -> Result<Option<AcmeAccount>, StoreError>;

    /// Rewrites an account's key, status and contacts;
    /// [`StoreError::Conflict`] if another account holds the new key.
    async fn update_account(&self, account: &AcmeAccount) -> Result<(), StoreError>;

    /// Creates an order (its `version` is stored as given).
    async fn create_order(&self, order: &AcmeOrder) -> Result<(), StoreError>;

    /// Finds an order by id.
    async fn order(&self, id: &str) -> Result<Option<AcmeOrder>, StoreError>;

    /// The ids of an account's orders, newest first (at most 1000).
    async fn orders_of_account(&self, account_id: &str) -> Result<Vec<String>, StoreError>;

    /// Finds the order that issued the certificate with this serial.
    async fn order_by_certificate(&self, serial: &str) -> Result<Option<AcmeOrder>, StoreError>;

    /// Replaces the order if its stored version is `order.version - 1`;
    /// `false` if another writer got there first.
    async fn update_order(&self, order: &AcmeOrder) -> Result<bool, StoreError>;

    /// [`AcmeStore::update_order`] and, in the same transaction when the
    /// update wins, [`AcmeStore::put_valid_authz`] of the authorization
    /// `doc` for `identifier` of the order's account: an order that a
    /// validation made ready has its authorization reusable at once.
    async fn update_order_with_valid_authz(
        &self,
        order: &AcmeOrder,
        identifier: &str,
        doc: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// The EAB keys of a provisioner (all when `None`), newest first, at
    /// most `limit`.
    async fn eab_keys(
        &self,
        provisioner: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AcmeEabKey>, StoreError>;

    /// Revokes an EAB key and revokes the account it bound, in one
    /// transaction; `false` if no such key exists or it is already revoked.
    async fn revoke_eab_key(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// Records a valid authorization an account may reuse until
    /// `expires_at` (replacing an older one for the same identifier).
    async fn put_valid_authz(
        &self,
        account_id: &str,
        identifier: &str,
        doc: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The reusable authorization (its JSON) of an account for an
    /// identifier, if one has not expired at `now`.
    async fn valid_authz(
        &self,
        account_id: &str,
        identifier: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError>;

    /// Forgets an account's reusable authorization (it was deactivated).
    async fn drop_valid_authz(&self, account_id: &str, identifier: &str) -> Result<(), StoreError>;

    /// The order recorded as replacing the certificate with this serial.
    async fn replacement(&self, cert_serial: &str) -> Result<Option<String>, StoreError>;

    /// Creates an order that replaces the certificate `cert_serial` (ARI):
    /// records it as the replacement if `previous` (the replacement seen
    /// before, which the caller found dead) is still the recorded one.
    /// [`StoreError::Conflict`] if another order became the replacement
    /// meanwhile; nothing is stored then.
    async fn create_replacing_order(
        &self,
        order: &AcmeOrder,
        cert_serial: &str,
        previous: Option<&str>,
    ) -> Result<(), StoreError>;

    /// One bounded sweep: deletes at most `limit` rows of each kind that
    /// can no longer matter at `now`: expired nonces and reusable
    /// authorizations, orders that expired without a certificate, orders
    /// whose certificate has expired, and replacement records of deleted
    /// orders. Returns how many rows went.
    async fn prune(&self, now: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}

const ACCOUNT_BY_ID: &str = "SELECT id, provisioner, thumbprint, jwk, status, contact, \
     eab_key_id, created_at FROM acme_accounts WHERE id = $1";
const ACCOUNT_BY_THUMBPRINT: &str = "SELECT id, provisioner, thumbprint, jwk, status, contact, \
     eab_key_id, created_at FROM acme_accounts WHERE provisioner = $1 AND thumbprint = $2";
const ORDER_BY_ID: &str = "SELECT id, account_id, provisioner, status, expires_at, doc, \
     cert_serial, version, created_at FROM acme_orders WHERE id = $1";
const ORDER_BY_CERT: &str = "SELECT id, account_id, provisioner, status, expires_at, doc, \
     cert_serial, version, created_at FROM acme_orders WHERE cert_serial = $1";

pub(crate) fn account_from_row(row: &impl Columns) -> Result<AcmeAccount, StoreError> {
    let db = |e| StoreError::other("decoding an ACME account", e);
    Ok(AcmeAccount {
        id: row.text(0).map_err(db)?,
        provisioner: row.text(1).map_err(db)?,
        thumbprint: row.text(2).map_err(db)?,
        jwk: row.text(3).map_err(db)?,
        status: row.text(4).map_err(db)?,
        contact: row.text(5).map_err(db)?,
        eab_key_id: row.opt_text(6).map_err(db)?,
        created_at: row.time(7)?,
    })
}

pub(crate) fn order_from_row(row: &impl Columns) -> Result<AcmeOrder, StoreError> {
    let db = |e| StoreError::other("decoding an ACME order", e);
    Ok(AcmeOrder {
        id: row.text(0).map_err(db)?,
        account_id: row.text(1).map_err(db)?,
        provisioner: row.text(2).map_err(db)?,
        status: row.text(3).map_err(db)?,
        expires_at: row.time(4)?,
        doc: row.text(5).map_err(db)?,
        cert_serial: row.opt_text(6).map_err(db)?,
        version: row.int(7).map_err(db)?,
        created_at: row.time(8)?,
    })
}

fn eab_from_row(row: &impl Columns) -> Result<AcmeEabKey, StoreError> {
    let db = |e| StoreError::other("decoding an EAB key", e);
    Ok(AcmeEabKey {
        id: row.text(0).map_err(db)?,
        provisioner: row.text(1).map_err(db)?,
        hmac_key: row.bytes(2).map_err(db)?,
        created_at: row.time(3)?,
        account_id: row.opt_text(4).map_err(db)?,
        revoked_at: row.opt_time(5)?,
    })
}

/// Inserts an order row inside a write transaction.
async fn insert_order<R: Columns + Send>(
    tx: &mut WriteTx<'_, R>,
    o: &AcmeOrder,
) -> Result<u64, sqlx::Error> {
    tx.execute(
        "INSERT INTO acme_orders (id, account_id, provisioner, status, expires_at, \
         doc, cert_serial, version, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            Param::Text(&o.id),
            Param::Text(&o.account_id),
            Param::Text(&o.provisioner),
            Param::Text(&o.status),
            Param::Time(o.expires_at),
            Param::Text(&o.doc),
            Param::OptText(o.cert_serial.as_deref()),
            Param::Int(o.version),
            Param::Time(o.created_at),
        ],
    )
    .await
}

/// The compare-and-swap of [`AcmeStore::update_order`] inside a write
/// transaction: whether it won.
async fn cas_order<R: Columns + Send>(
    tx: &mut WriteTx<'_, R>,
    o: &AcmeOrder,
) -> Result<bool, sqlx::Error> {
    let n = tx
        .execute(
            "UPDATE acme_orders SET status = $3, doc = $4, cert_serial = $5, \
             version = $2 WHERE id = $1 AND version = $2 - 1",
            &[
                Param::Text(&o.id),
                Param::Int(o.version),
                Param::Text(&o.status),
                Param::Text(&o.doc),
                Param::OptText(o.cert_serial.as_deref()),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Records a reusable authorization inside a write transaction.
async fn upsert_valid_authz<R: Columns + Send>(
    tx: &mut WriteTx<'_, R>,
    account_id: &str,
    identifier: &str,
    doc: &str,
    expires_at: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    tx.execute(
        "INSERT INTO acme_valid_authz (account_id, identifier, doc, expires_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, identifier) \
         DO UPDATE SET doc = excluded.doc, expires_at = excluded.expires_at",
        &[
            Param::Text(account_id),
            Param::Text(identifier),
            Param::Text(doc),
            Param::Time(expires_at),
        ],
    )
    .await
}

/// Maps a unique violation to [`StoreError::Conflict`].
fn conflict(ctx: &'static str, what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match violation(&e) {
        Some(Violation::Unique) => StoreError::Conflict(what),
        _ => StoreError::db(ctx, e),
    }
}

#[async_trait]
impl<D: Driver> AcmeStore for SqlStore<D> {
    async fn nonce_key(
        &self,
        candidate: &[u8],
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, StoreError> {
        let ctx = "reading the ACME nonce key";
        let candidate = candidate.to_vec();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                tx.execute(
                    "INSERT INTO acme_nonce_key (id, key, created_at) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO NOTHING",
                    &[Param::Bytes(&candidate), Param::Time(now)],
                )
                .await
                .map_err(db)?;
                let row = tx
                    .fetch_one("SELECT key FROM acme_nonce_key WHERE id = 1", &[])
                    .await
                    .map_err(db)?;
                row.bytes(0).map_err(db)
            })
        })
        .await
    }

    async fn use_nonce(
        &self,
        nonce: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let ctx = "using an ACME nonce";
        let nonce = nonce.to_owned();
        // Pruning on every 64th nonce (by its last byte's low bits) keeps
        // the table small between sweeps.
        let prune = nonce.as_bytes().last().is_some_and(|b| b % 64 == 0);
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                if prune {
                    tx.execute(
                        "DELETE FROM acme_used_nonces WHERE expires_at <= $1",
                        &[Param::Time(now)],
                    )
                    .await
                    .map_err(db)?;
                }
                let n = tx
                    .execute(
                        "INSERT INTO acme_used_nonces (nonce, expires_at) VALUES ($1, $2) \
                         ON CONFLICT (nonce) DO NOTHING",
                        &[Param::Text(&nonce), Param::Time(expires_at)],
                    )
                    .await
                    .map_err(db)?;
                Ok(n == 1)
            })
        })
        .await
    }

    async fn create_eab_key(&self, key: &AcmeEabKey) -> Result<(), StoreError> {
        let ctx = "creating an EAB key";
        let key = key.clone();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO acme_eab_keys (id, provisioner, hmac_key, created_at, \
                     account_id) VALUES ($1, $2, $3, $4, NULL)",
                    &[
                        Param::Text(&key.id),
                        Param::Text(&key.provisioner),
                        Param::Bytes(&key.hmac_key),
                        Param::Time(key.created_at),
                    ],
                )
                .await
                .map_err(conflict(ctx, "an EAB key with this id exists"))?;
                Ok(())
            })
        })
        .await
    }

    async fn eab_key(&self, id: &str) -> Result<Option<AcmeEabKey>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(
                "SELECT id, provisioner, hmac_key, created_at, account_id, revoked_at \
                 FROM acme_eab_keys WHERE id = $1",
                &[Param::Text(id)],
            )
            .await
            .map_err(|e| StoreError::db("reading an EAB key", e))?;
        rows.first().map(eab_from_row).transpose()
    }

    async fn create_account(&self, a: &AcmeAccount) -> Result<(), StoreError> {
        let ctx = "creating an ACME account";
        let a = a.clone();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                if let Some(kid) = &a.eab_key_id {
                    let bound = tx
                        .execute(
                            "UPDATE acme_eab_keys SET account_id = $2 WHERE id = $1 AND \
                             provisioner = $3 AND account_id IS NULL AND revoked_at IS NULL",
                            &[
                                Param::Text(kid),
                                Param::Text(&a.id),
                                Param::Text(&a.provisioner),
                            ],
                        )
                        .await
                        .map_err(db)?;
                    if bound != 1 {
                        return Err(StoreError::Conflict("the EAB key is unknown or used"));
                    }
                }
                tx.execute(
                    "INSERT INTO acme_accounts (id, provisioner, thumbprint, jwk, status, \
                     contact, eab_key_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        Param::Text(&a.id),
                        Param::Text(&a.provisioner),
                        Param::Text(&a.thumbprint),
                        Param::Text(&a.jwk),
                        Param::Text(&a.status),
                        Param::Text(&a.contact),
                        Param::OptText(a.eab_key_id.as_deref()),
                        Param::Time(a.created_at),
                    ],
                )
                .await
                .map_err(conflict(ctx, "an account with this key exists"))?;
                Ok(())
            })
        })
        .await
    }

    async fn account(&self, id: &str) -> Result<Option<AcmeAccount>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(ACCOUNT_BY_ID, &[Param::Text(id)])
            .await
            .map_err(|e| StoreError::db("reading an ACME account", e))?;
        rows.first().map(account_from_row).transpose()
    }

    async fn account_by_thumbprint(
        &self,
        provisioner: &str,
        thumbprint: &str,
    ) -> Result<Option<AcmeAccount>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(
                ACCOUNT_BY_THUMBPRINT,
                &[Param::Text(provisioner), Param::Text(thumbprint)],
            )
            .await
            .map_err(|e| StoreError::db("reading an ACME account", e))?;
        rows.first().map(account_from_row).transpose()
    }

    async fn update_account(&self, a: &AcmeAccount) -> Result<(), StoreError> {
        let ctx = "updating an ACME account";
        let a = a.clone();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE acme_accounts SET thumbprint = $2, jwk = $3, status = $4, \
                     contact = $5 WHERE id = $1",
                    &[
                        Param::Text(&a.id),
                        Param::Text(&a.thumbprint),
                        Param::Text(&a.jwk),
                        Param::Text(&a.status),
                        Param::Text(&a.contact),
                    ],
                )
                .await
                .map_err(conflict(ctx, "an account with this key exists"))?;
                Ok(())
            })
        })
        .await
    }

    async fn create_order(&self, o: &AcmeOrder) -> Result<(), StoreError> {
        let ctx = "creating an ACME order";
        let o = o.clone();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                insert_order(tx, &o)
                    .await
                    .map_err(conflict(ctx, "an order with this id exists"))?;
                Ok(())
            })
        })
        .await
    }

    async fn order(&self, id: &str) -> Result<Option<AcmeOrder>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(ORDER_BY_ID, &[Param::Text(id)])
            .await
            .map_err(|e| StoreError::db("reading an ACME order", e))?;
        rows.first().map(order_from_row).transpose()
    }

    async fn orders_of_account(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(
                "SELECT id FROM acme_orders WHERE account_id = $1 \
                 ORDER BY created_at DESC, id LIMIT 1000",
                &[Param::Text(account_id)],
            )
            .await
            .map_err(|e| StoreError::db("listing ACME orders", e))?;
        rows.iter()
            .map(|r| {
                r.text(0)
                    .map_err(|e| StoreError::other("decoding an ACME order id", e))
            })
            .collect()
    }

    async fn order_by_certificate(&self, serial: &str) -> Result<Option<AcmeOrder>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(ORDER_BY_CERT, &[Param::Text(serial)])
            .await
            .map_err(|e| StoreError::db("reading an ACME order", e))?;
        rows.first().map(order_from_row).transpose()
    }

    async fn update_order(&self, o: &AcmeOrder) -> Result<bool, StoreError> {
        let ctx = "updating an ACME order";
        let o = o.clone();
        self.write(ctx, move |tx| {
            Box::pin(async move { cas_order(tx, &o).await.map_err(|e| StoreError::db(ctx, e)) })
        })
        .await
    }

    async fn update_order_with_valid_authz(
        &self,
        order: &AcmeOrder,
        identifier: &str,
        doc: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let ctx = "recording a validated ACME order";
        let o = order.clone();
        let (identifier, doc) = (identifier.to_owned(), doc.to_owned());
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                if !cas_order(tx, &o).await.map_err(db)? {
                    return Ok(false);
                }
                upsert_valid_authz(tx, &o.account_id, &identifier, &doc, expires_at)
                    .await
                    .map_err(db)?;
                Ok(true)
            })
        })
        .await
    }

    async fn eab_keys(
        &self,
        provisioner: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AcmeEabKey>, StoreError> {
        let limit = Param::Int(i64::from(limit));
        let mut readers = self.driver.readers();
        let rows = match provisioner {
            Some(p) => {
                readers
                    .fetch_all(
                        "SELECT id, provisioner, hmac_key, created_at, account_id, revoked_at \
                         FROM acme_eab_keys WHERE provisioner = $1 \
                         ORDER BY created_at DESC, id LIMIT $2",
                        &[Param::Text(p), limit],
                    )
                    .await
            }
            None => {
                readers
                    .fetch_all(
                        "SELECT id, provisioner, hmac_key, created_at, account_id, revoked_at \
                         FROM acme_eab_keys ORDER BY created_at DESC, id LIMIT $1",
                        &[limit],
                    )
                    .await
            }
        }
        .map_err(|e| StoreError::db("listing EAB keys", e))?;
        rows.iter().map(eab_from_row).collect()
    }

    async fn revoke_eab_key(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let ctx = "revoking an EAB key";
        let id = id.to_owned();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let n = tx
                    .execute(
                        "UPDATE acme_eab_keys SET revoked_at = $2 \
                         WHERE id = $1 AND revoked_at IS NULL",
                        &[Param::Text(&id), Param::Time(now)],
                    )
                    .await
                    .map_err(db)?;
                if n != 1 {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE acme_accounts SET status = 'revoked' WHERE eab_key_id = $1",
                    &[Param::Text(&id)],
                )
                .await
                .map_err(db)?;
                Ok(true)
            })
        })
        .await
    }

    async fn put_valid_authz(
        &self,
        account_id: &str,
        identifier: &str,
        doc: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let ctx = "recording a valid ACME authorization";
        let (account_id, identifier, doc) =
            (account_id.to_owned(), identifier.to_owned(), doc.to_owned());
        self.write(ctx, move |tx| {
            Box::pin(async move {
                upsert_valid_authz(tx, &account_id, &identifier, &doc, expires_at)
                    .await
                    .map_err(|e| StoreError::db(ctx, e))?;
                Ok(())
            })
        })
        .await
    }

    async fn valid_authz(
        &self,
        account_id: &str,
        identifier: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(
                "SELECT doc FROM acme_valid_authz WHERE account_id = $1 AND identifier = $2 \
                 AND expires_at > $3",
                &[
                    Param::Text(account_id),
                    Param::Text(identifier),
                    Param::Time(now),
                ],
            )
            .await
            .map_err(|e| StoreError::db("reading a valid ACME authorization", e))?;
        rows.first()
            .map(|r| {
                r.text(0)
                    .map_err(|e| StoreError::other("decoding an ACME authorization", e))
            })
            .transpose()
    }

    async fn drop_valid_authz(&self, account_id: &str, identifier: &str) -> Result<(), StoreError> {
        let ctx = "forgetting a valid ACME authorization";
        let (account_id, identifier) = (account_id.to_owned(), identifier.to_owned());
        self.write(ctx, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "DELETE FROM acme_valid_authz WHERE account_id = $1 AND identifier = $2",
                    &[Param::Text(&account_id), Param::Text(&identifier)],
                )
                .await
                .map_err(|e| StoreError::db(ctx, e))?;
                Ok(())
            })
        })
        .await
    }

    async fn replacement(&self, cert_serial: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .driver
            .readers()
            .fetch_all(
                "SELECT order_id FROM acme_replacements WHERE cert_serial = $1",
                &[Param::Text(cert_serial)],
            )
            .await
            .map_err(|e| StoreError::db("reading an ACME replacement", e))?;
        rows.first()
            .map(|r| {
                r.text(0)
                    .map_err(|e| StoreError::other("decoding an ACME replacement", e))
            })
            .transpose()
    }

    async fn create_replacing_order(
        &self,
        o: &AcmeOrder,
        cert_serial: &str,
        previous: Option<&str>,
    ) -> Result<(), StoreError> {
        let ctx = "creating a replacing ACME order";
        let o = o.clone();
        let serial = cert_serial.to_owned();
        let previous = previous.map(str::to_owned);
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let taken = StoreError::Conflict("the certificate is already replaced");
                match &previous {
                    None => {
                        tx.execute(
                            "INSERT INTO acme_replacements (cert_serial, order_id) \
                             VALUES ($1, $2)",
                            &[Param::Text(&serial), Param::Text(&o.id)],
                        )
                        .await
                        .map_err(conflict(ctx, "the certificate is already replaced"))?;
                    }
                    Some(previous) => {
                        let n = tx
                            .execute(
                                "UPDATE acme_replacements SET order_id = $2 \
                                 WHERE cert_serial = $1 AND order_id = $3",
                                &[
                                    Param::Text(&serial),
                                    Param::Text(&o.id),
                                    Param::Text(previous),
                                ],
                            )
                            .await
                            .map_err(db)?;
                        if n != 1 {
                            return Err(taken);
                        }
                    }
                }
                insert_order(tx, &o)
                    .await
                    .map_err(conflict(ctx, "an order with this id exists"))?;
                Ok(())
            })
        })
        .await
    }

    async fn prune(&self, now: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        let ctx = "pruning ACME state";
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let limit = Param::Int(i64::from(limit));
                let mut gone = 0;
                for sql in [
                    "DELETE FROM acme_used_nonces WHERE nonce IN (SELECT nonce \
                     FROM acme_used_nonces WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
                    // Issued nonces of versions before 0016: no longer written.
                    "DELETE FROM acme_nonces WHERE nonce IN (SELECT nonce FROM acme_nonces \
                     WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
                    "DELETE FROM acme_valid_authz WHERE (account_id, identifier) IN \
                     (SELECT account_id, identifier FROM acme_valid_authz \
                     WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
                    "DELETE FROM acme_orders WHERE id IN (SELECT id FROM acme_orders \
                     WHERE cert_serial IS NULL AND expires_at <= $1 \
                     ORDER BY expires_at LIMIT $2)",
                    "DELETE FROM acme_orders WHERE id IN (SELECT o.id FROM acme_orders o \
                     JOIN certificates c ON c.serial = o.cert_serial \
                     WHERE c.not_after <= $1 ORDER BY c.not_after LIMIT $2)",
                ] {
                    gone += tx
                        .execute(sql, &[Param::Time(now), limit])
                        .await
                        .map_err(db)?;
                }
                gone += tx
                    .execute(
                        "DELETE FROM acme_replacements WHERE cert_serial IN \
                         (SELECT r.cert_serial FROM acme_replacements r \
                         LEFT JOIN acme_orders o ON o.id = r.order_id \
                         WHERE o.id IS NULL LIMIT $1)",
                        &[limit],
                    )
                    .await
                    .map_err(db)?;
                Ok(gone)
            })
        })
        .await
    }
}
