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
            writer: Arc::new(Mutex::new(Some(impatient))),
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
        profile: None,
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

/// The console's queries read one index range each, never the table: the
/// plans SQLite picks, on a store with rows and statistics (as after
/// `ANALYZE` on a million certificates).
#[tokio::test]
async fn console_queries_are_answered_from_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDriver::open(&dir.path().join("ca.db"), &StoreOptions::default())
        .await
        .unwrap();
    let mut conn = store.driver.pool.acquire().await.unwrap();
    for sql in [
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
         INSERT INTO certificates (serial, spiffe_id, token_id, not_before, not_after, der, \
         fingerprint, issued_at, origin, profile) SELECT printf('%08x', i), 'spiffe://t/' || i, \
         NULL, i, i + 3600, x'00', printf('%064x', i), i, 'token', 'peer' FROM n",
        "INSERT INTO cert_dns (name_rev, issued_at, serial) \
         SELECT 'tset.' || serial, issued_at, serial FROM certificates",
        "ANALYZE",
    ] {
        sqlx::query(sql).execute(&mut *conn).await.unwrap();
    }
    let plan = async |conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>, sql: &str| {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(&mut **conn)
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String, _>(3).unwrap())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let active = plan(&mut conn, crate::console::ACTIVE_BY_ORIGIN).await;
    assert!(
        active.contains("USING COVERING INDEX certificates_active (not_after>?)"),
        "{active}"
    );
    let expiring = plan(&mut conn, crate::console::EXPIRING).await;
    assert!(
        expiring.contains("USING INDEX certificates_active (not_after>?)"),
        "{expiring}"
    );
    let name = plan(&mut conn, crate::console::BY_DNS_NAME).await;
    assert!(
        name.contains("USING COVERING INDEX cert_dns_name (name_rev=?)")
            && name.contains("USING INDEX sqlite_autoindex_certificates_1 (serial=?)")
            && !name.contains("TEMP B-TREE"),
        "{name}"
    );
    let suffix = plan(&mut conn, crate::console::BY_DNS_SUFFIX).await;
    assert!(
        suffix.contains("USING COVERING INDEX cert_dns_name (name_rev>? AND name_rev<?)")
            && !suffix.contains("TEMP B-TREE"),
        "{suffix}"
    );
}
