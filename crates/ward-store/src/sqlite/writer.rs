//! SQLite's write path: one OS thread that owns the process's write
//! connection (rusqlite, the same SQLite library sqlx links) and runs whole
//! batches.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and sends
//! every statement there and back (`BEGIN`, each `INSERT`, `SAVEPOINT`,
//! `COMMIT`): a batch of writes cost a dozen or more thread hand-offs. Here
//! a batch is one message: the group-commit tasks ([`crate::batch`],
//! [`crate::group`]) cut a batch as before and send it whole; this thread
//! runs it in one `BEGIN IMMEDIATE` … `COMMIT` with statements prepared once
//! per connection (rusqlite's statement cache) and sends one reply after the
//! `COMMIT` returned. The writes of [`crate::group`] are the shared store
//! logic's async closures; their statements complete synchronously here, so
//! each closure runs to its end in one poll on this thread.
//!
//! Settings are the ones sqlx's writer had: WAL, `synchronous=FULL`, the
//! busy timeout, foreign keys, temporary structures in memory and the
//! writer's larger page cache.
//!
//! Must never: reply before the transaction holding a batch has committed
//! (or failed and rolled back), keep anything of a write that failed, or
//! leave a transaction open after a batch (a panicking write rolls its
//! batch back and fails it).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use std::{fmt, thread};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use sqlx::error::{DatabaseError, ErrorKind};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::StoreError;
use crate::batch::{BatchResult, Item, plan, token_ids};
use crate::dialect::{Columns, Param, Statements};
use crate::model::{encode_optional_spiffe_id, from_micros, to_micros};
use crate::shared::token_from_row;
use crate::sql;

/// Prepared statements kept per connection: every statement the store
/// writes with, plus the batch inserts of each size.
const STATEMENT_CACHE: usize = 128;

/// A write transaction's erased write (see [`crate::group::Job`]).
pub(crate) type Job = crate::group::Job;

/// What the writer thread is asked to do.
enum Request {
    /// Certificate records in one transaction ([`crate::batch`]).
    Certificates(Vec<Item>, oneshot::Sender<BatchResult>),
    /// Small writes in one transaction, each in a savepoint ([`crate::group`]).
    Writes(Vec<Job>, oneshot::Sender<Result<(), StoreError>>),
    /// Checkpoint the WAL and close the connection; later requests fail.
    Close(oneshot::Sender<()>),
}

/// The handle to the writer thread; the thread ends once every handle is
/// dropped and the queued requests are answered.
#[derive(Clone)]
pub(crate) struct WriterThread {
    queue: std_mpsc::Sender<Request>,
}

impl WriterThread {
    /// Opens the write connection to the (existing, migrated) database file
    /// on a new thread; `busy` is how long a statement waits for another
    /// process's write lock.
    pub(crate) async fn open(
        path: &Path,
        busy: Duration,
        cache_kib: u32,
    ) -> Result<Self, StoreError> {
        let (queue, rx) = std_mpsc::channel();
        let (ready, opened) = oneshot::channel();
        let path = path.to_owned();
        thread::Builder::new()
            .name("ward-sqlite-writer".into())
            .spawn(move || match connect(&path, busy, cache_kib) {
                Ok(conn) => {
                    let _ = ready.send(Ok(()));
                    serve(conn, &rx);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Unavailable {
                context: "starting the SQLite writer thread".into(),
                source: Box::new(e),
            })?;
        opened.await.map_err(|_| stopped())??;
        Ok(WriterThread { queue })
    }

    /// Writes certificate records in one transaction (see
    /// [`crate::batch::BatchWriter`]); answered after the commit.
    pub(crate) async fn certificates(&self, items: Vec<Item>) -> BatchResult {
        let (reply, done) = oneshot::channel();
        self.send(Request::Certificates(items, reply))?;
        done.await.map_err(|_| stopped())?
    }

    /// Runs `jobs` in one transaction, each in its own savepoint; answered
    /// after the commit.
    pub(crate) async fn writes(&self, jobs: Vec<Job>) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.send(Request::Writes(jobs, reply))?;
        done.await.map_err(|_| stopped())?
    }

    /// Checkpoints the WAL into the database file and closes the write
    /// connection, after every request queued before; later writes fail.
    pub(crate) async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Request::Close(reply)).is_ok() {
            let _ = done.await;
        }
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.queue.send(request).map_err(|_| stopped())
    }
}

/// The error a writer gets when the thread is gone or the store is closed.
fn stopped() -> StoreError {
    StoreError::Unavailable {
        context: "writing to the SQLite database".into(),
        source: "the store is closed".into(),
    }
}

