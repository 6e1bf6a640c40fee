//! Ward's own ACME flow driven by the hand-written client (`jws.rs`), an
//! IP identifier validated over http-01 by a responder in this test, and
//! hostile requests, each answered with the right problem type and
//! nothing stored. Also two replicas on one PostgreSQL database.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::jws::{Acct, Answer, Dir, b64, csr};
use super::setup::{Ports, configure, free_port};
use crate::harness::{Backend, Ca, Server, openssl_verify, x509};

/// Serves http-01 for `thumbprint`: `/.well-known/acme-challenge/TOKEN`
/// answers `TOKEN.THUMBPRINT`, anything else 404.
fn responder(listener: TcpListener, thumbprint: String) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let thumbprint = thumbprint.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let answer = match path.strip_prefix("/.well-known/acme-challenge/") {
                    Some(token) => {
                        let body = format!("{token}.{thumbprint}");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
                };
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
}

/// Polls `url` (POST-as-GET) until `status` leaves the pending states, as
/// ACME clients do (bounded).
async fn poll(dir: &Dir, acct: &Acct, url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = dir.post(acct, url, None).await;
        assert_eq!(a.status, 200, "{a:?}");
        let v = a.json();
        if !matches!(v["status"].as_str(), Some("pending" | "processing")) {
            return v;
        }
        assert!(Instant::now() < deadline, "still {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CA whose http-01 validations reach a responder for `acct`'s key.
async fn start(backend: Backend, acct: &Acct) -> Option<(Ca, u16)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    responder(listener, acct.thumbprint());
    let ca = Ca::new(backend)?;
    let ports = Ports {
        http01: port,
        tlsalpn01: free_port(),
        dns: free_port(),
    };
    configure(&ca, &ports, "");
    Some((ca, port))
}

/// Orders 127.0.0.1 and validates it over http-01; returns the order URL.
async fn ready_order(dir: &Dir, acct: &Acct) -> (String, Value) {
    let a = dir
        .post(
            acct,
            &dir.url("new-order"),
            Some(&json!({"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let order_url = a.headers["location"].clone();
    let order = a.json();
    let authz_url = order["authorizations"][0].as_str().unwrap().to_owned();
    let authz = dir.post(acct, &authz_url, None).await.json();
    let challenges = authz["challenges"].as_array().unwrap();
    let kinds: Vec<&str> = challenges
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert!(
        !kinds.contains(&"dns-01"),
        "no dns-01 for IP identifiers (RFC 8738): {kinds:?}"
    );
    let http = challenges.iter().find(|c| c["type"] == "http-01").unwrap();
    let a = dir
        .post(acct, http["url"].as_str().unwrap(), Some(&json!({})))
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let authz = poll(dir, acct, &authz_url).await;
    assert_eq!(authz["status"], "valid", "{authz}");
    let order = poll(dir, acct, &order_url).await;
    assert_eq!(order["status"], "ready", "{order}");
    (order_url, order)
}

async fn flow_and_hostile_requests(backend: Backend) {
    let mut acct = Acct::new();
    let Some((ca, _)) = start(backend, &acct).await else {
        return;
    };
    let server = Server::start(&ca);
    let dir = Dir {
        client: ca.client(&server),
        prov: "web".into(),
    };

    let d = dir
        .raw("GET", &dir.url("directory"), "text/plain", b"")
        .await;
    assert_eq!(d.status, 200, "{d:?}");
    let d = d.json();
    assert_eq!(d["newNonce"], dir.url("new-nonce"));
    assert!(d["meta"]["profiles"]["shortlived"].is_string(), "{d}");
    assert_eq!(d["renewalInfo"], dir.url("renewal-info"));
    let unknown = dir
        .raw(
            "GET",
            "https://localhost/acme/nope/directory",
            "text/plain",
            b"",
        )
        .await;
    assert_eq!(unknown.status, 404);

    let new_account = dir.url("new-account");
    let payload = json!({"termsOfServiceAgreed": true});
    // Not application/jose+json.
    let nonce = dir.nonce().await;
    let body = acct.sign(&acct.header(&new_account, &nonce), Some(&payload));
    dir.raw("POST", &new_account, "application/json", body.as_bytes())
        .await
        .problem(415, "malformed");
    // Bad signature: another key signed over this jwk.
    let other = Acct::new();
    let nonce = dir.nonce().await;
    let forged = other.sign(&acct.header(&new_account, &nonce), Some(&payload));
    dir.post_jws(&new_account, &forged)
        .await
        .problem(400, "malformed");
    // Wrong algorithms.
    for alg in ["HS256", "none", "ES384", "RS256"] {
        let nonce = dir.nonce().await;
        let header = json!({"alg": alg, "nonce": nonce, "url": new_account, "jwk": acct.jwk()});
        dir.post_jws(&new_account, &acct.sign(&header, Some(&payload)))
            .await
            .problem(400, "badSignatureAlgorithm");
    }
    // jwk and kid both.
    let nonce = dir.nonce().await;
    let header =
        json!({"alg": "ES256", "nonce": nonce, "url": new_account, "jwk": acct.jwk(), "kid": "x"});
    dir.post_jws(&new_account, &acct.sign(&header, Some(&payload)))
        .await
        .problem(400, "malformed");
    // URL mismatch.
    let nonce = dir.nonce().await;
    let header = acct.header(&dir.url("new-order"), &nonce);
    dir.post_jws(&new_account, &acct.sign(&header, Some(&payload)))
        .await
        .problem(403, "unauthorized");
    // A nonce this server never issued.
    let header = acct.header(&new_account, &b64(b"made-up-nonce"));
    dir.post_jws(&new_account, &acct.sign(&header, Some(&payload)))
        .await
        .problem(400, "badNonce");
    // Oversized body.
    let huge = "x".repeat(70 * 1024);
    dir.raw(
        "POST",
        &new_account,
        "application/jose+json",
        huge.as_bytes(),
    )
    .await
    .problem(413, "malformed");
    // Nothing above created the account.
    let a = dir
        .post(
            &acct,
            &new_account,
            Some(&json!({"onlyReturnExisting": true})),
        )
        .await;
    a.problem(400, "accountDoesNotExist");

    // The `eab` directory refuses accounts without a binding.
    let eab = Dir {
        client: dir.client.clone(),
        prov: "eab".into(),
    };
    eab.post(&acct, &eab.url("new-account"), Some(&payload))
        .await
        .problem(401, "externalAccountRequired");

    // Register; the same JWS again is a replayed nonce.
    let nonce = dir.nonce().await;
    let body = acct.sign(&acct.header(&new_account, &nonce), Some(&payload));
    let a = dir.post_jws(&new_account, &body).await;
    assert_eq!(a.status, 201, "{a:?}");
    assert!(a.headers.contains_key("replay-nonce"), "{a:?}");
    acct.kid = Some(a.headers["location"].clone());
    dir.post_jws(&new_account, &body)
        .await
        .problem(400, "badNonce");
    // newAccount with the same key returns the account (200).
    acct.kid = None;
    let a = dir.post(&acct, &new_account, Some(&payload)).await;
    assert_eq!(a.status, 200, "{a:?}");
    acct.kid = Some(a.headers["location"].clone());

    // Orders outside the policy are refused and not stored.
    let new_order = dir.url("new-order");
    for (kind, value) in [
        ("dns", "evil.example"),
        ("ip", "10.1.2.3"),
        ("dns", "acme.test"),
        ("email", "a@b.test"),
    ] {
        let a = dir
            .post(
                &acct,
                &new_order,
                Some(&json!({"identifiers": [{"type": kind, "value": value}]})),
            )
            .await;
        let expected = if kind == "email" {
            "unsupportedIdentifier"
        } else {
            "rejectedIdentifier"
        };
        a.problem(400, expected);
    }
    let a = dir
        .post(&acct, &new_order, Some(&json!({"identifiers": [{"type": "dns", "value": "x.acme.test"}], "profile": "nope"})))
        .await;
    a.problem(400, "invalidProfile");
    let orders_url = format!("{}/orders", acct.kid.as_ref().unwrap());
    let listed = dir.post(&acct, &orders_url, None).await.json();
    assert_eq!(listed["orders"], json!([]), "{listed}");

    // A complete order for 127.0.0.1 (RFC 8738), http-01.
    let (order_url, order) = ready_order(&dir, &acct).await;
    let finalize = order["finalize"].as_str().unwrap().to_owned();
    let (cert_key, pkcs8) = Acct::with_pkcs8();
    // A CSR with an extra name: badCSR, the order stays ready, nothing issued.
    let extra = csr(&pkcs8, &["x.acme.test"], &["127.0.0.1"]);
    dir.post(&acct, &finalize, Some(&json!({"csr": b64(&extra)})))
        .await
        .problem(400, "badCSR");
    let missing = csr(&pkcs8, &[], &["127.0.0.2"]);
    dir.post(&acct, &finalize, Some(&json!({"csr": b64(&missing)})))
        .await
        .problem(400, "badCSR");
    let order = dir.post(&acct, &order_url, None).await.json();
    assert_eq!(order["status"], "ready", "{order}");
    assert!(order.get("certificate").is_none(), "{order}");

    let good = csr(&pkcs8, &[], &["127.0.0.1"]);
    let a = dir
        .post(&acct, &finalize, Some(&json!({"csr": b64(&good)})))
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let order = a.json();
    assert_eq!(order["status"], "valid", "{order}");
    let cert_url = order["certificate"].as_str().unwrap().to_owned();
    let pem = dir.post(&acct, &cert_url, None).await;
    assert_eq!(pem.status, 200, "{pem:?}");
    assert_eq!(
        pem.headers["content-type"],
        "application/pem-certificate-chain"
    );
    let chain = ca.write("acme-chain.pem", &pem.body);
    let (ok, why) = openssl_verify(&ca.root(), &chain, "sslserver");
    assert!(ok, "{why}");
    let sans = x509(&chain, &["-ext", "subjectAltName"]);
    assert!(
        sans.contains("IP Address:127.0.0.1") && !sans.contains("URI:"),
        "{sans}"
    );
    // Finalizing again is refused.
    dir.post(&acct, &finalize, Some(&json!({"csr": b64(&good)})))
        .await
        .problem(403, "orderNotReady");
    let listed = dir.post(&acct, &orders_url, None).await.json();
    assert_eq!(listed["orders"], json!([order_url]), "{listed}");

    // ARI: a window inside the lifetime, in the past after revocation.
    let der = pem_der(&pem.body);
    let cert_id = ari_cert_id(&der);
    let info = dir
        .raw(
            "GET",
            &dir.url(&format!("renewal-info/{cert_id}")),
            "text/plain",
            b"",
        )
        .await;
    assert_eq!(info.status, 200, "{info:?}");
    assert!(info.headers.contains_key("retry-after"));
    let start = info.json()["suggestedWindow"]["start"]
        .as_str()
        .unwrap()
        .to_owned();

    // revokeCert by a stranger account: refused; by the certificate's key: done.
    let mut stranger = Acct::new();
    dir.register(&mut stranger).await;
    let revoke = dir.url("revoke-cert");
    let body = json!({"certificate": b64(&der)});
    dir.post(&stranger, &revoke, Some(&body))
        .await
        .problem(403, "unauthorized");
    let a = dir.post(&cert_key, &revoke, Some(&body)).await;
    assert_eq!(a.status, 200, "{a:?}");
    dir.post(&acct, &revoke, Some(&body))
        .await
        .problem(400, "alreadyRevoked");
    let info = dir
        .raw(
            "GET",
            &dir.url(&format!("renewal-info/{cert_id}")),
            "text/plain",
            b"",
        )
        .await;
    let after = info.json()["suggestedWindow"]["start"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        after < start,
        "the window moves earlier after revocation: {start} → {after}"
    );

    // Deactivation: the account can no longer act.
    let a = dir
        .post(
            &acct,
            acct.kid.as_ref().unwrap(),
            Some(&json!({"status": "deactivated"})),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    dir.post(
        &acct,
        &new_order,
        Some(&json!({"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})),
    )
    .await
    .problem(403, "unauthorized");
}

/// The first certificate of a PEM chain, DER.
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// RFC 9773 certID: base64url(AKI).base64url(serial), read with openssl.
fn ari_cert_id(der: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), der).unwrap();
    let (ok, out, err) = crate::harness::openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        tmp.path().to_str().unwrap(),
        "-noout",
        "-serial",
        "-ext",
        "authorityKeyIdentifier",
    ]);
    assert!(ok, "{err}");
    let hex_of = |s: &str| -> Vec<u8> {
        let s: String = s.chars().filter(char::is_ascii_hexdigit).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let serial = out.lines().find_map(|l| l.strip_prefix("serial=")).unwrap();
    let mut serial = hex_of(serial);
    if serial[0] & 0x80 != 0 {
        serial.insert(0, 0);
    }
    let aki_line = out
        .lines()
        .skip_while(|l| !l.contains("Authority Key Identifier"))
        .nth(1)
        .unwrap();
    let aki = hex_of(aki_line.trim().trim_start_matches("keyid:"));
    format!("{}.{}", b64(&aki), b64(&serial))
}

async fn two_replicas(backend: Backend) {
    let mut acct = Acct::new();
    let Some((ca, _)) = start(backend, &acct).await else {
        return;
    };
    let a = Server::start(&ca);
    let b = Server::start(&ca);
    let on_a = Dir {
        client: ca.client(&a),
        prov: "web".into(),
    };
    let on_b = Dir {
        client: ca.client(&b),
        prov: "web".into(),
    };
    // A nonce from A works once on B, and is then gone on A too.
    let nonce = on_a.nonce().await;
    let url = on_b.url("new-account");
    let body = acct.sign(
        &acct.header(&url, &nonce),
        Some(&json!({"termsOfServiceAgreed": true})),
    );
    let created = on_b.post_jws(&url, &body).await;
    assert_eq!(created.status, 201, "{created:?}");
    acct.kid = Some(created.headers["location"].clone());
    on_a.post_jws(&url, &body).await.problem(400, "badNonce");
    // An order made on A is validated and finalized on B.
    let a_order = on_a
        .post(
            &acct,
            &on_a.url("new-order"),
            Some(&json!({"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})),
        )
        .await;
    assert_eq!(a_order.status, 201, "{a_order:?}");
    let order_url = a_order.headers["location"].clone();
    let authz_url = a_order.json()["authorizations"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let authz = on_b.post(&acct, &authz_url, None).await.json();
    let http = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "http-01")
        .unwrap()
        .clone();
    assert_eq!(
        on_b.post(&acct, http["url"].as_str().unwrap(), Some(&json!({})))
            .await
            .status,
        200
    );
    let order = poll(&on_a, &acct, &order_url).await;
    assert_eq!(order["status"], "ready", "{order}");
    let (_, pkcs8) = Acct::with_pkcs8();
    let good = csr(&pkcs8, &[], &["127.0.0.1"]);
    let done = on_b
        .post(
            &acct,
            order["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(&good)})),
        )
        .await;
    assert_eq!(done.status, 200, "{done:?}");
    let cert = on_a
        .post(&acct, done.json()["certificate"].as_str().unwrap(), None)
        .await;
    assert_eq!(cert.status, 200, "{cert:?}");
}

on_both_backends!(flow_and_hostile_requests, two_replicas);
