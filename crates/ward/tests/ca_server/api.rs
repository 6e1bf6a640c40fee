//! The rest of the API surface: `/v1/issue`, `/v1/renew` over mTLS, the
//! admin API through curl, the public routes, TLS 1.3 only, the audit log,
//! and a clean exit on SIGTERM.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::common::sample;
use crate::harness::{
    Backend, Ca, Req, canon_serial, cert_pubkey, count, curl, key_pubkey, openssl, pem_certs,
    sign_req, x509,
};
use crate::sign::check_issued;

on_both_backends!(
    issue_and_renew,
    server_profile_certificates_renew_too,
    admin_api_public_routes_tls_audit_and_sigterm,
);

/// Regression: a `server`-profile certificate (serverAuth only) used to be
/// refused in the CA's TLS handshake, so it could never renew.
async fn server_profile_certificates_renew_too(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = ca.serve();
    let client = ca.client(&server);
    let id = "spiffe://example.org/svc/api";
    let token = ca.token(id, &["--profile", "server", "--dns", "api.example.org"]);
    let issued = client
        .post("/v1/issue", &json!({ "token": token.secret }))
        .await
        .expect(201);
    let (chain, key) = save(&ca, &issued);
    let text = x509(&chain, &["-text"]);
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(!text.contains("TLS Web Client Authentication"), "{text}");
    let workload = client.with_identity(&ca.root(), &chain, &key.unwrap());
    let renewed = workload.post("/v1/renew", &json!({})).await.expect(201);
    assert_eq!(renewed["spiffe_id"], id);
    let (renewed_chain, _) = save(&ca, &renewed);
    let text = x509(&renewed_chain, &["-text"]);
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(!text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("DNS:api.example.org"), "{text}");
    // Still no way in without a certificate from this CA.
    client
        .post("/v1/renew", &json!({}))
        .await
        .expect_error(401, "missing_client_certificate");
}

/// Writes an `/v1/issue` or `/v1/renew` answer's chain (and key) to files.
fn save(ca: &Ca, json: &Value) -> (std::path::PathBuf, Option<std::path::PathBuf>) {
    let chain = ca.write("issued.crt", json["chain"].as_str().unwrap());
    let key = json["private_key"]
        .as_str()
        .map(|k| ca.write("issued.key", k));
    (chain, key)
}