/// Opens the write connection with sqlx's writer settings.
fn connect(path: &Path, busy: Duration, cache_kib: u32) -> Result<Connection, StoreError> {
    let ctx = || format!("opening SQLite database {} for writing", path.display());
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| StoreError::db(ctx(), to_sqlx(e)))?;
    let settings = || -> rusqlite::Result<()> {
        conn.busy_timeout(busy)?;
        // `journal_mode` answers with the mode it set.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidQuery);
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{cache_kib};"
        ))
    };
    settings().map_err(|e| StoreError::db(ctx(), to_sqlx(e)))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The thread: answer each request in order until every handle is gone.
fn serve(conn: Connection, rx: &std_mpsc::Receiver<Request>) {
    let mut conn = Some(conn);
    while let Ok(request) = rx.recv() {
        match request {
            Request::Certificates(items, reply) => {
                let result = match conn.as_mut() {
                    Some(c) => guarded(c, "committing certificates", |c| {
                        write_certificates(c, &items)
                    }),
                    None => Err(stopped()),
                };
                // A waiter that gave up is fine: the batch is committed.
                let _ = reply.send(result);
            }
            Request::Writes(jobs, reply) => {
                let result = match conn.as_mut() {
                    Some(c) => guarded(c, "committing a batch of writes", |c| run_writes(c, jobs)),
                    None => Err(stopped()),
                };
                let _ = reply.send(result);
            }
            Request::Close(reply) => {
                if let Some(c) = conn.take() {
                    // Best effort: a failure leaves the WAL for the next
                    // open to fold in.
                    let _ = c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
                    let _ = c.close();
                }
                let _ = reply.send(());
            }
        }
    }
}

/// Runs one batch; a panic inside it fails the batch (rolled back), not the
/// thread, and no batch leaves a transaction open.
fn guarded<T>(
    conn: &mut Connection,
    ctx: &'static str,
    batch: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let result = catch_unwind(AssertUnwindSafe(|| batch(&mut *conn)))
        .unwrap_or_else(|_| Err(StoreError::other(ctx, "a write panicked")));
    if !conn.is_autocommit() {
        // Only a failed batch gets here; its error is what the waiters see.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// Takes the database write lock for a new transaction.
fn begin(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| StoreError::db("starting a write transaction", to_sqlx(e)))
}

/// Runs the small writes of one batch (see [`crate::group`]).
fn run_writes(conn: &mut Connection, jobs: Vec<Job>) -> Result<(), StoreError> {
    let ctx = "committing a batch of writes";
    let db = |e| StoreError::db(ctx, to_sqlx(e));
    begin(conn)?;
    let alone = jobs.len() == 1;
    if !alone {
        conn.execute_batch("SAVEPOINT ward_write").map_err(db)?;
    }
    let last = jobs.len().saturating_sub(1);
    for (n, job) in jobs.into_iter().enumerate() {
        let kept = block_on(job(&mut Tx { conn: &mut *conn }));
        if alone {
            if !kept {
                // Alone, a failed write rolls back the whole transaction.
                conn.execute_batch("ROLLBACK").map_err(db)?;
                return Ok(());
            }
            continue;
        }
        // Undoing a failed write fails if SQLite already rolled back the
        // whole transaction: the batch fails with it.
        let between = match (kept, n == last) {
            (true, false) => "RELEASE ward_write; SAVEPOINT ward_write",
            (false, false) => "ROLLBACK TO ward_write; RELEASE ward_write; SAVEPOINT ward_write",
            (true, true) => "RELEASE ward_write",
            (false, true) => "ROLLBACK TO ward_write; RELEASE ward_write",
        };
        conn.execute_batch(between).map_err(db)?;
    }
    conn.execute_batch("COMMIT").map_err(db)
}

/// Writes certificate records in one transaction: the SQLite half of
/// [`crate::batch`] (plan from the locked token rows, insert what the plan
/// allows, index DNS names, add the uses taken, commit).
fn write_certificates(conn: &mut Connection, items: &[Item]) -> BatchResult {
    let ctx = "committing certificates";
    let db = |e| StoreError::db(ctx, e);
    begin(conn)?;
    // The write lock is held: nobody changes these rows until commit.
    let mut tokens = std::collections::HashMap::new();
    for id in token_ids(items) {
        let rows = fetch_all(conn, sql::TOKEN_BY_ID, &[Param::Text(&id)]).map_err(db)?;
        if let Some(token) = rows.first().map(token_from_row).transpose()? {
            tokens.insert(id, token);
        }
    }
    let plan = plan(items, &tokens);
    if plan.is_empty() {
        conn.execute_batch("ROLLBACK").map_err(|e| db(to_sqlx(e)))?;
        return Ok(plan.finish(items, &std::collections::HashSet::new()).0);
    }
    let planned: Vec<(usize, &crate::NewCertificate)> = plan.inserts(items).collect();
    let mut inserted = std::collections::HashSet::with_capacity(planned.len());
    let mut rest = &planned[..];
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(sql::insert_chunk_len(rest.len()));
        rest = tail;
        insert_chunk(conn, chunk, &mut inserted).map_err(|e| db(to_sqlx(e)))?;
    }
    // The DNS names of the certificates actually inserted.
    for &i in &inserted {
        let c = &items[i].certificate;
        let serial = c.serial.to_string();
        for name in &items[i].dns {
            let params = [
                Param::Text(name),
                Param::Int(to_micros(c.issued_at)),
                Param::Text(&serial),
            ];
            execute(conn, sql::INSERT_CERT_DNS, &params).map_err(db)?;
        }
    }
    let (outcomes, uses) = plan.finish(items, &inserted);
    for (id, n) in uses {
        let added = execute(
            conn,
            sql::ADD_TOKEN_USES,
            &[Param::Text(&id), Param::Int(n)],
        )
        .map_err(db)?;
        if added != 1 {
            return Err(StoreError::other(
                ctx,
                "a token's uses changed under the write lock",
            ));
        }
    }
    conn.execute_batch("COMMIT").map_err(|e| db(to_sqlx(e)))?;
    Ok(outcomes)
}

