//! Group commit, seen from outside: concurrent callers whose records share
//! transactions each get the outcome they would have had alone, and a
//! transaction that fails fails every caller in it and writes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::sync::Barrier;
use ward_store::{Store, StoreError};

use crate::harness::{Ctx, Kind, cert, now, s, token};

/// What each call of [`mixed_good_and_refused_items_share_batches`] sends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Call {
    Good,
    Single,
    Used,
    Revoked,
    Expired,
    Missing,
    StoredSerial,
    Renewal,
    RenewalOfMissingToken,
}

/// 300 concurrent calls, mixed: good ones commit, each refused one gets its
/// own reason, a 1-use token raced by 60 of them issues exactly once, and
/// the token uses and rows match the successes exactly.
pub(crate) async fn mixed_good_and_refused_items_share_batches(ctx: Ctx) {
    let store = ctx.store().await;
    let now = now();
    let good = token("tok_00000000000000f0", 0);
    let single = token("tok_00000000000000f1", 1);
    let used = token("tok_00000000000000f2", 1);
    let revoked = token("tok_00000000000000f3", 0);
    let mut expired = token("tok_00000000000000f4", 0);
    expired.expires_at = now;
    for t in [&good, &single, &used, &revoked, &expired] {
        store.create_token(t).await.unwrap();
    }
    store.revoke_token(&revoked.id, false, now).await.unwrap();
    store
        .issue_with_token(&used.id, now, &cert("f2"))
        .await
        .unwrap();
    store.record_certificate(&cert("f5")).await.unwrap();

    const KINDS: [Call; 12] = [
        Call::Good,
        Call::Single,
        Call::Used,
        Call::Good,
        Call::Revoked,
        Call::Single,
        Call::Expired,
        Call::Missing,
        Call::StoredSerial,
        Call::Renewal,
        Call::Single,
        Call::RenewalOfMissingToken,
    ];
    let calls: Vec<Call> = (0..300).map(|i| KINDS[i % KINDS.len()]).collect();
    let barrier = Arc::new(Barrier::new(calls.len()));
    let tasks: Vec<_> = calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let (store, barrier, call) = (store.clone(), barrier.clone(), *call);
            let ids = [&good.id, &single.id, &used.id, &revoked.id, &expired.id].map(Clone::clone);
            tokio::spawn(async move {
                let serial = format!("f{i:04x}");
                barrier.wait().await;
                let issue = |id: &str| {
                    let (store, id, c) = (store.clone(), id.to_owned(), cert(&serial));
                    async move { store.issue_with_token(&id, now, &c).await }
                };
                match call {
                    Call::Good => issue(&ids[0]).await,
                    Call::Single => issue(&ids[1]).await,
                    Call::Used => issue(&ids[2]).await,
                    Call::Revoked => issue(&ids[3]).await,
                    Call::Expired => issue(&ids[4]).await,
                    Call::Missing => issue("tok_missing").await,
                    Call::StoredSerial => store.issue_with_token(&ids[0], now, &cert("F5")).await,
                    Call::Renewal => {
                        let mut c = cert(&serial);
                        c.token_id = Some(ids[0].clone());
                        c.renewed_from = Some(s("f2"));
                        store.record_certificate(&c).await
                    }
                    Call::RenewalOfMissingToken => {
                        let mut c = cert(&serial);
                        c.token_id = Some("tok_missing".into());
                        store.record_certificate(&c).await
                    }
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }

    let mut single_wins = 0;
    let mut good_issued = 0;
    let mut renewals = 0;
    for (call, result) in calls.iter().zip(&results) {
        match (call, result) {
            (Call::Good, Ok(())) => good_issued += 1,
            (Call::Renewal, Ok(())) => renewals += 1,
            (Call::Single, Ok(())) => single_wins += 1,
            (Call::Single, Err(StoreError::TokenExhausted))
            | (Call::Used, Err(StoreError::TokenExhausted))
            | (Call::Revoked, Err(StoreError::TokenRevoked))
            | (Call::Expired, Err(StoreError::TokenExpired))
            | (Call::Missing, Err(StoreError::TokenNotFound))
            | (Call::RenewalOfMissingToken, Err(StoreError::TokenNotFound))
            | (Call::StoredSerial, Err(StoreError::DuplicateSerial)) => {}
            (call, result) => panic!("{call:?}: unexpected {result:?}"),
        }
    }
    let count = |c: Call| calls.iter().filter(|k| **k == c).count();
    assert_eq!(single_wins, 1, "a 1-use token issued {single_wins} times");
    assert_eq!(good_issued, count(Call::Good));
    assert_eq!(renewals, count(Call::Renewal));
    let uses = |id: String| {
        let store = store.clone();
        async move { store.token(&id).await.unwrap().unwrap().uses }
    };
    assert_eq!(
        uses(good.id.clone()).await as usize,
        good_issued,
        "duplicates gave their use back"
    );
    assert_eq!(uses(single.id.clone()).await, 1);
    assert_eq!(uses(used.id.clone()).await, 1);
    assert_eq!(uses(revoked.id.clone()).await, 0);
    assert_eq!(uses(expired.id.clone()).await, 0);
    // f2 and f5 from before, plus every success.
    let expected = 2 + good_issued + renewals + single_wins;
    assert_eq!(store.count_certificates().await.unwrap() as usize, expected);
    assert_eq!(
        store.certificate(&s("f5")).await.unwrap().unwrap().der,
        b"f5"
    );
}

/// A trigger makes every certificate insert fail: each caller of the batch
/// gets an error, no row and no token use is written, and once the fault is
/// gone the same store commits again.
pub(crate) async fn a_failing_transaction_fails_every_caller_and_writes_nothing(ctx: Ctx) {
    let store = ctx.store().await;
    let t = token("tok_00000000000000e0", 0);
    store.create_token(&t).await.unwrap();
    store
        .issue_with_token(&t.id, now(), &cert("e0"))
        .await
        .unwrap();

    let (fail, heal): (&[&str], &[&str]) = match ctx.kind {
        Kind::Sqlite => (
            &["CREATE TRIGGER fail_inserts BEFORE INSERT ON certificates \
               BEGIN SELECT RAISE(ABORT, 'injected fault'); END"],
            &["DROP TRIGGER fail_inserts"],
        ),
        Kind::Postgres => (
            &[
                "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
                "CREATE TRIGGER fail_inserts BEFORE INSERT ON certificates \
                 FOR EACH ROW EXECUTE FUNCTION fail_insert()",
            ],
            &[
                "DROP TRIGGER fail_inserts ON certificates",
                "DROP FUNCTION fail_insert()",
            ],
        ),
    };
    execute(&ctx, fail).await;
    let results = issue_many(&store, &t.id, "e1", 40).await;
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(matches!(e, StoreError::Other { .. }), "{e:?}");
    }
    assert_eq!(store.count_certificates().await.unwrap(), 1);
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 1);

    execute(&ctx, heal).await;
    let results = issue_many(&store, &t.id, "e2", 40).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(store.count_certificates().await.unwrap(), 41);
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 41);
}

