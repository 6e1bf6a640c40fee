//! The narrow surface the shared store logic ([`crate::shared`]) needs from
//! a SQL driver: bind backend-neutral parameters, run a statement on the
//! read pool or inside a write transaction, read a row's columns by position.
//!
//! SQLite and PostgreSQL differ here only in how a time is bound and read
//! (microseconds in an INTEGER, or a `timestamptz`), so the surface is
//! written once, as the [`dialect!`] macro, and instantiated for each driver
//! below: sqlx's generic bounds would otherwise have to be repeated on every
//! item that touches a statement. Nothing here decides what to store.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;
use crate::model::{from_micros, to_micros, truncate_to_storage_precision};

/// One statement parameter, in the Rust type both backends bind it as.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    /// A text value.
    Text(&'a str),
    /// A nullable text value.
    OptText(Option<&'a str>),
    /// A blob.
    Bytes(&'a [u8]),
    /// A 64-bit integer.
    Int(i64),
    /// A nullable RFC 5280 reason code.
    Reason(Option<i16>),
    /// A boolean.
    Flag(bool),
    /// A time, at the stores' precision.
    Time(OffsetDateTime),
}

/// A result row whose columns are read by position.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, i: usize) -> Result<String, sqlx::Error>;
    /// A nullable text column.
    fn opt_text(&self, i: usize) -> Result<Option<String>, sqlx::Error>;
    /// A blob column.
    fn bytes(&self, i: usize) -> Result<Vec<u8>, sqlx::Error>;
    /// A 64-bit integer column.
    fn int(&self, i: usize) -> Result<i64, sqlx::Error>;
    /// A nullable reason-code column.
    fn reason(&self, i: usize) -> Result<Option<i16>, sqlx::Error>;
    /// A boolean column.
    fn flag(&self, i: usize) -> Result<bool, sqlx::Error>;
    /// A time column, in UTC.
    fn time(&self, i: usize) -> Result<OffsetDateTime, StoreError>;
    /// A nullable time column, in UTC.
    fn opt_time(&self, i: usize) -> Result<Option<OffsetDateTime>, StoreError>;
}

/// Where statements run: the read pool, or a write transaction.
#[async_trait]
pub(crate) trait Statements: Send {
    /// The driver's row.
    type Row: Columns + Send;

    /// Every row the statement returns.
    async fn fetch_all(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Vec<Self::Row>, sqlx::Error>;

    /// The statement's first row; no row is an error.
    async fn fetch_one(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Self::Row, sqlx::Error>;

    /// Runs the statement and returns how many rows it changed.
    async fn execute(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<u64, sqlx::Error>;
}

/// A boxed, sendable future borrowing for `'a`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The statements of one write transaction, as the shared logic sees them.
pub(crate) type WriteTx<'t, R> = dyn Statements<Row = R> + 't;

/// What one write transaction does, given its statements (see
/// [`crate::shared::Driver::write`]).
pub(crate) type Work<T, R> =
    Box<dyn for<'t> FnOnce(&'t mut WriteTx<'_, R>) -> BoxFuture<'t, Result<T, StoreError>> + Send>;

/// Instantiates [`Columns`] for a driver's row and [`Statements`] for its
/// pool and its transactions. `$time` is the Rust type a time column is
/// bound and read as; `$encode` and `$decode` convert it.
macro_rules! dialect {
    ($db:ty, $row:ty, $time:ty, $encode:expr, $decode:expr) => {
        impl Columns for $row {
            fn text(&self, i: usize) -> Result<String, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn bytes(&self, i: usize) -> Result<Vec<u8>, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn reason(&self, i: usize) -> Result<Option<i16>, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn flag(&self, i: usize) -> Result<bool, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn time(&self, i: usize) -> Result<OffsetDateTime, StoreError> {
                let raw: $time = sqlx::Row::try_get(self, i)
                    .map_err(|e| StoreError::other("decoding a time column", e))?;
                $decode(raw)
            }
            fn opt_time(&self, i: usize) -> Result<Option<OffsetDateTime>, StoreError> {
                let raw: Option<$time> = sqlx::Row::try_get(self, i)
                    .map_err(|e| StoreError::other("decoding a time column", e))?;
                raw.map($decode).transpose()
            }
        }

        impl Bind for $db {
            fn bind<'q>(
                params: &[Param<'_>],
                sql: &'static str,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                let mut query = sqlx::query(sql);
                for p in params {
                    query = match *p {
                        Param::Text(v) => query.bind(v),
                        Param::OptText(v) => query.bind(v),
                        Param::Bytes(v) => query.bind(v),
                        Param::Int(v) => query.bind(v),
                        Param::Reason(v) => query.bind(v),
                        Param::Flag(v) => query.bind(v),
                        Param::Time(t) => query.bind($encode(t)),
                    };
                }
                query
            }
        }

        dialect!(@statements $db, $row, sqlx::Transaction<'_, $db>, |tx| &mut **tx);
        dialect!(@statements $db, $row, &sqlx::Pool<$db>, |pool| *pool);
    };
    (@statements $db:ty, $row:ty, $on:ty, |$on_self:ident| $exec:expr) => {
        #[async_trait]
        impl Statements for $on {
            type Row = $row;

            async fn fetch_all(
                &mut self,
                sql: &'static str,
                params: &[Param<'_>],
            ) -> Result<Vec<$row>, sqlx::Error> {
                let $on_self = self;
                <$db as Bind>::bind(params, sql).fetch_all($exec).await
            }

            async fn fetch_one(
                &mut self,
                sql: &'static str,
                params: &[Param<'_>],
            ) -> Result<$row, sqlx::Error> {
                let $on_self = self;
                <$db as Bind>::bind(params, sql).fetch_one($exec).await
            }

            async fn execute(
                &mut self,
                sql: &'static str,
                params: &[Param<'_>],
            ) -> Result<u64, sqlx::Error> {
                let $on_self = self;
                let done = <$db as Bind>::bind(params, sql).execute($exec).await?;
                Ok(done.rows_affected())
            }
        }
    };
}

/// Builds a driver's query from SQL text and neutral parameters.
trait Bind: sqlx::Database {
    /// The query for `sql` with `params` bound in order.
    fn bind<'q>(
        params: &[Param<'_>],
        sql: &'static str,
    ) -> sqlx::query::Query<'q, Self, <Self as sqlx::Database>::Arguments>;
}

dialect!(
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    i64,
    to_micros,
    from_micros
);
dialect!(
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    OffsetDateTime,
    truncate_to_storage_precision,
    |t: OffsetDateTime| Ok::<_, StoreError>(t)
);
