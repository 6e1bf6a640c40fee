//! What CA rotation (issue 20) asks of storage: the intermediates made by
//! `ward ca rotate intermediate`, the roots made by `ward ca rotate root`
//! (each with its first intermediate), when each starts signing, and
//! cancelling one before it does. Every replica reads the same rows and the same
//! `signs_from`, so replicas sharing a database switch together.
//!
//! Must never: let a cancellation touch an intermediate that already signs
//! (the `signs_from > now` condition is part of the `UPDATE`), or accept a
//! second pending intermediate while one waits.

use time::OffsetDateTime;

use crate::StoreError;
use crate::dialect::{Columns, Param};
use crate::shared::{Driver, SqlStore};

/// One intermediate made by a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaIntermediate {
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// The certificate.
    pub der: Vec<u8>,
    /// Its key: a file name inside the CA directory or a `pkcs11:` URI.
    pub key_ref: String,
    /// When it starts signing (the end of the overlap).
    pub signs_from: OffsetDateTime,
    /// Its notAfter.
    pub not_after: OffsetDateTime,
    /// When the rotation was made.
    pub created_at: OffsetDateTime,
    /// When it was cancelled (before `signs_from`), if it was.
    pub cancelled_at: Option<OffsetDateTime>,
}

const ALL: &str = "SELECT fingerprint, der, key_ref, signs_from, not_after, created_at, \
     cancelled_at FROM ca_intermediates ORDER BY signs_from, created_at";

const PENDING: &str = "SELECT COUNT(*) FROM ca_intermediates \
     WHERE cancelled_at IS NULL AND signs_from > $1";

const PENDING_ROOTS: &str = "SELECT COUNT(*) FROM ca_roots \
     WHERE cancelled_at IS NULL AND signs_from > $1";

const ALL_ROOTS: &str = "SELECT fingerprint, der, key_ref, previous, new_with_old, old_with_new, \
     intermediate, signs_from, not_after, created_at, cancelled_at FROM ca_roots \
     ORDER BY signs_from, created_at";

const INSERT_ROOT: &str = "INSERT INTO ca_roots (fingerprint, der, key_ref, previous, \
     new_with_old, old_with_new, intermediate, signs_from, not_after, created_at, cancelled_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)";

const CANCEL_ROOTS: &str = "UPDATE ca_roots SET cancelled_at = $1 \
     WHERE cancelled_at IS NULL AND signs_from > $1";

const INSERT: &str = "INSERT INTO ca_intermediates (fingerprint, der, key_ref, signs_from, \
     not_after, created_at, cancelled_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)";

const CANCEL: &str = "UPDATE ca_intermediates SET cancelled_at = $1 \
     WHERE cancelled_at IS NULL AND signs_from > $1";

/// Largest certificate accepted (the column's CHECK says the same).
const MAX_DER: usize = 65536;

/// One root made by a root rotation (`ward ca rotate root`), with the two
/// rollover certificates that tie it to the root it replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaRoot {
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// The self-signed root certificate.
    pub der: Vec<u8>,
    /// Its key: a file name inside the CA directory or a `pkcs11:` URI.
    pub key_ref: String,
    /// SHA-256 (hex) of the root it replaces.
    pub previous: String,
    /// This root's key certified by the previous root (NewWithOld).
    pub new_with_old: Vec<u8>,
    /// The previous root's key certified by this root (OldWithNew).
    pub old_with_new: Vec<u8>,
    /// SHA-256 (hex) of its first intermediate, a row of `ca_intermediates`.
    pub intermediate: String,
    /// When its intermediate starts signing (the end of the overlap).
    pub signs_from: OffsetDateTime,
    /// Its notAfter.
    pub not_after: OffsetDateTime,
    /// When the rotation was made.
    pub created_at: OffsetDateTime,
    /// When it was cancelled (before `signs_from`), if it was.
    pub cancelled_at: Option<OffsetDateTime>,
}

