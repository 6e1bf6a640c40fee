//! `openssl ocsp` against `ward ca serve`: good, then revoked with its
//! reason and time after `ward revoke` (remote and local), unknown serials,
//! the intermediate answered by the root side, SHA-1 and SHA-256 CertIDs,
//! nonces, GET and POST on both listeners, and malformed requests.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;

use super::setup::{Leaf, OCSP_URL, configure, issue, openssl_ocsp};
use crate::common::{OutputText, sample};
use crate::dual::DualServer;
use crate::harness::{Backend, Ca, Client, Req, openssl, x509};

on_both_backends!(openssl_sees_good_then_revoked);

/// Asserts a verified single answer; returns openssl's stdout.
fn answered(result: (bool, String, String), want: &str) -> String {
    let (ok, out, err) = result;
    assert!(ok, "openssl ocsp failed:\n{out}\n{err}");
    assert!(err.contains("Response verify OK"), "{out}\n{err}");
    // openssl sends a nonce by default and warns when it is not echoed.
    assert!(!err.contains("WARNING"), "{err}");
    assert!(out.contains(&format!(": {want}")), "want {want}:\n{out}");
    assert!(
        out.contains("This Update:") && out.contains("Next Update:"),
        "{out}"
    );
    out
}

/// `curl` with `args`; returns (status, headers lowercased), body into `out`.
fn curl_to(out: &Path, args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-D", "-", "-o"])
        .arg(out)
        .args(args)
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "curl: {}", output.stderr_text());
    let text = output.stdout_text();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text.to_ascii_lowercase())
}

/// `openssl ocsp -respin` of a saved answer: (ok, stdout + stderr).
fn read_response(ca: &Ca, resp: &Path, leaf: &Leaf) -> (bool, String) {
    let (ok, out, err) = openssl(&[
        "ocsp",
        "-no_nonce",
        "-respin",
        resp.to_str().unwrap(),
        "-issuer",
        ca.file("intermediate.crt").to_str().unwrap(),
        "-cert",
        leaf.cert.to_str().unwrap(),
        "-CAfile",
        ca.root().to_str().unwrap(),
    ]);
    (ok, format!("{out}{err}"))
}

