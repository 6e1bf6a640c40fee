//! The embedded backend: one SQLite file in the CA directory, in WAL mode.
//!
//! Durability: `synchronous=FULL`, so a committed certificate survives a
//! power cut. Concurrency: SQLite has one writer at a time, so this process
//! writes through one dedicated connection owned by one thread
//! ([`writer`]: requests queue in FIFO order, no busy polling, a whole
//! batch per request); readers use sqlx's pool. Writers in other processes
//! are waited for by SQLite's busy timeout. Every write transaction starts with
//! `BEGIN IMMEDIATE` so it holds the write lock from its first statement and
//! can never fail half-way on a lock upgrade. Certificate records go through
//! the store's group commit ([`crate::batch`]): many records, one
//! transaction, one fsync; every other write goes through [`crate::group`],
//! which does the same for the small writes (ACME orders and nonces above
//! all): the writes that queue while one transaction commits share the next.
//!
//! Why one writer connection: SQLite drops a connection's whole page cache
//! when another connection wrote since its last transaction, so writes
//! spread over a pool re-read every index page they touch (a `pread` each).
//! The writer keeps a larger cache ([`WRITER_CACHE_KIB`]); every connection
//! keeps temporary structures (the rows `RETURNING` collects, sorts) in
//! memory instead of creating a file under `/var/tmp` per batch.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use crate::batch::{BatchResult, BatchWriter, Committer, Item};
use crate::dialect::{BoxFuture, Work};
use crate::group::{GroupWriter, Job, Runner};
use crate::shared::{Driver, SqlStore};
use crate::{Backend, StoreError, StoreOptions, migrate_error, watch};
use writer::WriterThread;

/// Migrations for this backend, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page cache of the writer connection, in KiB (readers keep SQLite's
/// default of 2 MiB), filled only as pages are used: room for the serial
/// index's leaf pages of a few million certificates, which the fully random
/// serials of databases from before time-led serials touch all over.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// A SQLite store: the shared logic over this backend's connections.
pub(crate) type SqliteStore = SqlStore<SqliteDriver>;

/// A SQLite database file behind a connection pool and one writer.
pub(crate) struct SqliteDriver {
    /// The readers' pool; WAL lets readers run beside the one writer.
    pub(crate) pool: SqlitePool,
    /// The thread that owns the one write connection: this process's
    /// writes queue on it.
    writer: WriterThread,
    /// Group commit of [`Driver::write`]s on `writer`.
    group: GroupWriter,
    /// How to open another connection (the revocation watch's).
    connect: SqliteConnectOptions,
}

/// The SQLite half of group commit: one `BEGIN IMMEDIATE` transaction per batch.
struct SqliteBatch {
    /// The store's writer thread.
    writer: WriterThread,
}

/// Runs [`crate::group`]'s batches of writes on the write connection.
struct SqliteGroup {
    /// The store's writer thread.
    writer: WriterThread,
}

impl Runner for SqliteGroup {
    fn run_batch<'a>(&'a self, jobs: Vec<Job>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.writer.writes(jobs))
    }
}

impl SqliteDriver {
    /// How many group-commit transactions of small writes ran (tests).
    #[cfg(test)]
    pub(crate) fn group_batches(&self) -> u64 {
        self.group.batches()
    }

    /// Opens (creating it with mode 0600 if missing) and migrates a database file.
    pub(crate) async fn open(
        path: &Path,
        options: &StoreOptions,
    ) -> Result<SqliteStore, StoreError> {
        let shown = path.display();
        if options.create {
            create_private_file(path)
                .await
                .map_err(|e| StoreError::Unavailable {
                    context: format!("creating SQLite file {shown}"),
                    source: Box::new(e),
                })?;
        } else {
            check_present(path).await?;
            // Checked through a read-only connection first: a damaged file
            // is refused before anything (a checkpoint) could write to it.
            let mut reader = SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .busy_timeout(BUSY_TIMEOUT)
                .connect()
                .await
                .map_err(|e| open_error(path, e))?;
            let checked = check_store(path, &mut reader).await;
            let _ = reader.close().await;
            checked?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(options.create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let watch_connect = connect.clone().create_if_missing(false);
        let mut writer = connect
            .clone()
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
            .connect()
            .await
            .map_err(|e| open_error(path, e))?;
        MIGRATOR
            .run_direct(None, &mut writer, false)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => open_error(path, e),
                e => migrate_error(format!("migrating SQLite database {shown}"), e),
            })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(crate::ping_if_idle(conn, meta)))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::db(format!("opening SQLite database {shown}"), e))?;
        // Migrated: from here on the writer thread writes, with its own
        // connection.
        writer.close().await.map_err(|e| open_error(path, e))?;
        let writer = WriterThread::open(path, BUSY_TIMEOUT, WRITER_CACHE_KIB).await?;
        let batch = SqliteBatch {
            writer: writer.clone(),
        };
        let group = GroupWriter::spawn(
            SqliteGroup {
                writer: writer.clone(),
            },
            options.max_batch,
        );
        Ok(SqlStore {
            driver: SqliteDriver {
                pool,
                writer,
                group,
                connect: watch_connect,
            },
            committer: Committer::spawn(batch, options.max_batch),
        })
    }
}

/// Reads `PRAGMA data_version`: it changes whenever another connection (of
/// any process) committed to the file since this one last looked.
async fn data_version(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(conn)
        .await
}

