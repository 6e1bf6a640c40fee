//! `/v1/sign`: what a good request gets (judged by openssl), and what every
//! kind of bad request gets instead, with nothing recorded and no token use
//! spent.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::harness::{
    Backend, Ca, Req, canon_serial, cert_pubkey, count, curl, key_pubkey, not_after,
    openssl_verify, pem_certs, poll, sans, sign_req, x509,
};

on_both_backends!(
    sign_issues_a_bound_certificate_that_openssl_verifies,
    refused_requests_issue_nothing_and_spend_no_use,
);

/// What a 201 from `/v1/sign` must be, checked with openssl: returns the
/// chain file.
pub(crate) fn check_issued(
    ca: &Ca,
    json: &Value,
    spiffe_id: &str,
    dns: &[&str],
    ttl: Duration,
    (before, after): (OffsetDateTime, OffsetDateTime),
) -> PathBuf {
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "ca_bundle",
            "certificate",
            "chain",
            "not_after",
            "serial",
            "spiffe_id"
        ],
        "{json}"
    );
    assert_eq!(json["spiffe_id"], spiffe_id);
    let leaf = ca.write("leaf.pem", json["certificate"].as_str().unwrap());
    let chain_text = json["chain"].as_str().unwrap();
    assert!(chain_text.starts_with(json["certificate"].as_str().unwrap()));
    let chain = ca.write("chain.pem", chain_text);
    assert_eq!(pem_certs(&chain).len(), 2, "leaf + intermediate");
    let bundle = ca.write("bundle.pem", json["ca_bundle"].as_str().unwrap());
    assert_eq!(pem_certs(&bundle), pem_certs(&ca.root()));

    let (ok, text) = openssl_verify(&ca.root(), &chain, "sslclient");
    assert!(ok, "openssl verify: {text}");

    let mut want: Vec<String> = vec![format!("URI:{spiffe_id}")];
    want.extend(dns.iter().map(|d| format!("DNS:{d}")));
    let mut got = sans(&leaf);
    got.sort();
    want.sort();
    assert_eq!(got, want, "the SANs are the binding, nothing else");
    assert_eq!(
        got.iter().filter(|s| s.starts_with("URI:")).count(),
        1,
        "one URI SAN"
    );
    assert!(
        x509(&leaf, &["-ext", "basicConstraints"]).contains("CA:FALSE"),
        "a leaf"
    );

    let serial = x509(&leaf, &["-serial"]);
    assert_eq!(
        canon_serial(&serial),
        canon_serial(json["serial"].as_str().unwrap())
    );
    let stated = OffsetDateTime::parse(json["not_after"].as_str().unwrap(), &Rfc3339)
        .unwrap_or_else(|e| panic!("not_after is not RFC 3339: {e}"));
    let actual = not_after(&leaf);
    assert_eq!(stated, actual, "not_after matches the certificate");
    let ttl = time::Duration::try_from(ttl).unwrap();
    // Certificates hold whole seconds: allow truncation, never extension.
    assert!(
        actual <= after + ttl,
        "lives longer than asked: {actual} > {after} + {ttl}"
    );
    assert!(
        actual >= before + ttl - time::Duration::seconds(2),
        "much shorter than asked: {actual} < {before} + {ttl}"
    );
    chain
}

async fn sign_issues_a_bound_certificate_that_openssl_verifies(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = ca.serve();
    let client = ca.client(&server);
    let id = "spiffe://example.org/fn/orders";

    // Token in the body; the CSR is made by openssl with an empty subject.
    let token = ca.token(id, &["--cert-ttl", "10m"]);
    let csr = ca.csr(&[]);
    let before = OffsetDateTime::now_utc();
    let resp = client.send(&sign_req(&token.secret, &csr.pem)).await;
    let after = OffsetDateTime::now_utc();
    let json = resp.expect(201);
    let chain = check_issued(
        &ca,
        &json,
        id,
        &[],
        Duration::from_secs(600),
        (before, after),
    );
    assert_eq!(
        cert_pubkey(&chain),
        key_pubkey(&csr.key),
        "the certificate is for the CSR's key"
    );

    // Token as `Authorization: Bearer`, DNS names in the binding and asked
    // for in the CSR, default lifetime (1h).
    let token = ca.token(id, &["--dns", "orders.example.org"]);
    let csr = ca.csr(&[&format!("subjectAltName=URI:{id},DNS:orders.example.org")]);
    let before = OffsetDateTime::now_utc();
    let resp = client
        .send(
            &Req::json("/v1/sign", &json!({ "csr": csr.pem }))
                .header("authorization", &format!("Bearer {}", token.secret)),
        )
        .await;
    let after = OffsetDateTime::now_utc();
    check_issued(
        &ca,
        &resp.expect(201),
        id,
        &["orders.example.org"],
        Duration::from_secs(3600),
        (before, after),
    );
    assert_eq!(ca.token_info(&token.id)["uses"], 1);
}

/// Replaces the last byte of the CSR's DER (inside its signature).
fn tamper(csr_pem: &str) -> String {
    let b64: String = csr_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut der = STANDARD.decode(b64).unwrap();
    let last = der.last_mut().unwrap();
    *last ^= 0x5a;
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}