/// Inserts one chunk of planned certificates and notes which were inserted
/// (a serial already stored is skipped by `ON CONFLICT DO NOTHING`).
fn insert_chunk(
    conn: &Connection,
    chunk: &[(usize, &crate::NewCertificate)],
    inserted: &mut std::collections::HashSet<usize>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(sql::insert_rows_sql(chunk.len()))?;
    let mut index_of = std::collections::HashMap::with_capacity(chunk.len());
    let mut p = 0;
    let mut bind = |stmt: &mut rusqlite::CachedStatement<'_>, v: &dyn rusqlite::ToSql| {
        p += 1;
        stmt.raw_bind_parameter(p, v)
    };
    for (i, c) in chunk {
        let serial = c.serial.to_string();
        bind(&mut stmt, &serial)?;
        bind(&mut stmt, &encode_optional_spiffe_id(c.spiffe_id.as_ref()))?;
        bind(&mut stmt, &c.token_id)?;
        bind(&mut stmt, &to_micros(c.not_before))?;
        bind(&mut stmt, &to_micros(c.not_after))?;
        bind(&mut stmt, &c.der)?;
        bind(&mut stmt, &c.fingerprint)?;
        bind(&mut stmt, &to_micros(c.issued_at))?;
        bind(&mut stmt, &c.renewed_from.as_ref().map(ToString::to_string))?;
        bind(&mut stmt, &c.origin.as_str())?;
        bind(&mut stmt, &c.profile)?;
        index_of.insert(serial, *i);
    }
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        let serial = row.get_ref(0)?.as_str()?;
        if let Some(i) = index_of.get(serial) {
            inserted.insert(*i);
        }
    }
    Ok(())
}

/// Polls a future that completes without waiting (its statements run
/// synchronously) on this thread; should it wait after all, the thread
/// sleeps until woken.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => thread::park(),
        }
    }
}

/// A write transaction on the writer connection, as the shared logic sees it.
struct Tx<'c> {
    conn: &'c mut Connection,
}

