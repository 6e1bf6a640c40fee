//! Checks of what only the SQLite backend promises: per-connection
//! durability and locking settings, which the contract tests cannot see.

use time::OffsetDateTime;

use super::*;
use crate::{NewToken, Store};

/// Durability settings are per connection: check one the pool hands out.
#[tokio::test]
async fn connections_use_wal_full_sync_busy_timeout_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDriver::open(&dir.path().join("ca.db"), &StoreOptions::default())
        .await
        .unwrap();
    let mut conn = store.driver.pool.acquire().await.unwrap();
    let mut pragma = async |name: &'static str| -> String {
        let row = sqlx::query(name).fetch_one(&mut *conn).await.unwrap();
        row.try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
            .unwrap()
    };
    assert_eq!(pragma("PRAGMA journal_mode").await, "wal");
    assert_eq!(pragma("PRAGMA synchronous").await, "2", "FULL");
    assert_eq!(pragma("PRAGMA foreign_keys").await, "1");
    assert_eq!(pragma("PRAGMA busy_timeout").await, "10000");
}

/// Another process holds the write lock past the busy timeout: every caller
/// of the batch gets `Unavailable` (503 at the CA), nothing is written, and
/// the next batch commits once the lock is free.
#[tokio::test]
async fn a_batch_that_cannot_get_the_write_lock_is_unavailable_for_all() {
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.db");
    let store = SqliteDriver::open(&path, &StoreOptions::default())
        .await
        .unwrap();
    let t = NewToken {
        id: "tok_1".into(),
        hash: [1; 32],
        spiffe_id: "spiffe://t/a".parse().unwrap(),
        dns_names: vec![],
        profile: ward_pki::issue::Profile::Peer,
        cert_ttl_secs: 60,
        expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
        max_uses: 0,
        allowed_cidrs: vec![],
        created_at: OffsetDateTime::now_utc(),
        common_name: None,
    };
    store.create_token(&t).await.unwrap();
    // The same file through a writer that gives up on a busy lock at once.
    let impatient = SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let committer = Arc::new(Committer::spawn(
        SqliteBatch {
            writer: Arc::new(Mutex::new(Some(WriterSlot {
                conn: impatient,
                open: false,
            }))),
        },
        64,
    ));
    let cert = |serial: &str| NewCertificate {
        serial: serial.parse().unwrap(),
        spiffe_id: Some(t.spiffe_id.clone()),
        token_id: Some(t.id.clone()),
        not_before: t.created_at,
        not_after: t.expires_at,
        der: vec![1],
        fingerprint: "00".repeat(32),
        issued_at: t.created_at,
        renewed_from: None,
        origin: crate::Origin::Token,
    };
    let item = |serial: &str| Item::with_token(&t.id, OffsetDateTime::now_utc(), cert(serial));

    let mut other = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let results = submit_all(&committer, (0..8).map(|i| item(&format!("a{i}")))).await;
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
    }
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(store.count_certificates().await.unwrap(), 0);
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 0);

    committer.submit(item("b0")).await.unwrap();
    assert_eq!(store.count_certificates().await.unwrap(), 1);
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 1);
}

