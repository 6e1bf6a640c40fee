//! What operators see: `/metrics` (the SPEC §6 families, handshakes by
//! result, reason, version, cipher, group and ALPN), `/healthz`, `/readyz`,
//! and one JSON audit line per handshake and per request.

use ward_testkit::fixture;

use crate::clients::{RustClient, curl, curl_as, python, s_client};
use crate::harness::{Gate, admin_get, s};
use crate::upstream::Echo;

const HANDSHAKES: &str = "ward_gate_handshakes_total";

#[test]
fn metrics_and_audit_lines_describe_every_handshake_and_request() {
    let echo = Echo::start();
    let f = |n: &str| s(&fixture(n));
    let (root, cert, key, up) = (f("root.crt"), f("client.crt"), f("client.key"), echo.url());
    // A private copy of the committed key (git keeps no file modes).
    let keys = ward_testkit::temp_copy(&["server.key"]);
    let gate = Gate::flags(&[
        "--cert",
        &f("server.crt"),
        "--key",
        &s(&keys.path().join("server.key")),
        "--client-ca",
        &root,
        "--upstream",
        &up,
        "--allow-spiffe-id",
        "spiffe://example.org/client",
        "--allow-tls12",
    ]);
    assert_eq!(admin_get(gate.admin, "/healthz").trim(), "ok");
    assert_eq!(admin_get(gate.admin, "/readyz").trim(), "ready");

    // Successes that differ in version, cipher, group and ALPN.
    let url = gate.url();
    for extra in [
        &["--http2"][..],
        &["--http1.1", "--curves", "P-256"],
        &["--tlsv1.2", "--tls-max", "1.2"],
        &["--http2", "--tls13-ciphers", "TLS_CHACHA20_POLY1305_SHA256"],
    ] {
        let r = curl_as(&root, &cert, &key, &[extra, &[url.as_str()]].concat());
        assert_eq!((r.code, r.status), (0, 200), "{extra:?}: {r:?}");
    }
    let rust = RustClient::new(&fixture("root.crt"), &cert, &key);
    assert_eq!(rust.get(gate.addr, "/rust").unwrap().status, 200);
    let py = python(gate.addr, "localhost", &root, Some((&cert, &key)), "get");
    assert_eq!(py["ok"], true, "{py}");
    // A denied identity (peer), a missing route is impossible here (one
    // route for "/"), and refusals.
    let r = curl_as(&root, &f("peer.crt"), &f("peer.key"), &[&url]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = curl(&["--cacert", &root, &url]);
    assert_ne!(r.code, 0, "{r:?}");
    let (_, err) = s_client(
        gate.addr,
        &root,
        Some(&f("expired.crt")),
        Some(&f("expired.key")),
        &[],
        "",
    );
    assert!(err.contains("alert certificate expired"), "{err}");
    gate.signal("HUP");
    gate.wait_metric("ward_gate_reloads_total", &[("result", "success")], 1.0);
    gate.wait_metric(HANDSHAKES, &[], 9.0);
    gate.wait_metric("ward_gate_requests_total", &[], 7.0);

    let m = gate.metrics();
    let success = |labels: &[(&str, &str)]| {
        let mut all = vec![("result", "success")];
        all.extend_from_slice(labels);
        let n = m.sum(HANDSHAKES, &all);
        assert!(n >= 1.0, "no handshake with {labels:?}:\n{}", m.0);
    };
    success(&[
        ("tls_version", "TLSv1.3"),
        ("group", "X25519"),
        ("alpn", "h2"),
    ]);
    success(&[
        ("tls_version", "TLSv1.3"),
        ("group", "secp256r1"),
        ("alpn", "http/1.1"),
    ]);
    let tls12: Vec<_> = m
        .samples(HANDSHAKES)
        .into_iter()
        .filter(|(l, _)| l["tls_version"] == "TLSv1.2")
        .collect();
    assert_eq!(tls12.len(), 1, "{}", m.0);
    assert!(
        tls12[0].0["cipher"].starts_with("TLS_ECDHE_ECDSA_WITH_"),
        "{}",
        m.0
    );
    success(&[("cipher", "TLS13_CHACHA20_POLY1305_SHA256")]);
    success(&[("group", "X25519MLKEM768"), ("alpn", "")]);
    for (reason, n) in [("", 7.0), ("no_certificate", 1.0), ("expired", 1.0)] {
        assert_eq!(
            m.sum(HANDSHAKES, &[("reason", reason)]),
            n,
            "{reason}:\n{}",
            m.0
        );
    }
    assert_eq!(
        m.sum(
            "ward_gate_requests_total",
            &[("route", "default"), ("status", "200")]
        ),
        6.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.sum(
            "ward_gate_requests_total",
            &[("route", "default"), ("status", "403")]
        ),
        1.0,
        "{}",
        m.0
    );
    // The duration histogram is labelled by tenant and result: the two
    // refused handshakes are timed too.
    assert_eq!(
        m.sum(
            "ward_gate_handshake_seconds_count",
            &[("tenant", "default"), ("result", "success")]
        ),
        7.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.sum(
            "ward_gate_handshake_seconds_count",
            &[("result", "failure")]
        ),
        2.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.sum("ward_gate_upstream_seconds_count", &[("route", "default")]),
        6.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.samples("ward_gate_connections_active").len(),
        1,
        "{}",
        m.0
    );
    let expiry = m.sum("ward_gate_cert_expiry_seconds", &[("tenant", "default")]);
    assert!(expiry > 365.0 * 86400.0, "{expiry}");
    assert_eq!(m.sum("ward_gate_denied_total", &[]), 1.0, "{}", m.0);

    // Every line parses and carries the SPEC §6 fields (checked in
    // `finish`); here, the values for what just happened.
    let audit = gate.finish();
    let handshakes: Vec<_> = audit.iter().filter(|v| v["event"] == "handshake").collect();
    let requests: Vec<_> = audit.iter().filter(|v| v["event"] == "request").collect();
    assert_eq!((handshakes.len(), requests.len()), (9, 7), "{audit:#?}");
    let fingerprint = crate::harness::openssl_fingerprint(&cert);
    for h in handshakes.iter().filter(|h| h["result"] == "accepted") {
        assert_eq!(h["sni"], "localhost", "{h}");
        if h["spiffe_id"] == "spiffe://example.org/client" {
            assert_eq!(h["fingerprint"], fingerprint.as_str(), "{h}");
            assert_eq!(
                h["sans"],
                serde_json::json!(["spiffe://example.org/client"]),
                "{h}"
            );
        }
    }
    let alpns: Vec<_> = handshakes
        .iter()
        .filter(|h| h["result"] == "accepted")
        .map(|h| h["alpn"].clone())
        .collect();
    assert!(
        alpns.contains(&"h2".into())
            && alpns.contains(&"http/1.1".into())
            && alpns.contains(&serde_json::Value::Null),
        "{alpns:?}"
    );
    let mut reasons: Vec<_> = handshakes
        .iter()
        .filter_map(|h| h["reason"].as_str())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["expired", "no_certificate"]);
    // A refused certificate is named (issue 14 item 8): rustls keeps no
    // peer chain when verification fails; the gate keeps the refused leaf.
    let expired = handshakes
        .iter()
        .find(|h| h["reason"] == "expired")
        .unwrap();
    let expired_crt = f("expired.crt");
    assert_eq!(
        expired["fingerprint"],
        crate::harness::openssl_fingerprint(&expired_crt).as_str(),
        "{expired}"
    );
    let serial =
        |v: &serde_json::Value| v.as_str().unwrap_or("").trim_start_matches('0').to_owned();
    assert_eq!(
        serial(&expired["serial"]),
        openssl_serial(&expired_crt),
        "{expired}"
    );
    assert!(expired["subject"].is_string(), "{expired}");
    assert!(
        expired["spiffe_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("spiffe://example.org/")),
        "{expired}"
    );
    let bare = handshakes
        .iter()
        .find(|h| h["reason"] == "no_certificate")
        .unwrap();
    for field in ["subject", "serial", "fingerprint", "spiffe_id"] {
        assert!(bare[field].is_null(), "no certificate, yet {field}: {bare}");
    }
    for r in &requests {
        assert_eq!(r["route"], "default", "{r}");
    }
    let denied = requests.iter().find(|r| r["status"] == 403).unwrap();
    assert_eq!(denied["spiffe_id"], "spiffe://example.org/peer");
    assert_eq!(
        (&denied["result"], &denied["reason"]),
        (&"refused".into(), &"forbidden".into())
    );
}

/// The serial openssl reads from a PEM certificate: lowercase hex without
/// leading zeros.
fn openssl_serial(file: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", file])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (_, hex) = text.trim().split_once('=').unwrap();
    hex.to_ascii_lowercase().trim_start_matches('0').to_owned()
}
