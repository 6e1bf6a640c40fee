//! The store contract, run against both backends: every test in `basic`,
//! `batch` and `concurrency` exists twice, as `sqlite::NAME` (temporary file) and
//! `postgres::NAME` (a fresh schema in `WARD_TEST_DATABASE_URL`, skipped with a
//! message when that is unset). The CA relies on exactly these guarantees.

// The contract bodies are plain async fns called from #[tokio::test]s, which
// clippy's allow-unwrap-in-tests does not see as tests; a failed unwrap is the
// intended failure report here.
#![allow(clippy::unwrap_used)]

mod acme;
mod basic;
mod batch;
mod concurrency;
mod console;
mod harness;
mod roots;
mod watch;

/// Generates a `#[tokio::test]` per backend for each named contract test.
macro_rules! on_both_backends {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::harness::run(crate::harness::Kind::Sqlite, crate::$module::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::harness::run(crate::harness::Kind::Postgres, crate::$module::$name).await;
                }
            )*
        }
    };
}

on_both_backends!(
    acme::acme_valid_authz_round_trip,
    acme::acme_one_replacement_per_certificate,
    acme::acme_eab_revocation,
    acme::acme_prune_is_bounded_and_keeps_live_state,
    acme::acme_nonces_are_used_once_across_replicas,
    basic::tokens_round_trip,
    basic::issue_consumes_one_use_and_binds_certificate,
    basic::failed_issue_changes_nothing,
    basic::record_certificate_never_overwrites,
    basic::revoke_certificate_is_idempotent,
    basic::revoke_token_kills_its_certificates,
    basic::crl_lists_only_unexpired_revocations,
    basic::list_and_count_certificates,
    basic::reopening_keeps_data_and_reruns_migrations,
    basic::ping_and_crl_numbers_follow_the_clock,
    basic::origins_and_common_names_round_trip,
    basic::open_existing_refuses_a_missing_store,
    console::console_searches,
    console::console_overview,
    console::console_login_links,
    console::console_dns_search,
    console::console_dns_backfill,
    console::console_acme_lists,
    concurrency::one_use_token_under_50_concurrent_calls,
    concurrency::unlimited_token_under_1000_concurrent_calls,
    concurrency::two_replicas_never_double_spend,
    concurrency::crl_numbers_unique_across_replicas,
    concurrency::revocation_races_issuance_cleanly,
    batch::mixed_good_and_refused_items_share_batches,
    batch::certificate_sized_records_keep_the_use_limit_across_statements,
    batch::a_failing_transaction_fails_every_caller_and_writes_nothing,
    batch::storage_lost_mid_batch_is_unavailable_for_its_callers,
    watch::another_handles_revocations_are_signalled,
    roots::root_rotation_records_pair_refuse_and_cancel,
);

/// Checks that only the SQLite backend does: file mode and journal mode.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_file_is_private_and_in_wal_mode() {
    use sqlx::{Connection, SqliteConnection};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.db");
    let store = ward_store::connect(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend(), ward_store::Backend::Sqlite);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut raw = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
}

/// A connection error names the server but never the password in the URL.
#[tokio::test]
async fn connect_errors_never_show_the_password() {
    let options = ward_store::StoreOptions {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    // Port 1 on loopback refuses at once; no server is needed.
    let url = "postgres://ward:hunter2-secret@127.0.0.1:1/ward?password=hunter2-secret";
    let Err(err) = ward_store::connect_with(url, &options).await else {
        panic!("connecting to a closed port succeeded");
    };
    assert!(err.is_unavailable(), "{err}");
    let mut shown = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        shown.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("127.0.0.1:1/ward"), "{shown}");
}

/// Unknown schemes are refused before any connection is tried.
#[tokio::test]
async fn unknown_scheme_is_refused() {
    let Err(err) = ward_store::connect("mysql://root:pw@localhost/db").await else {
        panic!("mysql URL accepted");
    };
    assert!(matches!(err, ward_store::StoreError::InvalidUrl(_)));
    assert!(!err.to_string().contains("pw@"));
}

/// A SQLite file that was emptied, cut short or overwritten is refused with
/// an error naming it, never opened as a new, empty store.
#[tokio::test]
async fn damaged_sqlite_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let url = path.to_str().unwrap().to_owned();
    let store = ward_store::connect(&url).await.unwrap();
    for i in 0..300 {
        let mut c = harness::cert(&format!("{:04x}", i + 1));
        c.der = vec![0x5a; 600];
        store.record_certificate(&c).await.unwrap();
    }
    let before = store.next_crl_number().await.unwrap();
    store.close().await;
    drop(store);
    // Closing checkpoints the WAL: the file alone holds everything.
    for suffix in ["-wal", "-shm"] {
        let side = dir.path().join(format!("ward.db{suffix}"));
        if side.exists() {
            if suffix == "-wal" {
                assert_eq!(
                    std::fs::metadata(&side).unwrap().len(),
                    0,
                    "WAL not folded in"
                );
            }
            std::fs::remove_file(side).unwrap();
        }
    }
    let good = std::fs::read(&path).unwrap();
    assert!(good.len() > 64 * 1024, "{} bytes", good.len());
    let cases: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        ("half", good[..good.len() / 2].to_vec()),
        ("garbage", vec![0x42; good.len()]),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = match ward_store::open_existing(&url).await {
            Err(e) => e,
            Ok(_) => panic!("{what}: a damaged file was opened"),
        };
        assert!(
            matches!(
                err,
                ward_store::StoreError::Missing(_) | ward_store::StoreError::Damaged(_)
            ),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(&url), "{what}: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: file changed");
    }
    std::fs::remove_file(&path).unwrap();
    let err = ward_store::open_existing(&url).await.err().unwrap();
    assert!(matches!(err, ward_store::StoreError::Missing(_)), "{err}");
    assert!(!path.exists(), "open_existing created the file");
    // Made anew (explicitly), the store still never hands out a lower CRL number.
    let fresh = ward_store::connect(&url).await.unwrap();
    assert!(fresh.next_crl_number().await.unwrap() > before);
}
