//! The writer thread: a batch is one transaction whose failing writes leave
//! nothing, a writer hears back only once its changes are in the file, and
//! writers queued behind a store that goes away get an error, not a hang.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use super::*;
use crate::dialect::{BoxFuture, WriteTx};
use crate::sqlite::{SqliteDriver, SqliteStore};
use crate::{NewToken, Store, StoreOptions};

/// Boxes a test write; the bound lets the closure's signature be inferred.
fn job<F>(f: F) -> Job
where
    F: for<'t> FnOnce(&'t mut WriteTx<'_, Row>) -> BoxFuture<'t, bool> + Send + 'static,
{
    Box::new(f)
}

/// A write inserting `key` (twice when `twice`: the second insert fails).
fn insert_job(key: &'static str, twice: bool) -> Job {
    job(move |tx| {
        Box::pin(async move {
            let insert = "INSERT INTO t (k) VALUES ($1)";
            let first = tx.execute(insert, &[Param::Text(key)]).await;
            let second = if twice {
                tx.execute(insert, &[Param::Text(key)]).await
            } else {
                Ok(0)
            };
            first.is_ok() && second.is_ok()
        })
    })
}

/// Inserts `key` into `t` through the store's group commit.
async fn insert(store: &SqliteStore, key: &'static str) -> Result<u64, StoreError> {
    store
        .write("test insert", move |tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO t (k) VALUES ($1)", &[Param::Text(key)])
                    .await
                    .map_err(|e| StoreError::db("test insert", e))
            })
        })
        .await
}

/// A fresh, migrated store with a scratch table `t (k TEXT PRIMARY KEY)`.
async fn store(dir: &Path) -> SqliteStore {
    let store = SqliteDriver::open(&dir.join("ca.db"), &StoreOptions::default())
        .await
        .unwrap();
    store
        .driver
        .writer
        .writes(vec![job(|tx| {
            Box::pin(async move {
                tx.execute("CREATE TABLE t (k TEXT PRIMARY KEY)", &[])
                    .await
                    .is_ok()
            })
        })])
        .await
        .unwrap();
    store
}

/// The keys in `t`, read through a connection of its own (not the store's).
fn keys_on_disk(dir: &Path) -> Vec<String> {
    let conn =
        Connection::open_with_flags(dir.join("ca.db"), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn the_write_connection_has_the_writers_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let (tx_out, rx_out) = std_mpsc::channel();
    let read = job(move |tx| {
        Box::pin(async move {
            let mut out = Vec::new();
            for pragma in [
                "PRAGMA journal_mode",
                "PRAGMA synchronous",
                "PRAGMA foreign_keys",
                "PRAGMA busy_timeout",
                "PRAGMA temp_store",
                "PRAGMA cache_size",
            ] {
                let row = tx.fetch_one(pragma, &[]).await.unwrap();
                out.push(
                    row.text(0)
                        .or_else(|_| row.int(0).map(|n| n.to_string()))
                        .unwrap(),
                );
            }
            tx_out.send(out).unwrap();
            true
        })
    });
    store.driver.writer.writes(vec![read]).await.unwrap();
    assert_eq!(
        rx_out.recv().unwrap(),
        ["wal", "2", "1", "10000", "2", "-65536"],
        "journal_mode, synchronous=FULL, foreign_keys, busy_timeout, temp_store=MEMORY, cache"
    );
}

/// One request, one transaction: the failing write in the middle leaves
/// nothing (its first insert is undone), the writes before and after it
/// commit, and the last write already sees the first one's row (same
/// transaction, in queue order).
#[tokio::test]
async fn a_failing_write_in_a_batch_leaves_nothing_and_the_others_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let (seen_out, seen) = std_mpsc::channel();
    let last = job(move |tx| {
        Box::pin(async move {
            let rows = tx
                .fetch_all("SELECT k FROM t ORDER BY k", &[])
                .await
                .unwrap();
            let keys: Vec<String> = rows.iter().map(|r| r.text(0).unwrap()).collect();
            seen_out.send(keys).unwrap();
            tx.execute("INSERT INTO t (k) VALUES ($1)", &[Param::Text("c")])
                .await
                .is_ok()
        })
    });
    let jobs = vec![insert_job("a", false), insert_job("b", true), last];
    store.driver.writer.writes(jobs).await.unwrap();
    assert_eq!(seen.recv().unwrap(), ["a"]);
    assert_eq!(keys_on_disk(dir.path()), ["a", "c"]);

    // A failure the write does not catch itself (a constraint) reaches the
    // store's caller as the same kind of error sqlx reported.
    let e = insert(&store, "a").await.unwrap_err();
    assert!(e.to_string().contains("UNIQUE"), "{e}");
    assert_eq!(keys_on_disk(dir.path()), ["a", "c"]);
}