/// Polls `data_version` on its own connection every [`watch::SQLITE_POLL`]
/// and signals each change, until nobody listens. A failed read drops the
/// connection, counts as a change, and a new one is opened later.
async fn watch_data_version(
    connect: SqliteConnectOptions,
    mut conn: Option<SqliteConnection>,
    mut last: i64,
    signal: watch::Signal,
) {
    let mut tick = tokio::time::interval(watch::SQLITE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = signal.closed() => return,
            _ = tick.tick() => {}
        }
        let Some(c) = conn.as_mut() else {
            match connect.connect().await {
                Ok(mut c) => {
                    if let Ok(v) = data_version(&mut c).await {
                        last = v;
                        conn = Some(c);
                        signal.fire();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "revocation watch: cannot reopen the SQLite file; retrying");
                    tokio::time::sleep(watch::RETRY).await;
                }
            }
            continue;
        };
        match data_version(c).await {
            Ok(v) if v != last => {
                last = v;
                signal.fire();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "revocation watch: reading data_version failed; reconnecting");
                conn = None;
                signal.fire();
            }
        }
    }
}

#[async_trait]
impl BatchWriter for SqliteBatch {
    async fn write_batch(&self, items: &[Item]) -> BatchResult {
        self.writer.certificates(items.to_vec()).await
    }
}

/// Refuses a database file that is missing or empty (0 bytes: what a
/// truncated or freshly touched file looks like), naming it.
async fn check_present(path: &Path) -> Result<(), StoreError> {
    match tokio::fs::metadata(path).await {
        Ok(m) if m.len() == 0 => Err(StoreError::Missing(format!(
            "the CA database {} is empty (0 bytes): it holds no CA store; restore it from a \
             backup (a new store would forget every token and certificate)",
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Missing(format!(
            "the CA database {} does not exist; restore it from a backup, or create a new \
             store explicitly (`ward ca serve --init-storage`)",
            path.display()
        ))),
        Err(e) => Err(StoreError::Unavailable {
            context: format!("reading SQLite file {}", path.display()),
            source: Box::new(e),
        }),
    }
}

/// Whether a driver error says the file is not a (sound) SQLite database:
/// SQLITE_CORRUPT (11) or SQLITE_NOTADB (26), with extended codes.
fn is_damage(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 11 | 26))
}

/// Maps an error met while opening: damage names the file.
fn open_error(path: &Path, err: sqlx::Error) -> StoreError {
    if is_damage(&err) {
        damaged(path, &err.to_string())
    } else {
        StoreError::db(format!("opening SQLite database {}", path.display()), err)
    }
}

fn damaged(path: &Path, detail: &str) -> StoreError {
    StoreError::Damaged(format!(
        "the CA database {} is damaged ({detail}); restore it from a backup",
        path.display()
    ))
}

/// Checks that an existing file is a sound database holding Ward's tables:
/// `PRAGMA quick_check` (reads every page once) and the migration table.
async fn check_store(path: &Path, conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA quick_check(5)")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| open_error(path, e))?;
    if problems.first().map(String::as_str) != Some("ok") {
        return Err(damaged(path, &problems.join("; ")));
    }
    let ward: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN \
         ('_sqlx_migrations', 'certificates', 'crl_counter')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| open_error(path, e))?;
    match ward {
        3 => Ok(()),
        0 => Err(StoreError::Missing(format!(
            "the CA database {} holds no CA store (no Ward tables); restore it from a backup",
            path.display()
        ))),
        _ => Err(damaged(path, "some of Ward's tables are missing")),
    }
}

/// Creates the database file readable by its owner only, if it is missing.
async fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut open = tokio::fs::OpenOptions::new();
    open.write(true).create(true);
    #[cfg(unix)]
    open.mode(0o600);
    open.open(path).await.map(drop)
}

#[async_trait]
impl Driver for SqliteDriver {
    type Row = SqliteRow;

    type WriteRow = WriteRow;

    const BACKEND: Backend = Backend::Sqlite;

    // Other processes notice any commit through `PRAGMA data_version`.
    const REVOCATION_NOTICE: Option<&'static str> = None;

    type Readers<'a> = &'a SqlitePool;

    fn readers(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write<T: Send + 'static>(
        &self,
        _ctx: &'static str,
        work: Work<T, WriteRow>,
    ) -> Result<T, StoreError> {
        self.group.write(work).await
    }

    async fn watch(&self) -> Result<watch::RevocationWatch, StoreError> {
        let ctx = "opening the revocation watch";
        let mut conn = self
            .connect
            .connect()
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        let first = data_version(&mut conn)
            .await
            .map_err(|e| StoreError::db(ctx, e))?;
        let (signal, rx) = watch::channel();
        tokio::spawn(watch_data_version(
            self.connect.clone(),
            Some(conn),
            first,
            signal,
        ));
        Ok(rx)
    }

    async fn close(&self) {
        self.pool.close().await;
        // Fold the WAL into the database file, so that the file alone holds
        // everything (copies, backups) even while this handle lives on.
        // Best effort: a failure leaves the WAL for the next open to fold in.
        // Closing the last connection also removes the -wal and -shm files.
        self.writer.close().await;
    }
}

mod writer;

pub(crate) use writer::{Row as WriteRow, WriterError};

#[cfg(test)]
mod tests;