async fn openssl_sees_good_then_revoked(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    configure(&ca);
    let server = DualServer::start(&ca);
    let client = Client::new(server.https, &ca.root(), None);
    let url = format!("http://{}/ocsp", server.http);
    let a = issue(&ca, &client, "a").await;
    let b = issue(&ca, &client, "b").await;

    // Issued certificates point at the responder (AIA, id-ad-ocsp).
    assert_eq!(x509(&a.cert, &["-ocsp_uri"]).trim(), OCSP_URL);

    // Good, with SHA-1 (openssl's default) and SHA-256 CertIDs, signed by
    // the delegated responder and verified up to the root alone.
    answered(
        openssl_ocsp(&ca, "intermediate.crt", &a.cert, &url, &[]),
        "good",
    );
    answered(
        openssl_ocsp(&ca, "intermediate.crt", &a.cert, &url, &["-sha256"]),
        "good",
    );
    // The intermediate, answered by the root-issued responder.
    answered(
        openssl_ocsp(&ca, "root.crt", &ca.file("intermediate.crt"), &url, &[]),
        "good",
    );
    // A serial this CA never issued.
    let (ok, out, err) = openssl(&[
        "ocsp",
        "-issuer",
        ca.file("intermediate.crt").to_str().unwrap(),
        "-serial",
        "0x7e57",
        "-url",
        &url,
        "-CAfile",
        ca.root().to_str().unwrap(),
    ]);
    assert!(ok && err.contains("Response verify OK"), "{out}{err}");
    assert!(out.contains("0x7e57: unknown"), "{out}");

    // Remote `ward revoke`: the next answer says revoked, with time and reason.
    let out = crate::common::ward(&[
        "revoke",
        &a.serial,
        "--reason",
        "keyCompromise",
        "--ca",
        &format!("https://{}", server.https),
        "--admin-cert",
        ca.file("admin.crt").to_str().unwrap(),
        "--admin-key",
        ca.file("admin.key").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "ward revoke: {}", out.stderr_text());
    let text = answered(
        openssl_ocsp(&ca, "intermediate.crt", &a.cert, &url, &[]),
        "revoked",
    );
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    assert!(text.contains("Revocation Time:"), "{text}");
    answered(
        openssl_ocsp(&ca, "intermediate.crt", &a.cert, &url, &["-sha256"]),
        "revoked",
    );
    // `ward revoke --dir` writes the store directly: OCSP sees it at once
    // (no CRL refresh in between), and `b` alone is affected.
    answered(
        openssl_ocsp(&ca, "intermediate.crt", &b.cert, &url, &[]),
        "good",
    );
    let out = ca.ward(&["revoke", &b.serial, "--reason", "superseded"]);
    assert!(
        out.status.success(),
        "ward revoke --dir: {}",
        out.stderr_text()
    );
    let text = answered(
        openssl_ocsp(&ca, "intermediate.crt", &b.cert, &url, &[]),
        "revoked",
    );
    assert!(text.contains("Reason: superseded"), "{text}");

    // The same request over the HTTPS listener, POST and GET.
    let req = ca.scratch("req.der");
    let (ok, _, err) = openssl(&[
        "ocsp",
        "-issuer",
        ca.file("intermediate.crt").to_str().unwrap(),
        "-cert",
        a.cert.to_str().unwrap(),
        "-reqout",
        req.to_str().unwrap(),
    ]);
    assert!(ok, "openssl ocsp -reqout: {err}");
    let der = std::fs::read(&req).unwrap();
    let posted = client.send(&Req::raw("/ocsp", der.clone())).await;
    assert_eq!(posted.status, 200);
    let resp = ca.write("resp-post", "");
    std::fs::write(&resp, &posted.body).unwrap();
    let (ok, text) = read_response(&ca, &resp, &a);
    assert!(
        ok && text.contains("revoked") && text.contains("verify OK"),
        "{text}"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let escaped = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let got = client.get(&format!("/ocsp/{escaped}")).await;
    assert_eq!(got.status, 200);
    std::fs::write(&resp, &got.body).unwrap();
    let (ok, text) = read_response(&ca, &resp, &a);
    assert!(
        ok && text.contains("revoked") && text.contains("verify OK"),
        "{text}"
    );

    // GET over plain HTTP: unescaped base64 (slashes and all) works too, with
    // the OCSP content type and caching bounded by nextUpdate (5m).
    let resp = ca.scratch("resp-get");
    let (status, headers) = curl_to(&resp, &[&format!("http://{}/ocsp/{b64}", server.http)]);
    assert_eq!(status, 200, "{headers}");
    assert!(
        headers.contains("content-type: application/ocsp-response"),
        "{headers}"
    );
    assert!(headers.contains("max-age=300"), "{headers}");
    let (ok, text) = read_response(&ca, &resp, &a);
    assert!(ok && text.contains("revoked"), "{text}");

    let metrics = client.get("/metrics").await.text();
    for result in ["good", "revoked", "unknown"] {
        let series = format!(r#"ward_ca_ocsp_responses_total{{result="{result}"}}"#);
        assert!(
            sample(&metrics, &series).is_some_and(|n| n >= 1.0),
            "{series}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_malformed_request_and_limits_hold() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = DualServer::start(&ca);
    let client = Client::new(server.https, &ca.root(), None);
    let http = |p: &str| format!("http://{}{p}", server.http);
    let malformed = |resp: &Path| {
        let (_, out, err) = openssl(&[
            "ocsp",
            "-respin",
            resp.to_str().unwrap(),
            "-resp_text",
            "-noverify",
        ]);
        let text = format!("{out}{err}");
        assert!(text.contains("malformedrequest (1)"), "{text}");
    };

    let garbage = ca.write("garbage", "garbage, not DER");
    for args in [
        vec![
            "--data-binary".to_owned(),
            format!("@{}", garbage.display()),
            "-H".to_owned(),
            "Content-Type: application/ocsp-request".to_owned(),
            http("/ocsp"),
        ],
        vec![http("/ocsp/Z2FyYmFnZQ%3D%3D")],
        vec![http("/ocsp/!!not-base64!!")],
        vec![http("/ocsp")],
    ] {
        let resp = ca.scratch("resp");
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, headers) = curl_to(&resp, &refs);
        assert_eq!(status, 200, "{args:?}: {headers}");
        assert!(
            headers.contains("content-type: application/ocsp-response"),
            "{headers}"
        );
        assert!(headers.contains("cache-control: no-store"), "{headers}");
        malformed(&resp);
    }
    // The HTTPS listener answers the same way.
    let got = client
        .send(&Req::raw("/ocsp", b"\x30\x02\x05\x00".to_vec()))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, [0x30, 0x03, 0x0a, 0x01, 0x01]);

    // Bodies over 16 KiB are refused before they are read.
    let big = ca.write("big", &"A".repeat(16 * 1024 + 1));
    let resp = ca.scratch("resp-big");
    let (status, _) = curl_to(
        &resp,
        &[
            "--data-binary",
            &format!("@{}", big.display()),
            &http("/ocsp"),
        ],
    );
    assert_eq!(status, 413);
    let body = std::fs::read_to_string(&resp).unwrap();
    assert!(body.contains("\"body_too_large\""), "{body}");
    // So are absurd GET paths.
    let long = http(&format!("/ocsp/{}", "A".repeat(70 * 1024)));
    let (status, _) = curl_to(&ca.scratch("resp-long"), &[&long]);
    assert_eq!(status, 414);

    // Every answer is counted by what it said; the size refusals are HTTP
    // errors, not OCSP answers.
    let metrics = client.get("/metrics").await.text();
    let count = |result: &str| {
        sample(
            &metrics,
            &format!(r#"ward_ca_ocsp_responses_total{{result="{result}"}}"#),
        )
    };
    assert_eq!(count("malformed_request"), Some(5.0), "{metrics}");
    assert_eq!(count("good"), None, "{metrics}");
}