/// Every writer, when answered `Ok`, finds its change in the file through
/// another connection: the answer comes after the commit. Certificates
/// (through the batch committer) and small writes alike, concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_are_answered_only_after_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()).await);
    let now = OffsetDateTime::now_utc();
    let token = NewToken {
        id: "tok_1".into(),
        hash: [1; 32],
        spiffe_id: "spiffe://t/a".parse().unwrap(),
        dns_names: vec![],
        profile: ward_pki::issue::Profile::Peer,
        cert_ttl_secs: 60,
        expires_at: now + time::Duration::hours(1),
        max_uses: 0,
        allowed_cidrs: vec![],
        created_at: now,
        common_name: None,
    };
    store.create_token(&token).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        let path = dir.path().join("ca.db");
        let spiffe_id = token.spiffe_id.clone();
        tasks.push(tokio::spawn(async move {
            let key: &'static str = Box::leak(format!("k{i:02}").into_boxed_str());
            let serial = format!("{:032x}", i + 1);
            let wrote_key = insert(&store, key).await;
            let cert = crate::NewCertificate {
                serial: serial.parse().unwrap(),
                spiffe_id: Some(spiffe_id),
                token_id: None,
                not_before: now,
                not_after: now + time::Duration::hours(1),
                der: vec![1],
                fingerprint: "00".repeat(32),
                issued_at: now,
                renewed_from: None,
                origin: crate::Origin::Token,
                profile: None,
            };
            let issued = store.issue_with_token("tok_1", now, &cert).await;
            let serial = cert.serial.to_string();
            // Straight after each answer, from a connection of our own.
            let conn =
                Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            let has_key: i64 = conn
                .query_row("SELECT COUNT(*) FROM t WHERE k = ?1", [key], |r| r.get(0))
                .unwrap();
            let has_cert: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM certificates WHERE serial = ?1",
                    [&serial],
                    |r| r.get(0),
                )
                .unwrap();
            (wrote_key.is_ok(), has_key, issued.is_ok(), has_cert)
        }));
    }
    for t in tasks {
        let (wrote, has_key, issued, has_cert) = t.await.unwrap();
        assert!(wrote && issued);
        assert_eq!((has_key, has_cert), (1, 1));
    }
    assert_eq!(store.token("tok_1").await.unwrap().unwrap().uses, 40);
}

/// The runtime that runs the store's commit tasks goes away while the
/// writer thread is busy and writers are queued: each queued writer gets an
/// `Unavailable` error (no hang, no panic), none of their changes is in the
/// file, the batch that was running still commits or rolls back as a whole,
/// and the file is free for the next store (no transaction left open).
#[test]
fn writers_queued_when_the_store_goes_away_get_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let owner = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(owner.block_on(store(dir.path())));

    // A write that holds the writer thread until the gate opens.
    let (entered_tx, entered) = std_mpsc::channel();
    let (open_gate, gate) = std_mpsc::channel::<()>();
    let held = {
        let store = store.clone();
        owner.spawn(async move {
            store
                .write("held", move |tx| {
                    Box::pin(async move {
                        entered_tx.send(()).unwrap();
                        gate.recv().unwrap();
                        tx.execute("INSERT INTO t (k) VALUES ('held')", &[])
                            .await
                            .map_err(|e| StoreError::db("held", e))
                    })
                })
                .await
        })
    };
    entered.recv().unwrap();

    let writers = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let queued = store.clone();
    let results = writers.block_on(async move {
        let store = queued;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let key: &'static str = Box::leak(format!("q{i:02}").into_boxed_str());
                tokio::spawn(async move { insert(&store, key).await })
            })
            .collect();
        // Queued: every writer's message waits in the group-commit queue.
        while store.driver.group.queued() < 16 {
            tokio::task::yield_now().await;
        }
        owner.shutdown_background();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    });
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(e.is_unavailable(), "{e}");
    }
    drop(held);
    open_gate.send(()).unwrap();
    drop(store);

    // The held batch commits (its waiter is gone); nothing queued is kept.
    // A new store writes at once: no transaction was left open.
    let next = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    next.block_on(async {
        let store = SqliteDriver::open(&dir.path().join("ca.db"), &StoreOptions::default())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        insert(&store, "after").await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        store.close().await;
    });
    assert_eq!(keys_on_disk(dir.path()), ["after", "held"]);
}