/// PostgreSQL goes away under a batch (its connection is terminated while
/// the batch waits for a token row lock): every caller of that batch gets
/// `Unavailable` (HTTP 503 at the CA) and nothing of it is written; callers
/// in later batches commit once the database is back, and the rows and
/// uses match the successes exactly.
pub(crate) async fn storage_lost_mid_batch_is_unavailable_for_its_callers(ctx: Ctx) {
    let Kind::Postgres = ctx.kind else {
        return; // SQLite's equivalent (busy beyond the timeout) is a unit test.
    };
    let store = ctx.store().await;
    let t = token("tok_00000000000000d0", 0);
    store.create_token(&t).await.unwrap();
    let mut holder = PgConnection::connect(&ctx.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM tokens WHERE id = $1 FOR UPDATE")
        .bind(&t.id)
        .execute(&mut holder)
        .await
        .unwrap();

    let issuing = {
        let (store, id) = (store.clone(), t.id.clone());
        tokio::spawn(async move { issue_many(&store, &id, "d1", 30).await })
    };
    // Wait (bounded) until the batch's backend is blocked on the row lock.
    let mut admin = PgConnection::connect(&ctx.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%FOR UPDATE%' AND query LIKE '%ANY($1)%' \
             AND datname = current_database()",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        // Other tests' schemas are in the same database: ours is the one
        // blocked by our holder.
        let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut holder)
            .await
            .unwrap();
        let mut ours = None;
        for pid in pids {
            let blockers: Vec<i32> = sqlx::query_scalar("SELECT unnest(pg_blocking_pids($1))")
                .bind(pid)
                .fetch_all(&mut admin)
                .await
                .unwrap();
            if blockers.contains(&holder_pid) {
                ours = Some(pid);
            }
        }
        if let Some(pid) = ours {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the batch never blocked on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(waiting)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed);
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    let results = issuing.await.unwrap();
    let issued = results.iter().filter(|r| r.is_ok()).count();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert!(failed >= 1, "the terminated batch had at least one caller");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.is_unavailable(), "{r:?}");
    }
    assert_eq!(store.count_certificates().await.unwrap() as usize, issued);
    assert_eq!(
        store.token(&t.id).await.unwrap().unwrap().uses as usize,
        issued
    );
    // The pool replaced the dead connection.
    store
        .issue_with_token(&t.id, now(), &cert("d2"))
        .await
        .unwrap();
}

/// Issues `n` certificates from `token_id` concurrently (serials `prefix` + i).
async fn issue_many(
    store: &Arc<dyn Store>,
    token_id: &str,
    prefix: &str,
    n: usize,
) -> Vec<Result<(), StoreError>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (store, id, c) = (
                store.clone(),
                token_id.to_owned(),
                cert(&format!("{prefix}{i:04x}")),
            );
            tokio::spawn(async move { store.issue_with_token(&id, now(), &c).await })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// Runs statements on a separate connection to the test database.
async fn execute(ctx: &Ctx, statements: &[&str]) {
    match ctx.kind {
        Kind::Sqlite => {
            let mut c = SqliteConnection::connect(&ctx.url).await.unwrap();
            for s in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
        Kind::Postgres => {
            let mut c = PgConnection::connect(&ctx.url).await.unwrap();
            for s in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Records the size of real certificates (1 KiB of DER each), 200 callers
/// at once on a token with 150 uses: batches span several write statements
/// (PostgreSQL cuts them to fit one TLS record), and the limit still holds
/// exactly, wherever in a batch it falls.
pub(crate) async fn certificate_sized_records_keep_the_use_limit_across_statements(ctx: Ctx) {
    let store = ctx.store().await;
    let now = now();
    let limited = token("tok_00000000000000e0", 150);
    store.create_token(&limited).await.unwrap();
    let barrier = Arc::new(Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), limited.id.clone());
            tokio::spawn(async move {
                let mut c = cert(&format!("e{i:04x}"));
                c.der = vec![u8::try_from(i % 251).unwrap(); 1024];
                barrier.wait().await;
                store.issue_with_token(&id, now, &c).await
            })
        })
        .collect();
    let mut issued = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => issued += 1,
            Err(StoreError::TokenExhausted) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(issued, 150);
    assert_eq!(store.token(&limited.id).await.unwrap().unwrap().uses, 150);
    assert_eq!(store.count_certificates().await.unwrap(), 150);
}