#[async_trait]
impl Statements for Tx<'_> {
    type Row = Row;

    async fn fetch_all(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, sqlx::Error> {
        fetch_all(self.conn, sql, params)
    }

    async fn fetch_one(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Row, sqlx::Error> {
        fetch_all(self.conn, sql, params)?
            .into_iter()
            .next()
            .ok_or(sqlx::Error::RowNotFound)
    }

    async fn execute(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<u64, sqlx::Error> {
        execute(self.conn, sql, params)
    }
}

/// Prepares (once per connection) `sql` and binds `params` the way sqlx
/// binds them: `$N` and `?N` take the N-th parameter, a bare `?` the next.
fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
    params: &[Param<'_>],
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(sql)?;
    for i in 1..=stmt.parameter_count() {
        let n = match stmt.parameter_name(i) {
            Some(name) => name
                .get(1..)
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?,
            None => i,
        };
        let p = n
            .checked_sub(1)
            .and_then(|n| params.get(n))
            .ok_or(rusqlite::Error::InvalidParameterCount(n, params.len()))?;
        match *p {
            Param::Text(v) => stmt.raw_bind_parameter(i, v)?,
            Param::OptText(v) => stmt.raw_bind_parameter(i, v)?,
            Param::Bytes(v) => stmt.raw_bind_parameter(i, v)?,
            Param::Int(v) => stmt.raw_bind_parameter(i, v)?,
            Param::Reason(v) => stmt.raw_bind_parameter(i, v)?,
            Param::Flag(v) => stmt.raw_bind_parameter(i, v)?,
            Param::Time(t) => stmt.raw_bind_parameter(i, to_micros(t))?,
        }
    }
    Ok(stmt)
}

/// Every row `sql` returns.
fn fetch_all(conn: &Connection, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, sqlx::Error> {
    let run = || -> rusqlite::Result<Vec<Row>> {
        let mut stmt = prepare(conn, sql, params)?;
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..width)
                .map(|i| row.get::<_, Value>(i))
                .collect::<rusqlite::Result<Vec<Value>>>()?;
            out.push(Row(values));
        }
        Ok(out)
    };
    run().map_err(to_sqlx)
}

/// Runs `sql` to its end (rows it returns are dropped) and returns how many
/// rows it changed.
fn execute(conn: &Connection, sql: &str, params: &[Param<'_>]) -> Result<u64, sqlx::Error> {
    let run = || -> rusqlite::Result<u64> {
        let mut stmt = prepare(conn, sql, params)?;
        let readonly = stmt.readonly();
        let mut rows = stmt.raw_query();
        while rows.next()?.is_some() {}
        Ok(if readonly { 0 } else { conn.changes() })
    };
    run().map_err(to_sqlx)
}

/// A result row of the writer connection, its values owned.
#[derive(Debug)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    fn value(&self, i: usize) -> Result<&Value, sqlx::Error> {
        self.0.get(i).ok_or(sqlx::Error::ColumnIndexOutOfBounds {
            index: i,
            len: self.0.len(),
        })
    }

    /// The column as an integer, or `None` when it is NULL.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, sqlx::Error> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(*n)),
            other => Err(mismatch(i, "INTEGER", other)),
        }
    }
}

/// A column that does not hold the type asked for.
fn mismatch(i: usize, wanted: &str, got: &Value) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: format!("expected {wanted}, found {:?}", got.data_type()).into(),
    }
}

/// A NULL in a column that may not be NULL.
fn null(i: usize) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: "unexpected NULL".into(),
    }
}

impl Columns for Row {
    fn text(&self, i: usize) -> Result<String, sqlx::Error> {
        self.opt_text(i)?.ok_or_else(|| null(i))
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>, sqlx::Error> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            other => Err(mismatch(i, "TEXT", other)),
        }
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>, sqlx::Error> {
        match self.value(i)? {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.clone().into_bytes()),
            Value::Null => Err(null(i)),
            other => Err(mismatch(i, "BLOB", other)),
        }
    }

    fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
        self.opt_int(i)?.ok_or_else(|| null(i))
    }

    fn reason(&self, i: usize) -> Result<Option<i16>, sqlx::Error> {
        self.opt_int(i)?
            .map(|n| {
                i16::try_from(n).map_err(|e| sqlx::Error::ColumnDecode {
                    index: i.to_string(),
                    source: Box::new(e),
                })
            })
            .transpose()
    }

    fn flag(&self, i: usize) -> Result<bool, sqlx::Error> {
        Ok(self.int(i)? != 0)
    }

    fn time(&self, i: usize) -> Result<OffsetDateTime, StoreError> {
        let micros = self
            .int(i)
            .map_err(|e| StoreError::other("decoding a time column", e))?;
        from_micros(micros)
    }

    fn opt_time(&self, i: usize) -> Result<Option<OffsetDateTime>, StoreError> {
        let micros = self
            .opt_int(i)
            .map_err(|e| StoreError::other("decoding a time column", e))?;
        micros.map(from_micros).transpose()
    }
}

/// An error SQLite reported on the writer connection, as sqlx reports its
/// own: the extended result code is the `code()`, and constraint violations
/// have their [`ErrorKind`], so the store maps both backends' errors alike.
#[derive(Debug)]
pub(crate) struct WriterError {
    /// SQLite's extended result code.
    pub(crate) code: i32,
    message: String,
}

impl fmt::Display for WriterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for WriterError {}

impl DatabaseError for WriterError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        // SQLITE_CONSTRAINT_{UNIQUE, PRIMARYKEY, FOREIGNKEY, NOTNULL, CHECK}
        match self.code {
            2067 | 1555 => ErrorKind::UniqueViolation,
            787 => ErrorKind::ForeignKeyViolation,
            1299 => ErrorKind::NotNullViolation,
            275 => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// Maps a rusqlite error to the sqlx error the store's error mapping reads.
pub(crate) fn to_sqlx(err: rusqlite::Error) -> sqlx::Error {
    match err {
        rusqlite::Error::SqliteFailure(e, message) => {
            sqlx::Error::Database(Box::new(WriterError {
                code: e.extended_code,
                message: message.unwrap_or_else(|| e.to_string()),
            }))
        }
        other => sqlx::Error::Protocol(format!("SQLite writer: {other}")),
    }
}

#[cfg(test)]
mod tests;
