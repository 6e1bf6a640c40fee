//! The embedded backend: one SQLite file in the CA directory, in WAL mode.
//!
//! Durability: `synchronous=FULL`, so a committed certificate survives a
//! power cut. Concurrency: SQLite has one writer at a time, so this process
//! writes through one dedicated connection behind an async mutex (FIFO, no
//! busy polling); readers use a pool. Writers in other processes are waited
//! for by SQLite's busy timeout. Every write transaction starts with
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

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::Mutex;

use crate::batch::{BatchResult, BatchWriter, Committer, Item, plan, token_ids};
use crate::dialect::{BoxFuture, Work};
use crate::group::{GroupWriter, Job, Runner};
use crate::model::{encode_optional_spiffe_id, to_micros};
use crate::shared::{Driver, SqlStore, token_from_row};
use crate::{Backend, NewCertificate, StoreError, StoreOptions, migrate_error, sql, watch};

/// Migrations for this backend, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page cache of the writer connection, in KiB (readers keep SQLite's
/// default of 2 MiB), filled only as pages are used: room for the serial
/// index's leaf pages of a few million certificates, which the fully random
/// serials of databases from before time-led serials touch all over.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// The connection every write of this process goes through; `None` once
/// the store is closed.
type Writer = Arc<Mutex<Option<SqliteConnection>>>;

/// Takes this process's turn on the writer connection.
async fn lock_writer(
    writer: &Writer,
) -> Result<tokio::sync::MappedMutexGuard<'_, SqliteConnection>, StoreError> {
    tokio::sync::MutexGuard::try_map(writer.lock().await, Option::as_mut).map_err(|_| {
        StoreError::Unavailable {
            context: "writing to the SQLite database".into(),
            source: "the store is closed".into(),
        }
    })
}

/// A SQLite store: the shared logic over this backend's connections.
pub(crate) type SqliteStore = SqlStore<SqliteDriver>;

/// A SQLite database file behind a connection pool and one writer.
pub(crate) struct SqliteDriver {
    /// The readers' pool; WAL lets readers run beside the one writer.
    pub(crate) pool: SqlitePool,
    /// The one write connection: this process's writers queue on it.
    writer: Writer,
    /// Group commit of [`Driver::write`]s on `writer`.
    group: GroupWriter,
    /// How to open another connection (the revocation watch's).
    connect: SqliteConnectOptions,
}

/// The SQLite half of group commit: one `BEGIN IMMEDIATE` transaction per batch.
struct SqliteBatch {
    /// The store's write connection.
    writer: Writer,
}

/// Runs [`crate::group`]'s batches of writes on the write connection.
struct SqliteGroup {
    /// The store's write connection.
    writer: Writer,
}

impl Runner for SqliteGroup {
    fn run_batch<'a>(&'a self, jobs: Vec<Job>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let ctx = "committing a batch of writes";
            let db = |e| StoreError::db(ctx, e);
            let mut conn = lock_writer(&self.writer).await?;
            let mut tx = begin_write(&mut conn).await?;
            if jobs.len() == 1 {
                // Alone, a write needs no savepoint: failing, it rolls back
                // the transaction (dropping `tx`).
                for job in jobs {
                    if !job(&mut tx).await {
                        return Ok(());
                    }
                }
            } else {
                // Each write in its own savepoint; the statements between two
                // writes go to SQLite's thread as one call.
                sqlx::raw_sql("SAVEPOINT ward_write")
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                let last = jobs.len() - 1;
                for (n, job) in jobs.into_iter().enumerate() {
                    let kept = job(&mut tx).await;
                    // Undoing a failed write fails if SQLite already rolled
                    // back the whole transaction: the batch fails with it.
                    let between: &'static str = match (kept, n == last) {
                        (true, false) => "RELEASE ward_write; SAVEPOINT ward_write",
                        (false, false) => {
                            "ROLLBACK TO ward_write; RELEASE ward_write; SAVEPOINT ward_write"
                        }
                        (true, true) => "RELEASE ward_write",
                        (false, true) => "ROLLBACK TO ward_write; RELEASE ward_write",
                    };
                    sqlx::raw_sql(between).execute(&mut *tx).await.map_err(db)?;
                }
            }
            tx.commit().await.map_err(db)
        })
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
        let writer = Arc::new(Mutex::new(Some(writer)));
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

