//! Runs one contract test against a fresh database: a temporary SQLite file,
//! or a uniquely named PostgreSQL schema that is dropped afterwards (even when
//! the test panics), so parallel tests and other crates' tests never meet.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use time::{Duration, OffsetDateTime};
use ward_store::{NewCertificate, NewToken, Store, StoreOptions};

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
}

/// What a contract test gets: a URL it may open as many handles to as it likes.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) kind: Kind,
    pub(crate) url: String,
}

impl Ctx {
    /// Opens a new handle (a "replica") with default options.
    pub(crate) async fn store(&self) -> Arc<dyn Store> {
        ward_store::connect(&self.url).await.unwrap()
    }

    /// Opens a new handle with a given pool size.
    pub(crate) async fn store_with_pool(&self, max_connections: u32) -> Arc<dyn Store> {
        let options = StoreOptions {
            max_connections,
            ..StoreOptions::default()
        };
        ward_store::connect_with(&self.url, &options).await.unwrap()
    }
}

/// Runs `body` against a fresh database of `kind`, then removes it.
pub(crate) async fn run<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ward.db");
            let url = format!("sqlite://{}", path.display());
            body(Ctx { kind, url }).await;
        }
        Kind::Postgres => {
            let Ok(base) = std::env::var("WARD_TEST_DATABASE_URL") else {
                println!("skipped: WARD_TEST_DATABASE_URL not set");
                return;
            };
            let schema = unique_schema();
            let mut admin = PgConnection::connect(&base).await.unwrap();
            let create = format!("CREATE SCHEMA \"{schema}\"");
            sqlx::query(AssertSqlSafe(create))
                .execute(&mut admin)
                .await
                .unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            // A spawned task turns a panic into a JoinError, so cleanup still runs.
            let outcome = tokio::spawn(body(Ctx { kind, url })).await;
            let drop = format!("DROP SCHEMA \"{schema}\" CASCADE");
            sqlx::query(AssertSqlSafe(drop))
                .execute(&mut admin)
                .await
                .unwrap();
            if let Err(e) = outcome {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// A schema name no other test (in this or another process) uses.
fn unique_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000_000;
    format!("ward_store_test_{}_{n}_{nanos}", std::process::id())
}

/// The current time at the stores' precision, so round trips compare equal.
pub(crate) fn now() -> OffsetDateTime {
    ward_store::truncate_to_storage_precision(OffsetDateTime::now_utc())
}

/// A usable token valid for an hour.
pub(crate) fn token(id: &str, max_uses: i64) -> NewToken {
    let mut hash = [0u8; 32];
    for (h, b) in hash.iter_mut().zip(id.bytes().rev()) {
        *h = b;
    }
    let now = now();
    NewToken {
        id: id.to_owned(),
        hash,
        spiffe_id: "spiffe://example.org/fn/a".parse().unwrap(),
        dns_names: vec!["a.example.org".into()],
        profile: ward_pki::issue::Profile::Peer,
        cert_ttl_secs: 3600,
        expires_at: now + Duration::hours(1),
        max_uses,
        allowed_cidrs: vec!["10.0.0.0/8".into()],
        created_at: now,
        common_name: None,
    }
}

/// A serial from hex (tests use valid ones only).
pub(crate) fn s(hex: &str) -> ward_pki::Serial {
    hex.parse().unwrap()
}

/// A certificate valid for an hour with distinctive DER bytes.
pub(crate) fn cert(serial: &str) -> NewCertificate {
    let now = now();
    NewCertificate {
        serial: s(serial),
        spiffe_id: Some("spiffe://example.org/fn/a".parse().unwrap()),
        token_id: None,
        not_before: now,
        not_after: now + Duration::hours(1),
        der: serial.as_bytes().to_vec(),
        fingerprint: "ab".repeat(32),
        issued_at: now,
        renewed_from: None,
        origin: ward_store::Origin::Token,
        profile: Some("peer".into()),
    }
}
