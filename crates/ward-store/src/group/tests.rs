//! Group commit of SQLite's small writes: many writes share a transaction,
//! a failing write keeps nothing and costs the others nothing, and every
//! writer gets its own result.

use std::sync::Arc;

use crate::dialect::{Param, Statements};
use crate::shared::Driver;
use crate::sqlite::SqliteDriver;
use crate::{StoreError, StoreOptions};

/// A fresh store with a scratch table `t (k TEXT PRIMARY KEY)`.
async fn store() -> (tempfile::TempDir, Arc<crate::sqlite::SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDriver::open(&dir.path().join("ca.db"), &StoreOptions::default())
        .await
        .unwrap();
    store
        .write("test table", |tx| {
            Box::pin(async move {
                tx.execute("CREATE TABLE t (k TEXT PRIMARY KEY)", &[])
                    .await
                    .map_err(|e| StoreError::db("test", e))?;
                Ok(())
            })
        })
        .await
        .unwrap();
    (dir, Arc::new(store))
}

/// Inserts `key` twice in one write when `twice`: the second insert fails,
/// so the whole write must leave nothing.
async fn insert(
    store: &crate::sqlite::SqliteStore,
    key: String,
    twice: bool,
) -> Result<u64, StoreError> {
    store
        .write("test insert", move |tx| {
            Box::pin(async move {
                let db = |e| StoreError::db("test insert", e);
                let mut n = tx
                    .execute("INSERT INTO t (k) VALUES ($1)", &[Param::Text(&key)])
                    .await
                    .map_err(db)?;
                if twice {
                    n += tx
                        .execute("INSERT INTO t (k) VALUES ($1)", &[Param::Text(&key)])
                        .await
                        .map_err(db)?;
                }
                Ok(n)
            })
        })
        .await
}

async fn keys(store: &crate::sqlite::SqliteStore) -> Vec<String> {
    let rows = store
        .driver
        .readers()
        .fetch_all("SELECT k FROM t ORDER BY k", &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| crate::dialect::Columns::text(r, 0).unwrap())
        .collect()
}

/// Many concurrent writes, every fifth failing half-way: the others are all
/// committed with their own results, the failing ones leave nothing (the
/// savepoint undid their first insert), and the batches were shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_keeps_nothing_and_costs_the_others_nothing() {
    let (_dir, store) = store().await;
    let before = store.driver.group_batches();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            insert(&store, format!("k{i:03}"), i % 5 == 0).await
        }));
    }
    let mut failed = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(n) => assert_eq!(n, 1, "write {i}"),
            Err(e) => {
                assert_eq!(i % 5, 0, "write {i} failed: {e}");
                assert!(e.to_string().contains("UNIQUE"), "{e}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 40);
    let kept = keys(&store).await;
    assert_eq!(kept.len(), 160);
    assert!(kept.iter().all(|k| k[1..].parse::<u32>().unwrap() % 5 != 0));
    // 200 writes, far fewer transactions.
    let batches = store.driver.group_batches() - before;
    assert!(
        batches > 0 && batches < 100,
        "{batches} transactions for 200 writes"
    );
}

/// A lone write commits at once (no timer), and alone its failure is its own.
#[tokio::test]
async fn a_lone_write_commits_at_once() {
    let (_dir, store) = store().await;
    let started = std::time::Instant::now();
    insert(&store, "alone".into(), false).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(keys(&store).await, ["alone"]);
    let e = insert(&store, "alone".into(), false).await.unwrap_err();
    assert!(e.to_string().contains("UNIQUE"), "{e}");
    assert_eq!(keys(&store).await, ["alone"]);
}