/// Starts a write transaction on the writer connection (whose turn the
/// caller holds), taking the database write lock at once.
async fn begin_write(
    conn: &mut SqliteConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, StoreError> {
    conn.begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| StoreError::db("starting a write transaction", e))
}

#[async_trait]
impl BatchWriter for SqliteBatch {
    async fn write_batch(&self, items: &[Item]) -> BatchResult {
        let ctx = "committing certificates";
        let mut conn = lock_writer(&self.writer).await?;
        let mut tx = begin_write(&mut conn).await?;
        // The write lock is held: nobody changes these rows until commit.
        let mut tokens = HashMap::new();
        for id in token_ids(items) {
            let row = sqlx::query(sql::TOKEN_BY_ID)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| StoreError::db(ctx, e))?;
            if let Some(token) = row.as_ref().map(token_from_row).transpose()? {
                tokens.insert(id, token);
            }
        }
        let plan = plan(items, &tokens);
        if plan.is_empty() {
            // Dropping `tx` rolls back; nothing was written.
            return Ok(plan.finish(items, &HashSet::new()).0);
        }
        let planned: Vec<(usize, &NewCertificate)> = plan.inserts(items).collect();
        let mut index_of: HashMap<String, usize> = HashMap::with_capacity(planned.len());
        let mut inserted = HashSet::with_capacity(planned.len());
        let mut rest = &planned[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(sql::insert_chunk_len(rest.len()));
            rest = tail;
            let mut insert = sqlx::query(sql::insert_rows_sql(chunk.len()));
            for (i, c) in chunk {
                let serial = c.serial.to_string();
                insert = insert
                    .bind(serial.clone())
                    .bind(encode_optional_spiffe_id(c.spiffe_id.as_ref()))
                    .bind(&c.token_id)
                    .bind(to_micros(c.not_before))
                    .bind(to_micros(c.not_after))
                    .bind(&c.der)
                    .bind(&c.fingerprint)
                    .bind(to_micros(c.issued_at))
                    .bind(c.renewed_from.as_ref().map(ToString::to_string))
                    .bind(c.origin.as_str())
                    .bind(&c.profile);
                index_of.insert(serial, *i);
            }
            let written = insert
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| StoreError::db(ctx, e))?;
            for row in &written {
                let serial: &str = row.try_get(0).map_err(|e| StoreError::db(ctx, e))?;
                if let Some(i) = index_of.get(serial) {
                    inserted.insert(*i);
                }
            }
        }
        // The DNS names of the certificates actually inserted.
        for &i in &inserted {
            let item = &items[i];
            let serial = item.certificate.serial.to_string();
            let issued_at = to_micros(item.certificate.issued_at);
            for name in &item.dns {
                sqlx::query(sql::INSERT_CERT_DNS)
                    .bind(name)
                    .bind(issued_at)
                    .bind(&serial)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(ctx, e))?;
            }
        }
        let (outcomes, uses) = plan.finish(items, &inserted);
        for (id, n) in uses {
            let added = sqlx::query(sql::ADD_TOKEN_USES)
                .bind(&id)
                .bind(n)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(ctx, e))?;
            if added.rows_affected() != 1 {
                return Err(StoreError::other(
                    ctx,
                    "a token's uses changed under the write lock",
                ));
            }
        }
        tx.commit().await.map_err(|e| StoreError::db(ctx, e))?;
        Ok(outcomes)
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
        work: Work<T, SqliteRow>,
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
        let writer = self.writer.lock().await.take();
        if let Some(mut writer) = writer {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut writer)
                .await;
            let _ = writer.close().await;
        }
    }
}

#[cfg(test)]
mod tests;