fn root_from_row<R: Columns>(row: &R) -> Result<CaRoot, StoreError> {
    let ctx = "reading a CA root";
    let db = |e| StoreError::db(ctx, e);
    Ok(CaRoot {
        fingerprint: row.text(0).map_err(db)?,
        der: row.bytes(1).map_err(db)?,
        key_ref: row.text(2).map_err(db)?,
        previous: row.text(3).map_err(db)?,
        new_with_old: row.bytes(4).map_err(db)?,
        old_with_new: row.bytes(5).map_err(db)?,
        intermediate: row.text(6).map_err(db)?,
        signs_from: row.time(7)?,
        not_after: row.time(8)?,
        created_at: row.time(9)?,
        cancelled_at: row.opt_time(10)?,
    })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_intermediate(next: &CaIntermediate) -> Result<(), StoreError> {
    if !is_sha256_hex(&next.fingerprint) {
        return Err(StoreError::Invalid("the fingerprint is not SHA-256 hex"));
    }
    if next.der.is_empty() || next.der.len() > MAX_DER {
        return Err(StoreError::Invalid("the certificate is empty or too large"));
    }
    if next.key_ref.is_empty() || next.key_ref.len() > 2048 {
        return Err(StoreError::Invalid(
            "the key reference is empty or too long",
        ));
    }
    Ok(())
}

fn check_root(root: &CaRoot, first: &CaIntermediate) -> Result<(), StoreError> {
    check_intermediate(first)?;
    if !is_sha256_hex(&root.fingerprint) || !is_sha256_hex(&root.previous) {
        return Err(StoreError::Invalid("a root fingerprint is not SHA-256 hex"));
    }
    for der in [&root.der, &root.new_with_old, &root.old_with_new] {
        if der.is_empty() || der.len() > MAX_DER {
            return Err(StoreError::Invalid(
                "a root certificate is empty or too large",
            ));
        }
    }
    if root.key_ref.is_empty() || root.key_ref.len() > 2048 {
        return Err(StoreError::Invalid(
            "the root key reference is empty or too long",
        ));
    }
    if root.intermediate != first.fingerprint || root.signs_from != first.signs_from {
        return Err(StoreError::Invalid(
            "the root and its first intermediate disagree",
        ));
    }
    Ok(())
}

/// Refuses a second pending rotation (of either kind) inside `tx`.
async fn refuse_pending<R: Columns + Send>(
    tx: &mut crate::dialect::WriteTx<'_, R>,
    now: OffsetDateTime,
    ctx: &'static str,
) -> Result<(), StoreError> {
    let db = |e| StoreError::db(ctx, e);
    for sql in [PENDING, PENDING_ROOTS] {
        let pending = tx
            .fetch_one(sql, &[Param::Time(now)])
            .await
            .map_err(db)?
            .int(0)
            .map_err(db)?;
        if pending > 0 {
            return Err(StoreError::Conflict(
                "a rotation is already pending: cancel it or wait for its switch",
            ));
        }
    }
    Ok(())
}

async fn insert_intermediate<R: Columns + Send>(
    tx: &mut crate::dialect::WriteTx<'_, R>,
    next: &CaIntermediate,
    ctx: &'static str,
) -> Result<(), StoreError> {
    let params = [
        Param::Text(&next.fingerprint),
        Param::Bytes(&next.der),
        Param::Text(&next.key_ref),
        Param::Time(next.signs_from),
        Param::Time(next.not_after),
        Param::Time(next.created_at),
    ];
    tx.execute(INSERT, &params)
        .await
        .map_err(|e| StoreError::db(ctx, e))?;
    Ok(())
}

fn from_row<R: Columns>(row: &R) -> Result<CaIntermediate, StoreError> {
    let ctx = "reading a CA intermediate";
    let db = |e| StoreError::db(ctx, e);
    Ok(CaIntermediate {
        fingerprint: row.text(0).map_err(db)?,
        der: row.bytes(1).map_err(db)?,
        key_ref: row.text(2).map_err(db)?,
        signs_from: row.time(3)?,
        not_after: row.time(4)?,
        created_at: row.time(5)?,
        cancelled_at: row.opt_time(6)?,
    })
}

impl<D: Driver> SqlStore<D> {
    /// See [`crate::Store::add_intermediate`].
    pub(crate) async fn rotation_add(&self, next: &CaIntermediate) -> Result<(), StoreError> {
        check_intermediate(next)?;
        let ctx = "recording the next intermediate";
        let next = next.clone();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                refuse_pending(tx, next.created_at, ctx).await?;
                insert_intermediate(tx, &next, ctx).await
            })
        })
        .await
    }

    /// See [`crate::Store::add_root`].
    pub(crate) async fn rotation_add_root(
        &self,
        root: &CaRoot,
        first: &CaIntermediate,
    ) -> Result<(), StoreError> {
        check_root(root, first)?;
        let ctx = "recording the next root";
        let (root, first) = (root.clone(), first.clone());
        self.write(ctx, move |tx| {
            Box::pin(async move {
                refuse_pending(tx, root.created_at, ctx).await?;
                insert_intermediate(tx, &first, ctx).await?;
                let params = [
                    Param::Text(&root.fingerprint),
                    Param::Bytes(&root.der),
                    Param::Text(&root.key_ref),
                    Param::Text(&root.previous),
                    Param::Bytes(&root.new_with_old),
                    Param::Bytes(&root.old_with_new),
                    Param::Text(&root.intermediate),
                    Param::Time(root.signs_from),
                    Param::Time(root.not_after),
                    Param::Time(root.created_at),
                ];
                tx.execute(INSERT_ROOT, &params)
                    .await
                    .map_err(|e| StoreError::db(ctx, e))?;
                Ok(())
            })
        })
        .await
    }

    /// See [`crate::Store::roots`].
    pub(crate) async fn rotation_roots(&self) -> Result<Vec<CaRoot>, StoreError> {
        self.read_all("reading the CA roots", ALL_ROOTS, &[], root_from_row)
            .await
    }

    /// See [`crate::Store::intermediates`].
    pub(crate) async fn rotation_all(&self) -> Result<Vec<CaIntermediate>, StoreError> {
        self.read_all("reading the CA intermediates", ALL, &[], from_row)
            .await
    }

    /// See [`crate::Store::cancel_pending_intermediates`].
    pub(crate) async fn rotation_cancel(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let ctx = "cancelling the pending rotation";
        self.write(ctx, move |tx| {
            Box::pin(async move {
                // The pending root goes with its first intermediate, in
                // the same transaction.
                tx.execute(CANCEL_ROOTS, &[Param::Time(now)])
                    .await
                    .map_err(|e| StoreError::db(ctx, e))?;
                tx.execute(CANCEL, &[Param::Time(now)])
                    .await
                    .map_err(|e| StoreError::db(ctx, e))
            })
        })
        .await
    }
}
