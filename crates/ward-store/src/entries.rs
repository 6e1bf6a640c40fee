//! Registration entries for node attestation (issue 24, part 3): which
//! SPIFFE ID a caller of a node agent's Workload API socket gets, given
//! what the kernel says about it (its selectors), and which node agent may
//! obtain that ID's SVIDs from the CA.
//!
//! The store checks sizes only; the CA parses selectors and IDs before
//! they get here.

use time::OffsetDateTime;

use crate::StoreError;
use crate::dialect::{Columns, Param};
use crate::shared::{Driver, SqlStore};

/// One registration entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationEntry {
    /// Public id: `ent_` + 16 lowercase hex.
    pub id: String,
    /// The SPIFFE ID a matching caller gets.
    pub spiffe_id: String,
    /// Canonical selectors (`unix:uid:1000`, …); all must match.
    pub selectors: Vec<String>,
    /// The SPIFFE ID of the node agent allowed to serve this entry.
    pub node: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

const ALL: &str = "SELECT id, spiffe_id, selectors, node, created_at FROM registration_entries \
     ORDER BY created_at, id";
const FOR_NODE: &str = "SELECT id, spiffe_id, selectors, node, created_at \
     FROM registration_entries WHERE node = $1 ORDER BY created_at, id";
const INSERT: &str = "INSERT INTO registration_entries (id, spiffe_id, selectors, node, \
     created_at) VALUES ($1, $2, $3, $4, $5)";
const DELETE: &str = "DELETE FROM registration_entries WHERE id = $1";
const COUNT: &str = "SELECT COUNT(*) FROM registration_entries";

/// Most entries one store holds (a bound on what listing returns).
pub const MAX_ENTRIES: i64 = 100_000;

fn from_row<R: Columns>(row: &R) -> Result<RegistrationEntry, StoreError> {
    let ctx = "reading a registration entry";
    let db = |e| StoreError::db(ctx, e);
    Ok(RegistrationEntry {
        id: row.text(0).map_err(db)?,
        spiffe_id: row.text(1).map_err(db)?,
        selectors: row
            .text(2)
            .map_err(db)?
            .lines()
            .map(str::to_owned)
            .collect(),
        node: row.text(3).map_err(db)?,
        created_at: row.time(4)?,
    })
}

fn check(entry: &RegistrationEntry) -> Result<String, StoreError> {
    let id_ok = entry.id.len() == 20
        && entry.id.starts_with("ent_")
        && entry.id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !id_ok {
        return Err(StoreError::Invalid("the entry id is not ent_ + 16 hex"));
    }
    if entry.spiffe_id.is_empty() || entry.spiffe_id.len() > 2048 {
        return Err(StoreError::Invalid("the SPIFFE ID is empty or too long"));
    }
    if entry.node.is_empty() || entry.node.len() > 2048 {
        return Err(StoreError::Invalid("the node ID is empty or too long"));
    }
    if entry.selectors.is_empty()
        || entry
            .selectors
            .iter()
            .any(|s| s.is_empty() || s.contains('\n'))
    {
        return Err(StoreError::Invalid("the selectors are empty or malformed"));
    }
    let joined = entry.selectors.join("\n");
    if joined.len() > 8192 {
        return Err(StoreError::Invalid("the selectors are too long"));
    }
    Ok(joined)
}

impl<D: Driver> SqlStore<D> {
    /// See [`crate::Store::create_entry`].
    pub(crate) async fn entry_create(&self, entry: &RegistrationEntry) -> Result<(), StoreError> {
        let selectors = check(entry)?;
        let ctx = "recording a registration entry";
        let entry = entry.clone();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db(ctx, e);
                let count = tx
                    .fetch_one(COUNT, &[])
                    .await
                    .map_err(db)?
                    .int(0)
                    .map_err(db)?;
                if count >= MAX_ENTRIES {
                    return Err(StoreError::Conflict("too many registration entries"));
                }
                let params = [
                    Param::Text(&entry.id),
                    Param::Text(&entry.spiffe_id),
                    Param::Text(&selectors),
                    Param::Text(&entry.node),
                    Param::Time(entry.created_at),
                ];
                tx.execute(INSERT, &params).await.map_err(db)?;
                Ok(())
            })
        })
        .await
    }

    /// See [`crate::Store::entries`].
    pub(crate) async fn entry_list(
        &self,
        node: Option<&str>,
    ) -> Result<Vec<RegistrationEntry>, StoreError> {
        let ctx = "reading the registration entries";
        match node {
            Some(node) => {
                self.read_all(ctx, FOR_NODE, &[Param::Text(node)], from_row)
                    .await
            }
            None => self.read_all(ctx, ALL, &[], from_row).await,
        }
    }

    /// See [`crate::Store::delete_entry`].
    pub(crate) async fn entry_delete(&self, id: &str) -> Result<bool, StoreError> {
        let ctx = "deleting a registration entry";
        let id = id.to_owned();
        self.write(ctx, move |tx| {
            Box::pin(async move {
                let n = tx
                    .execute(DELETE, &[Param::Text(&id)])
                    .await
                    .map_err(|e| StoreError::db(ctx, e))?;
                Ok(n > 0)
            })
        })
        .await
    }
}