/// Submits every item at once and collects the outcomes in order.
async fn submit_all(
    committer: &Arc<Committer>,
    items: impl Iterator<Item = Item>,
) -> Vec<Result<(), StoreError>> {
    let tasks: Vec<_> = items
        .map(|item| {
            let committer = committer.clone();
            tokio::spawn(async move { committer.submit(item).await })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// The fast group commit's query numbers its parameters in bind order:
/// token ids, then 10 per certificate, then (uses, id) per token.
#[test]
fn fast_batch_sql_numbers_parameters_in_bind_order() {
    let text = fast_batch_sql(2, 3, 1);
    assert!(
        text.starts_with("BEGIN IMMEDIATE; SELECT id, hash,"),
        "{text}"
    );
    assert!(text.contains("WHERE id IN (?1, ?2)"), "{text}");
    // 3 rows: a chunk of 2 and a chunk of 1, parameters 3..=32.
    assert_eq!(text.matches("INSERT INTO certificates").count(), 2);
    assert!(text.contains("(?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, NULL, ?12), (?13,"));
    assert!(text.contains("(?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, NULL, NULL, ?32)"));
    assert!(text.ends_with(
        "UPDATE tokens SET uses = uses + ?33 WHERE id = ?34 AND (max_uses = 0 OR uses + ?33 <= max_uses) RETURNING id"
    ));
    assert!(!text.contains("?35"));
    assert_eq!(fast_batch_sql(0, 1, 0).matches(';').count(), 1);
}

/// A batch whose task was dropped half-way leaves its transaction open on
/// the writer: the next writer rolls it back first, so nothing of it is
/// committed and later writes go through.
#[tokio::test]
async fn a_transaction_left_open_is_rolled_back_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDriver::open(&dir.path().join("ca.db"), &StoreOptions::default())
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let t = NewToken {
        id: "tok_2".into(),
        hash: [2; 32],
        spiffe_id: "spiffe://t/b".parse().unwrap(),
        dns_names: vec![],
        profile: ward_pki::issue::Profile::Peer,
        cert_ttl_secs: 60,
        expires_at: now + time::Duration::hours(1),
        max_uses: 2,
        allowed_cidrs: vec![],
        created_at: now,
        common_name: None,
    };
    store.create_token(&t).await.unwrap();
    {
        let mut slot = lock_slot(&store.driver.writer).await.unwrap();
        slot.open = true;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut slot.conn)
            .await
            .unwrap();
        sqlx::query("UPDATE tokens SET uses = 2 WHERE id = 'tok_2'")
            .execute(&mut slot.conn)
            .await
            .unwrap();
        // Dropped here without COMMIT or ROLLBACK.
    }
    let cert = |serial: &str| NewCertificate {
        serial: serial.parse().unwrap(),
        spiffe_id: Some(t.spiffe_id.clone()),
        token_id: Some(t.id.clone()),
        not_before: now,
        not_after: now + time::Duration::minutes(1),
        der: vec![2],
        fingerprint: "11".repeat(32),
        issued_at: now,
        renewed_from: None,
        origin: crate::Origin::Token,
    };
    // Both uses are still there: the abandoned update never committed.
    store
        .issue_with_token(&t.id, now, &cert("c1"))
        .await
        .unwrap();
    store
        .issue_with_token(&t.id, now, &cert("c2"))
        .await
        .unwrap();
    let third = store.issue_with_token(&t.id, now, &cert("c3")).await;
    assert!(
        matches!(third, Err(StoreError::TokenExhausted)),
        "{third:?}"
    );
    assert_eq!(store.count_certificates().await.unwrap(), 2);
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 2);
}

/// The fast path commits a batch whose items are all admitted, and rolls
/// back (writing nothing) when one is not, leaving it to the careful path.
#[tokio::test]
async fn the_fast_path_commits_only_batches_it_can_admit_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDriver::open(&dir.path().join("ca.db"), &StoreOptions::default())
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let t = NewToken {
        id: "tok_3".into(),
        hash: [3; 32],
        spiffe_id: "spiffe://t/c".parse().unwrap(),
        dns_names: vec![],
        profile: ward_pki::issue::Profile::Peer,
        cert_ttl_secs: 60,
        expires_at: now + time::Duration::hours(1),
        max_uses: 3,
        allowed_cidrs: vec![],
        created_at: now,
        common_name: None,
    };
    store.create_token(&t).await.unwrap();
    let item = |serial: &str| {
        Item::with_token(
            &t.id,
            now,
            NewCertificate {
                serial: serial.parse().unwrap(),
                spiffe_id: Some(t.spiffe_id.clone()),
                token_id: Some(t.id.clone()),
                not_before: now,
                not_after: now + time::Duration::minutes(1),
                der: vec![3],
                fingerprint: "22".repeat(32),
                issued_at: now,
                renewed_from: None,
                origin: crate::Origin::Token,
            },
        )
    };
    let mut slot = lock_slot(&store.driver.writer).await.unwrap();
    let done = fast_batch(&mut slot, &[item("d1"), item("d2")])
        .await
        .unwrap();
    assert!(matches!(done, Fast::Committed(ref o) if o.len() == 2));
    assert!(!slot.open);
    // Two more would overspend the limit of 3: rolled back, nothing written.
    let done = fast_batch(&mut slot, &[item("d3"), item("d4")])
        .await
        .unwrap();
    assert!(matches!(done, Fast::Declined));
    // A serial already stored: rolled back too.
    let done = fast_batch(&mut slot, &[item("d1")]).await.unwrap();
    assert!(matches!(done, Fast::Declined));
    assert!(!slot.open);
    drop(slot);
    assert_eq!(store.count_certificates().await.unwrap(), 2);
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 2);
}