async fn issue_and_renew(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = ca.serve();
    let client = ca.client(&server);
    let id = "spiffe://example.org/fn/reports";
    let token = ca.token(id, &["--uses", "5", "--cert-ttl", "30m"]);

    // /v1/issue: the key comes back, PKCS#8, and matches the certificate.
    let before = OffsetDateTime::now_utc();
    let issued = client
        .post("/v1/issue", &json!({ "token": token.secret }))
        .await
        .expect(201);
    let after = OffsetDateTime::now_utc();
    let mut without_key = issued.clone();
    let key_pem = without_key
        .as_object_mut()
        .unwrap()
        .remove("private_key")
        .unwrap();
    assert!(
        key_pem
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    check_issued(
        &ca,
        &without_key,
        id,
        &[],
        Duration::from_secs(1800),
        (before, after),
    );
    let (chain, key) = save(&ca, &issued);
    let key = key.unwrap();
    assert_eq!(cert_pubkey(&chain), key_pubkey(&key));
    assert!(x509(&chain, &["-text"]).contains("id-ecPublicKey"));

    // Ed25519 on request; an unknown key type is 400 and spends nothing.
    let ed = client
        .send(
            &Req::json("/v1/issue", &json!({ "key_type": "ed25519" }))
                .header("authorization", &format!("Bearer {}", token.secret)),
        )
        .await
        .expect(201);
    let (ed_chain, ed_key) = save(&ca, &ed);
    assert!(x509(&ed_chain, &["-text"]).contains("ED25519"));
    assert_eq!(cert_pubkey(&ed_chain), key_pubkey(&ed_key.unwrap()));
    client
        .post(
            "/v1/issue",
            &json!({ "token": token.secret, "key_type": "dsa-1024" }),
        )
        .await
        .expect_error(400, "bad_key_type");
    assert_eq!(ca.token_info(&token.id)["uses"], 2);

    // /v1/renew over mTLS with the issued certificate: same identity, new
    // serial, same key…
    let workload = client.with_identity(&ca.root(), &chain, &key);
    let renewed = workload.post("/v1/renew", &json!({})).await.expect(201);
    assert_eq!(renewed["spiffe_id"], id);
    assert_ne!(
        canon_serial(renewed["serial"].as_str().unwrap()),
        canon_serial(issued["serial"].as_str().unwrap())
    );
    let (renewed_chain, _) = save(&ca, &renewed);
    assert_eq!(cert_pubkey(&renewed_chain), key_pubkey(&key));
    let (ok, text) = crate::harness::openssl_verify(&ca.root(), &renewed_chain, "sslclient");
    assert!(ok, "{text}");
    // …or the CSR's new key. An empty body works too.
    let csr = ca.csr(&[]);
    let rekeyed = workload
        .post("/v1/renew", &json!({ "csr": csr.pem }))
        .await
        .expect(201);
    let (rekeyed_chain, _) = save(&ca, &rekeyed);
    assert_eq!(cert_pubkey(&rekeyed_chain), key_pubkey(&csr.key));
    assert_eq!(rekeyed["spiffe_id"], id);
    workload
        .send(&Req::raw("/v1/renew", Vec::new()))
        .await
        .expect(201);
    // Renewal spends no token use.
    assert_eq!(ca.token_info(&token.id)["uses"], 2);
    // A CSR asking for another identity is refused.
    let other = ca.csr(&["subjectAltName=URI:spiffe://example.org/admin"]);
    workload
        .post("/v1/renew", &json!({ "csr": other.pem }))
        .await
        .expect_error(403, "forbidden");

    // No client certificate; a certificate this CA never issued online.
    client
        .post("/v1/renew", &json!({}))
        .await
        .expect_error(401, "missing_client_certificate");
    let offline = ca
        .pki()
        .issue("client", "spiffe://example.org/offline", &[]);
    client
        .with_identity(
            &ca.root(),
            &offline.with_extension("crt"),
            &offline.with_extension("key"),
        )
        .post("/v1/renew", &json!({}))
        .await
        .expect_error(401, "unknown_certificate");

    // The kill switch: revoking the token with its certificates stops
    // renewal of every certificate that came from it.
    ca.revoke(&token.id, true);
    workload
        .post("/v1/renew", &json!({}))
        .await
        .expect_error(401, "certificate_revoked");
    let renewed_key = ca.write("renewed.key", &std::fs::read_to_string(&key).unwrap());
    client
        .with_identity(&ca.root(), &renewed_chain, &renewed_key)
        .post("/v1/renew", &json!({}))
        .await
        .expect_error(401, "certificate_revoked");
}

async fn admin_api_public_routes_tls_audit_and_sigterm(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let mut server = ca.serve();
    let client = ca.client(&server);
    let root = ca.root();
    let admin_cert = ca.file("admin.crt").display().to_string();
    let admin_key = ca.file("admin.key").display().to_string();
    let admin = |args: &[&str]| {
        let mut all = vec!["--cert", &admin_cert, "--key", &admin_key];
        all.extend_from_slice(args);
        curl(&root, &all)
    };
    let mut secrets = Vec::new();
    let mut attempts = 0; // issuance requests sent, for the audit check

    // Admin API with the admin certificate (curl, HTTP/2 by ALPN).
    let (status, body) = admin(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"spiffe_id": "spiffe://example.org/fn/admin-made", "uses": 2, "cert_ttl": "20m"}"#,
        &server.url("/v1/admin/tokens"),
    ]);
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let secret = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wdt_"), "{created}");
    assert_eq!(created["max_uses"], 2);
    assert_eq!(created["cert_ttl_seconds"], 1200);
    secrets.push(secret.clone());

    let (status, body) = admin(&[&server.url("/v1/admin/tokens")]);
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let listed = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == token_id.as_str())
        .unwrap_or_else(|| panic!("{list}"));
    assert!(listed.get("token").is_none() && listed.get("hash").is_none());
    assert!(!body.contains(&secret), "the list never shows a secret");

    // The token works, then the admin revokes it.
    let csr = ca.csr(&[]);
    let signed = client.send(&sign_req(&secret, &csr.pem)).await.expect(201);
    attempts += 1;
    let workload_chain = ca.write("workload.crt", signed["chain"].as_str().unwrap());
    let (status, body) = admin(&[
        "-X",
        "DELETE",
        &server.url(&format!(
            "/v1/admin/tokens/{token_id}?with_certificates=true"
        )),
    ]);
    assert_eq!(status, 200, "{body}");
    let revoked: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(revoked["certificates_revoked"], 1, "{revoked}");
    client
        .send(&sign_req(&secret, &csr.pem))
        .await
        .expect_error(401, "token_revoked");
    attempts += 1;
    let (status, body) = admin(&[
        "-X",
        "DELETE",
        &server.url("/v1/admin/tokens/tok_nonexistent"),
    ]);
    assert_eq!(status, 404, "{body}");

    let (status, body) = admin(&[&server.url("/v1/admin/certificates")]);
    assert_eq!(status, 200, "{body}");
    let certs: Value = serde_json::from_str(&body).unwrap();
    let total = certs["total"].as_u64().unwrap();
    assert!(
        certs["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["serial"] == signed["serial"] && c["revoked_at"].is_string()),
        "{certs}"
    );

    // Not the admin: 403 with a workload certificate, 401 without one.
    let workload = client.with_identity(&ca.root(), &workload_chain, &csr.key);
    for req in [
        Req::get("/v1/admin/tokens"),
        Req::get("/v1/admin/certificates"),
        Req::json(
            "/v1/admin/tokens",
            &json!({ "spiffe_id": "spiffe://example.org/x" }),
        ),
        Req::delete(&format!("/v1/admin/tokens/{token_id}")),
    ] {
        workload.send(&req).await.expect_error(403, "not_admin");
        client
            .send(&req)
            .await
            .expect_error(401, "missing_client_certificate");
    }
    let (status, body) = curl(&root, &[&server.url("/v1/admin/tokens")]);
    assert_eq!(status, 401, "{body}");

    // More issuance for the metrics and the audit log: two good signs, a
    // refused one, a bad request.
    let token = ca.token("spiffe://example.org/fn/metered", &["--uses", "2"]);
    secrets.push(token.secret.clone());
    for _ in 0..2 {
        client
            .send(&sign_req(&token.secret, &csr.pem))
            .await
            .expect(201);
    }
    client
        .send(&sign_req(&token.secret, &csr.pem))
        .await
        .expect_error(401, "token_used");
    client
        .send(&sign_req(&token.secret, "garbage"))
        .await
        .expect_error(400, "bad_csr");
    attempts += 4;
    let seed_token = ca.token("spiffe://example.org/fn/seed", &[]);
    secrets.push(seed_token.secret.clone());
    client
        .post(
            "/internal/pki/issue-certificate",
            &json!({ "bootstrap_token": seed_token.secret }),
        )
        .await
        .expect(200);
    attempts += 1;
    assert_eq!(count(&ca.admin(&server)).await, total + 3);

    // Public routes.
    let roots = client.get("/v1/roots").await;
    assert_eq!(roots.status, 200);
    assert_eq!(roots.text(), std::fs::read_to_string(&root).unwrap());
    let roots_file = ca.write("roots.pem", &roots.text());
    assert_eq!(pem_certs(&roots_file), pem_certs(&root));
    assert_eq!(client.get("/healthz").await.status, 200);
    assert_eq!(client.get("/readyz").await.status, 200);
    client.get("/nope").await.expect_error(404, "not_found");
    let metrics = client.get("/metrics").await.text();
    assert_eq!(
        sample(
            &metrics,
            r#"ward_ca_issuance_total{route="sign",result="issued"}"#
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"ward_ca_issuance_total{route="seed_issue",result="issued"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("ward_ca_issuance_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "ward_ca_token_uses_total"),
        Some(4.0),
        "{metrics}"
    );

    // TLS 1.3 only.
    let connect = server.addr.to_string();
    let root_arg = root.display().to_string();
    let s_client = |version: &str| {
        openssl(&[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            "-CAfile",
            &root_arg,
            "-verify_return_error",
            version,
        ])
    };
    let (ok, out, err) = s_client("-tls1_2");
    assert!(!ok, "TLS 1.2 accepted: {out}{err}");
    let (ok, out, err) = s_client("-tls1_3");
    assert!(ok, "TLS 1.3 refused: {out}{err}");
    assert!(out.contains("TLSv1.3"), "{out}");

    // SIGTERM: a clean exit.
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status {status}: {}",
        server.stderr()
    );

    // The audit log: JSON lines, one per issuance attempt, naming tokens by
    // id and never by secret.
    let stdout = server.stdout();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let issuance: Vec<&Value> = lines.iter().filter(|l| l["event"] == "issuance").collect();
    assert_eq!(issuance.len(), attempts, "{stdout}");
    for line in &issuance {
        assert!(
            line["time"].is_string() && line["source"] == "127.0.0.1",
            "{line}"
        );
        if line["result"] == "issued" {
            assert!(
                line["token_id"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("tok_")),
                "{line}"
            );
            assert!(
                line["serial"].is_string() && line["spiffe_id"].is_string(),
                "{line}"
            );
        }
        if line["reason"] == "token_used" || line["reason"] == "token_revoked" {
            assert!(
                line["token_id"].is_string(),
                "a refusal names the token: {line}"
            );
        }
    }
    assert!(
        issuance
            .iter()
            .any(|l| l["token_id"] == token_id.as_str() && l["reason"] == "token_revoked"),
        "{stdout}"
    );
    let everything = format!("{stdout}{}", server.stderr());
    for secret in &secrets {
        assert!(
            !everything.contains(secret.as_str()),
            "a token secret was logged"
        );
        // Not even the part after the prefix.
        assert!(
            !everything.contains(&secret[4..]),
            "a token secret was logged"
        );
    }
    assert!(
        !everything.contains("PRIVATE KEY"),
        "a private key was logged"
    );
}
