//! Checks of what only the SQLite backend promises: per-connection
//! durability and locking settings, which the contract tests cannot see.

use super::*;

/// Durability settings are per connection: check one the pool hands out.
#[tokio::test]
async fn connections_use_wal_full_sync_busy_timeout_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("ca.db"), &StoreOptions::default())
        .await
        .unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
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
