//! What the lego and certbot scenarios cannot reach:
//!
//! - `raw_client.py`, on certbot's `acme` library and pyca `cryptography`:
//!   ES384, RS256 and EdDSA account keys end to end, keyChange, reuse of a
//!   valid authorization, `alreadyReplaced`, http-01 through redirects (and
//!   refused redirects), tls-alpn-01 against a TLS 1.2-only server;
//! - the admin API for EAB keys, with lego as the client that uses them.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use super::setup::{ChallTestSrv, Ports, configure, free_port, have};
use crate::common::OutputText;
use crate::harness::{Backend, Ca, Client, Server};

/// Whether certbot's `acme` library and josepy import (they come with
/// `pip install certbot`).
fn have_python_acme() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import acme.jws, josepy, cryptography"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python acme/josepy are required under CI (pip install certbot)"
        );
        println!("skipped: python acme/josepy missing (pip install certbot)");
    }
    ok
}

async fn raw_client(backend: Backend) {
    if !have("pebble-challtestsrv", "apt-get install pebble") || !have_python_acme() {
        return;
    }
    let dns = ChallTestSrv::start();
    let ports = Ports {
        http01: free_port(),
        tlsalpn01: free_port(),
        dns: dns.dns,
    };
    let Some(ca) = Ca::new(backend) else {
        return;
    };
    configure(&ca, &ports, "");
    let server = Server::start(&ca);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/acme/raw_client.py");
    let args = vec![
        script.to_owned(),
        format!("https://{}/acme/web/directory", server.addr),
        ca.root().to_str().unwrap().to_owned(),
        ports.http01.to_string(),
        ports.tlsalpn01.to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(out.status.success(), "{text}\nCA: {}", server.stderr());
    for step in [
        "ok: ES384 account: http-01 order issued",
        "ok: authorization reused",
        "ok: second replaces of one certificate: 409 alreadyReplaced",
        "ok: RS256 account: http-01 through redirects to http and https",
        "ok: http-01 redirect refused (bad-port)",
        "ok: http-01 redirect refused (loop)",
        "ok: tls-alpn-01 validated by a TLS 1.2 server",
        "ok: keyChange ES256 -> Ed25519",
        "ok: old key refused after keyChange",
        "ok: EdDSA account: http-01 order issued after keyChange",
        "all done",
    ] {
        assert!(text.contains(step), "missing {step:?}:\n{text}");
    }
}

/// Runs lego against provisioner `eab` of `server`; returns (success, output).
fn lego(ca: &Ca, server: &Server, path: &Path, http01: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("lego")
        .env("LEGO_CA_CERTIFICATES", ca.root())
        .args([
            "--server",
            &format!("https://{}/acme/eab/directory", server.addr),
            "--accept-tos",
            "--email",
            "ops@acme.test",
            "--path",
            path.to_str().unwrap(),
            "--http",
            "--http.port",
            &format!("127.0.0.1:{http01}"),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("lego runs");
    (
        out.status.success(),
        format!("{}{}", out.stdout_text(), out.stderr_text()),
    )
}

async fn eab_admin_api(backend: Backend) {
    if !have("lego", "apt-get install lego")
        || !have("pebble-challtestsrv", "apt-get install pebble")
    {
        return;
    }
    let dns = ChallTestSrv::start();
    let ports = Ports {
        http01: free_port(),
        tlsalpn01: free_port(),
        dns: dns.dns,
    };
    let Some(ca) = Ca::new(backend) else {
        return;
    };
    configure(&ca, &ports, "");
    let server = Server::start(&ca);
    let admin = ca.admin(&server);
    let path = "/v1/admin/acme/eab";

    // Admin only.
    let anonymous = ca.client(&server);
    anonymous
        .get(path)
        .await
        .expect_error(401, "missing_client_certificate");
    anonymous
        .post(path, &json!({"provisioner": "eab"}))
        .await
        .expect_error(401, "missing_client_certificate");
    // Bad requests.
    admin
        .post(path, &json!({"provisioner": "nope"}))
        .await
        .expect_error(404, "not_found");
    let r = admin
        .post(path, &json!({"provisioner": "eab", "extra": 1}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Create: the HMAC key is shown once; lego binds an account with it.
    let created = admin
        .post(path, &json!({"provisioner": "eab"}))
        .await
        .expect(201);
    let kid = created["key_id"].as_str().unwrap().to_owned();
    let hmac = created["hmac_key"].as_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    let bound = work.path().join("bound");
    let http01 = ports.http01;
    let (ok, out) = lego(
        &ca,
        &server,
        &bound,
        http01,
        &[
            "--eab",
            "--kid",
            &kid,
            "--hmac",
            &hmac,
            "-d",
            "e.acme.test",
            "run",
        ],
    );
    assert!(
        ok,
        "lego with an admin-API EAB key: {out}\nCA: {}",
        server.stderr()
    );

    // List: the key, bound, without its HMAC key.
    let listed = admin.get(path).await.expect(200);
    let keys = listed["keys"].as_array().unwrap();
    let key = keys.iter().find(|k| k["key_id"] == kid.as_str()).unwrap();
    assert_eq!(key["provisioner"], "eab", "{key}");
    assert!(key["account_id"].is_string(), "{key}");
    assert!(key["revoked_at"].is_null(), "{key}");
    assert!(
        !listed.to_string().contains(&hmac),
        "the HMAC key was listed"
    );
    let filtered = admin
        .get(&format!("{path}?provisioner=web"))
        .await
        .expect(200);
    assert_eq!(filtered["keys"].as_array().unwrap().len(), 0, "{filtered}");

    // Revoke: the account it bound can no longer order.
    let revoked = admin
        .send(&crate::harness::Req::delete(&format!("{path}/{kid}")))
        .await
        .expect(200);
    assert_eq!(revoked["account_revoked"], key["account_id"], "{revoked}");
    admin
        .send(&crate::harness::Req::delete(&format!("{path}/{kid}")))
        .await
        .expect_error(409, "already_revoked");
    admin
        .send(&crate::harness::Req::delete(&format!("{path}/nope")))
        .await
        .expect_error(404, "not_found");
    // (lego wants the EAB flags whenever the directory requires EAB; with
    // its stored account it does not register again.)
    let (ok, out) = lego(
        &ca,
        &server,
        &bound,
        http01,
        &[
            "--eab",
            "--kid",
            &kid,
            "--hmac",
            &hmac,
            "-d",
            "f.acme.test",
            "run",
        ],
    );
    assert!(!ok, "a revoked EAB key's account still orders: {out}");
    assert!(out.contains("revoked"), "{out}");

    // A key revoked before use binds nothing.
    let unused = admin
        .post(path, &json!({"provisioner": "eab"}))
        .await
        .expect(201);
    let unused_kid = unused["key_id"].as_str().unwrap();
    admin
        .send(&crate::harness::Req::delete(&format!(
            "{path}/{unused_kid}"
        )))
        .await
        .expect(200);
    let (ok, out) = lego(
        &ca,
        &server,
        &work.path().join("late"),
        http01,
        &[
            "--eab",
            "--kid",
            unused_kid,
            "--hmac",
            unused["hmac_key"].as_str().unwrap(),
            "-d",
            "g.acme.test",
            "run",
        ],
    );
    assert!(!ok, "a revoked EAB key bound an account: {out}");
    assert!(out.contains("revoked"), "{out}");
}

on_both_backends!(raw_client, eab_admin_api);
