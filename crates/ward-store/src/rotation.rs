//! What CA rotation (issue 20) asks of storage: the intermediates made by
//! `ward ca rotate intermediate`, when each starts signing, and cancelling
//! one before it does. Every replica reads the same rows and the same
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

const INSERT: &str = "INSERT INTO ca_intermediates (fingerprint, der, key_ref, signs_from, \
     not_after, created_at, cancelled_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)";

const CANCEL: &str = "UPDATE ca_intermediates SET cancelled_at = $1 \
     WHERE cancelled_at IS NULL AND signs_from > $1";

/// Largest certificate accepted (the column's CHECK says the same).
const MAX_DER: usize = 65536;

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
        if next.fingerprint.len() != 64 || !next.fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
        {
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
        let ctx = "recording the next intermediate";
        let next = next.clone();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let pending = tx
                    .fetch_one(PENDING, &[Param::Time(next.created_at)])
                    .await
                    .map_err(db)?
                    .int(0)
                    .map_err(db)?;
                if pending > 0 {
                    return Err(StoreError::Conflict(
                        "a rotation is already pending: cancel it or wait for its switch",
                    ));
                }
                let params = [
                    Param::Text(&next.fingerprint),
                    Param::Bytes(&next.der),
                    Param::Text(&next.key_ref),
                    Param::Time(next.signs_from),
                    Param::Time(next.not_after),
                    Param::Time(next.created_at),
                ];
                tx.execute(INSERT, &params).await.map_err(db)?;
                Ok(())
            })
        })
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
                tx.execute(CANCEL, &[Param::Time(now)])
                    .await
                    .map_err(|e| StoreError::db(ctx, e))
            })
        })
        .await
    }
}
