//! Who a certificate names: a CN bound by a token (`--cn`) and copied from
//! the CSR, nothing else; reserved SPIFFE IDs (`spiffe://TD/ward/...`)
//! refused for tokens (CLI and admin API) and offline issuance unless
//! `--allow-reserved`; the admin API open only to the recorded admin
//! certificate; the origin of token and renewal certificates.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::offline::{cert_create, origins};
use crate::common::OutputText;
use crate::harness::{Backend, Ca, canon_serial, sign_req, ward, x509};

/// A P-256 CSR made by openssl with subject `subj`; (PEM, key file).
pub(crate) fn csr_with_subject(ca: &Ca, subj: &str) -> (String, PathBuf) {
    let key = ca.scratch("cn.key");
    let csr = ca.scratch("cn.csr");
    let out = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-subj", subj])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {}", out.stderr_text());
    (std::fs::read_to_string(&csr).unwrap(), key)
}

/// The subject line `openssl x509 -subject` prints for a PEM chain's leaf.
fn subject_of(ca: &Ca, json: &Value) -> String {
    let path = ca.write("issued.pem", json["certificate"].as_str().unwrap());
    x509(&path, &["-subject", "-nameopt", "RFC2253"])
}

async fn a_bound_cn_is_copied_and_nothing_else_is(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = ca.serve();
    let client = ca.client(&server);
    let id = "spiffe://example.org/db/client";

    // A CSR naming the bound CN gets it in the subject.
    let token = ca.token(id, &["--cn", "app_user", "--uses", "0"]);
    let (csr, _) = csr_with_subject(&ca, "/CN=app_user");
    let issued = client
        .send(&sign_req(&token.secret, &csr))
        .await
        .expect(201);
    assert_eq!(subject_of(&ca, &issued).trim(), "subject=CN=app_user");
    // Any other CN, or a CN beside the bound one, is refused.
    for subj in ["/CN=postgres", "/CN=app_user/CN=postgres"] {
        let (csr, _) = csr_with_subject(&ca, subj);
        client
            .send(&sign_req(&token.secret, &csr))
            .await
            .expect_error(403, "forbidden");
    }
    // No CN asked: none written.
    let (csr, _) = csr_with_subject(&ca, "/");
    let issued = client
        .send(&sign_req(&token.secret, &csr))
        .await
        .expect(201);
    assert_eq!(subject_of(&ca, &issued).trim(), "subject=");
    // /v1/issue (the CA makes the key) writes the bound CN.
    let issued = client
        .post("/v1/issue", &json!({ "token": token.secret }))
        .await
        .expect(201);
    assert_eq!(subject_of(&ca, &issued).trim(), "subject=CN=app_user");
    // The binding shows in the token list.
    assert_eq!(ca.token_info(&token.id)["cn"], "app_user");

    // Without a bound CN, a bound DNS name may be the CN; nothing else.
    let token = ca.token(id, &["--dns", "db.example.org", "--uses", "0"]);
    let (csr, _) = csr_with_subject(&ca, "/CN=db.example.org");
    let issued = client
        .send(&sign_req(&token.secret, &csr))
        .await
        .expect(201);
    assert_eq!(subject_of(&ca, &issued).trim(), "subject=CN=db.example.org");
    let (csr, _) = csr_with_subject(&ca, "/CN=app_user");
    client
        .send(&sign_req(&token.secret, &csr))
        .await
        .expect_error(403, "forbidden");

    // The admin API binds a CN too.
    let admin = ca.admin(&server);
    let created = admin
        .post(
            "/v1/admin/tokens",
            &json!({ "spiffe_id": id, "cn": "report_reader" }),
        )
        .await
        .expect(201);
    assert_eq!(created["cn"], "report_reader");
    let (csr, _) = csr_with_subject(&ca, "/CN=report_reader");
    let issued = client
        .send(&sign_req(created["token"].as_str().unwrap(), &csr))
        .await
        .expect(201);
    assert_eq!(subject_of(&ca, &issued).trim(), "subject=CN=report_reader");
    // A CN with a control character is refused at creation.
    let out = ca.ward(&["token", "create", "--spiffe-id", id, "--cn", "a\nb"]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("control"),
        "{}",
        out.stderr_text()
    );
}