async fn refused_requests_issue_nothing_and_spend_no_use(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = ca.serve();
    let client = ca.client(&server);
    let admin = ca.admin(&server);
    let id = "spiffe://example.org/fn/billing";
    let token = ca.token(id, &[]); // one use
    let good = ca.csr(&[]);
    let start = count(&admin).await;

    // A CSR naming anything outside the binding: 403.
    for ext in [
        "subjectAltName=DNS:evil.example.org",
        "subjectAltName=URI:spiffe://example.org/admin",
        &format!("subjectAltName=URI:{id},URI:spiffe://example.org/other"),
        "subjectAltName=IP:10.0.0.1",
    ] {
        let outside = ca.csr(&[ext]);
        client
            .send(&sign_req(&token.secret, &outside.pem))
            .await
            .expect_error(403, "forbidden");
    }
    // Malformed JSON, wrong field types, unknown fields, a missing CSR.
    for body in [
        &b"{not json"[..],
        b"[]",
        br#"{"token": 5, "csr": "x"}"#,
        br#"{"token": "x", "csr": "y", "extra": 1}"#,
    ] {
        client
            .send(&Req::raw("/v1/sign", body.to_vec()))
            .await
            .expect_error(400, "malformed_json");
    }
    client
        .post("/v1/sign", &json!({ "token": token.secret }))
        .await
        .expect_error(400, "missing_csr");
    // A CSR that is not PEM, PEM that is not a CSR, a CSR whose signature
    // does not match its content.
    let tampered = tamper(&good.pem);
    assert_ne!(tampered, good.pem);
    let root_pem = std::fs::read_to_string(ca.root()).unwrap();
    for csr in ["hello", root_pem.as_str(), tampered.as_str()] {
        client
            .send(&sign_req(&token.secret, csr))
            .await
            .expect_error(400, "bad_csr");
    }
    // (openssl 3.0 exits 0 either way; its message is the verdict.)
    let (_, out, err) = crate::harness::openssl(&[
        "req",
        "-verify",
        "-noout",
        "-in",
        ca.write("tampered.csr", &tampered).to_str().unwrap(),
    ]);
    assert!(
        format!("{out}{err}").contains("verify failure"),
        "openssl agrees the tampered CSR's signature is bad: {out}{err}"
    );
    // Bodies over 64 KiB. Announced by Content-Length: refused before any
    // of the body is read (the headers alone get the 413).
    let head = format!(
        "POST /v1/sign HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        70 * 1024
    );
    let answer = client.raw_http1(head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains(r#""error":"body_too_large""#), "{answer}");
    // Sent by curl (HTTP/1.1) with a Content-Length, and chunked (no length
    // announced: the limit applies to what is read).
    let big = json!({ "token": token.secret, "csr": "A".repeat(70 * 1024) });
    let file = ca.write("big.json", &big.to_string());
    let file_arg = format!("@{}", file.display());
    let url = server.url("/v1/sign");
    for how in [&[][..], &["-H", "transfer-encoding: chunked"][..]] {
        let mut args = vec![
            "--http1.1",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &file_arg,
        ];
        args.extend_from_slice(how);
        args.push(&url);
        let (status, body) = curl(&ca.root(), &args);
        assert_eq!(status, 413, "{how:?}: {body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "body_too_large", "{json}");
        assert!(json["message"].is_string(), "{json}");
    }
    // No token at all, and tokens that do not exist.
    client
        .post("/v1/sign", &json!({ "csr": good.pem }))
        .await
        .expect_error(401, "missing_token");
    for bogus in ["wdt_AAAA", "not-a-token", &format!("{}x", token.secret)] {
        let resp = client.send(&sign_req(bogus, &good.pem)).await;
        assert_eq!(resp.status, 401, "{}", resp.text());
    }

    // Nothing was issued, and the one use is still there.
    assert_eq!(count(&admin).await, start, "nothing recorded");
    assert_eq!(ca.token_info(&token.id)["uses"], 0);
    client
        .send(&sign_req(&token.secret, &good.pem))
        .await
        .expect(201);
    assert_eq!(count(&admin).await, start + 1);

    // Replayed.
    client
        .send(&sign_req(&token.secret, &good.pem))
        .await
        .expect_error(401, "token_used");

    // Revoked.
    let revoked = ca.token(id, &["--uses", "0"]);
    ca.revoke(&revoked.id, false);
    client
        .send(&sign_req(&revoked.secret, &good.pem))
        .await
        .expect_error(401, "token_revoked");

    // Expired: a one-second token. Until it expires, a request outside its
    // binding is refused with 403 (spending nothing); then with 401.
    let expiring = ca.token(id, &["--expires-in", "1s"]);
    let outside = ca.csr(&["subjectAltName=DNS:evil.example.org"]);
    let resp = poll(Duration::from_secs(15), "the token to expire", || {
        let (client, req) = (client.clone(), sign_req(&expiring.secret, &outside.pem));
        async move {
            let resp = client.send(&req).await;
            (resp.status != 403).then_some(resp)
        }
    })
    .await;
    resp.expect_error(401, "token_expired");
    client
        .send(&sign_req(&expiring.secret, &good.pem))
        .await
        .expect_error(401, "token_expired");
    assert_eq!(
        count(&admin).await,
        start + 1,
        "still nothing more recorded"
    );

    // A CSR asking to be a CA gets an ordinary leaf.
    let token = ca.token(id, &[]);
    let wants_ca = ca.csr(&[
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let json = client
        .send(&sign_req(&token.secret, &wants_ca.pem))
        .await
        .expect(201);
    let leaf = ca.write("leaf.pem", json["certificate"].as_str().unwrap());
    let text = x509(&leaf, &["-text"]);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert_eq!(count(&admin).await, start + 2);
}
