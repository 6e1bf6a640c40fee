//! The store is made by `ward ca init` (or an explicit `--init-storage`),
//! never silently: after issuance, a `ward.db` emptied, cut in half, or
//! deleted makes `ward ca serve` refuse to start with an error naming the
//! file, and touches nothing; CRL numbers never go backwards, even over a
//! store made anew.

use std::process::Command;

use crate::common::OutputText;
use crate::harness::{Backend, Ca, Server, openssl, sign_req};

/// `ward ca serve` must exit non-zero by itself, saying `needle`.
fn serve_refuses(ca: &Ca, extra: &[&str], needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["ca", "serve", "--dir", ca.dir(), "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = out.stderr_text();
    assert!(!out.status.success(), "ca serve started: {err}");
    assert!(!err.contains("listening on"), "{err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

/// The CRL number of the CRL a running server serves.
async fn crl_number(ca: &Ca, server: &Server) -> u64 {
    let pem = ca.client(server).get("/v1/crl.pem").await;
    assert_eq!(pem.status, 200);
    let path = ca.write("crl.pem", &pem.text());
    let (ok, out, err) = openssl(&["crl", "-in", path.to_str().unwrap(), "-noout", "-crlnumber"]);
    assert!(ok, "{err}");
    let value = out.trim().trim_start_matches("crlNumber=");
    u64::from_str_radix(value.trim_start_matches("0x"), 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_emptied_or_damaged_store_is_refused_by_name() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let db = ca.file("ward.db");
    let db_name = db.display().to_string();
    let number = {
        let mut server = ca.serve();
        let client = ca.client(&server);
        for i in 0..40 {
            let token = ca.token(&format!("spiffe://example.org/w{i}"), &[]);
            client
                .send(&sign_req(&token.secret, &ca.csr(&[]).pem))
                .await
                .expect(201);
        }
        let number = crl_number(&ca, &server).await;
        // A clean stop folds the WAL into ward.db: the file alone is the store.
        assert!(server.terminate().success());
        number
    };
    let good = std::fs::read(&db).unwrap();
    assert!(good.len() > 32 * 1024, "{} bytes", good.len());

    std::fs::write(&db, b"").unwrap();
    serve_refuses(&ca, &[], &db_name);
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "the empty file was filled"
    );

    let half = &good[..good.len() / 2];
    std::fs::write(&db, half).unwrap();
    serve_refuses(&ca, &[], &db_name);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        half,
        "the damaged file changed"
    );
    // Not even --init-storage replaces a damaged store.
    serve_refuses(&ca, &["--init-storage"], "damaged");

    std::fs::remove_file(&db).unwrap();
    serve_refuses(&ca, &[], &db_name);
    assert!(!db.exists(), "a store was created");
    // Other commands refuse it too.
    let out = ca.ward(&["token", "create", "--spiffe-id", "spiffe://example.org/x"]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains(&db_name),
        "{}",
        out.stderr_text()
    );

    // The intact store opens again, with everything in it.
    std::fs::write(&db, &good).unwrap();
    let mut server = ca.serve();
    let after_restore = crl_number(&ca, &server).await;
    assert!(after_restore > number, "{after_restore} <= {number}");
    ca.admin(&server).get("/v1/admin/tokens").await.expect(200);
    assert!(server.terminate().success());

    // Made anew on request, the store still never goes back in CRL numbers.
    std::fs::remove_file(&db).unwrap();
    let mut server = Server::start_with(&ca, &["--init-storage"]);
    let fresh = crl_number(&ca, &server).await;
    assert!(fresh > after_restore, "{fresh} <= {after_restore}");
    assert!(
        server.stderr().contains("creating a new, empty CA store"),
        "{}",
        server.stderr()
    );
    // The admin certificate was recorded again: the admin API works.
    ca.admin(&server).get("/v1/admin/tokens").await.expect(200);
    server.terminate();
}

/// A PostgreSQL database without Ward's tables is refused; `--init-storage`
/// creates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_postgres_database_needs_init_storage() {
    let Some(ca) = Ca::new(Backend::Postgres) else {
        return;
    };
    let url = ca.database_url().unwrap().to_owned();
    serve_refuses(&ca, &["--database", &url], "holds no Ward CA store");
    let server = ca.serve(); // the harness passes --init-storage
    ca.admin(&server).get("/v1/admin/tokens").await.expect(200);
}