async fn reserved_identities_need_an_explicit_flag(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    // `ward cert create` below finds the store through ca.toml.
    super::offline::configure(&ca);
    let server = ca.serve();
    let client = ca.client(&server);
    let admin = ca.admin(&server);
    let admin_id = "spiffe://example.org/ward/admin";
    for id in [
        admin_id,
        "spiffe://example.org/ward/ca",
        "spiffe://example.org/ward",
    ] {
        let out = ca.ward(&["token", "create", "--spiffe-id", id]);
        assert!(!out.status.success(), "{id}: token created");
        assert!(
            out.stderr_text().contains("reserved"),
            "{}",
            out.stderr_text()
        );
        admin
            .post("/v1/admin/tokens", &json!({ "spiffe_id": id }))
            .await
            .expect_error(403, "forbidden");
    }
    // Not reserved: a path that merely starts with "ward".
    let _ = ca.token("spiffe://example.org/wardrobe", &[]);

    // Offline issuance refuses them too, and writes nothing.
    let prefix = ca.scratch("reserved");
    let out = ward(&[
        "cert",
        "create",
        "--ca-dir",
        ca.dir(),
        "--profile",
        "client",
        "--spiffe-id",
        admin_id,
        "--out",
        prefix.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("reserved"),
        "{}",
        out.stderr_text()
    );
    assert!(!prefix.with_extension("crt").exists());
    let allowed = cert_create(
        &ca,
        "reserved-ok",
        &[
            "--profile",
            "client",
            "--spiffe-id",
            "spiffe://example.org/ward/tool",
            "--allow-reserved",
        ],
    );

    // With the flag, a token for the admin ID can be made, but its
    // certificate is not the admin certificate: the admin API refuses it.
    let token = ca.token(admin_id, &["--allow-reserved", "--profile", "client"]);
    let issued = client
        .post("/v1/issue", &json!({ "token": token.secret }))
        .await
        .expect(201);
    let chain = ca.write("fake-admin.crt", issued["chain"].as_str().unwrap());
    let key = ca.write("fake-admin.key", issued["private_key"].as_str().unwrap());
    let impostor = client.with_identity(&ca.root(), &chain, &key);
    impostor
        .get("/v1/admin/tokens")
        .await
        .expect_error(403, "not_admin");
    impostor
        .post("/v1/revoke", &json!({ "serial": allowed.serial }))
        .await
        .expect_error(403, "not_admin");
    // The real admin certificate still works.
    admin.get("/v1/admin/tokens").await.expect(200);

    // Origins of online certificates: token, then renewal.
    let renewed = impostor.post("/v1/renew", &json!({})).await.expect(201);
    let list = origins(&admin).await;
    let origin_of = |serial: &str| {
        list.iter()
            .find(|(s, _)| *s == canon_serial(serial))
            .map(|(_, o)| o.as_str())
    };
    assert_eq!(origin_of(issued["serial"].as_str().unwrap()), Some("token"));
    assert_eq!(
        origin_of(renewed["serial"].as_str().unwrap()),
        Some("renewal")
    );
    assert_eq!(origin_of(&allowed.serial), Some("offline"));

    // A revoked admin certificate loses the admin API.
    let admin_serial = canon_serial(&x509(&ca.file("admin.crt"), &["-serial"]));
    let out = ca.ward(&["revoke", &admin_serial]);
    assert!(out.status.success(), "{}", out.stderr_text());
    admin
        .get("/v1/admin/tokens")
        .await
        .expect_error(403, "not_admin");
}

on_both_backends!(
    a_bound_cn_is_copied_and_nothing_else_is,
    reserved_identities_need_an_explicit_flag,
);
