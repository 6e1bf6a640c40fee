//! Handshake refusals (SPEC §6): no certificate, another CA, expired, not
//! yet valid, serverAuth only, no EKU, TLS 1.2 only. Each is refused during
//! the handshake with the right alert, never reaches the upstream, and is
//! counted under its reason.

use ward_testkit::fixture;

use crate::clients::{curl, curl_as, python, s_client};
use crate::harness::{Gate, Pki, mint, s};
use crate::upstream::Echo;

const HANDSHAKES: &str = "ward_gate_handshakes_total";

fn f(name: &str) -> String {
    s(&fixture(name))
}

/// The committed test PKI: server.crt for localhost, root.crt as client CA;
/// the key is served from a private copy (git keeps no file modes), kept as
/// long as the returned directory.
fn fixture_gate(echo: &Echo, extra: &[&str]) -> (Gate, tempfile::TempDir) {
    let keys = ward_testkit::temp_copy(&["server.key"]);
    let key = s(&keys.path().join("server.key"));
    let (cert, root, up) = (f("server.crt"), f("root.crt"), echo.url());
    let mut args = vec![
        "--cert",
        &cert,
        "--key",
        &key,
        "--client-ca",
        &root,
        "--upstream",
        &up,
        "--allow-spiffe-id",
        "spiffe://example.org/*",
    ];
    args.extend_from_slice(extra);
    (Gate::flags(&args), keys)
}

#[test]
fn hostile_clients_are_refused_during_the_handshake_and_counted_by_reason() {
    let echo = Echo::start();
    let (gate, _keys) = fixture_gate(&echo, &[]);
    let root = f("root.crt");
    let url = gate.url();
    let refused_by_curl = |cert: Option<&str>, extra: &[&str]| {
        let r = match cert {
            Some(name) => curl_as(
                &root,
                &f(&format!("{name}.crt")),
                &f(&format!("{name}.key")),
                &[extra, &[url.as_str()]].concat(),
            ),
            None => curl(&[&["--cacert", root.as_str()], extra, &[url.as_str()]].concat()),
        };
        assert_ne!(r.code, 0, "{cert:?} was not refused: {r:?}");
        assert_eq!(r.status, 0, "{r:?}");
        assert!(!r.stderr.is_empty(), "curl said nothing: {r:?}");
    };

    // No certificate at all (curl), and the alert TLS 1.3 has for it (Python).
    refused_by_curl(None, &[]);
    let py = python(gate.addr, "localhost", &root, None, "read");
    assert_eq!(py["ok"], false, "{py}");
    assert!(
        py["error"]
            .as_str()
            .unwrap()
            .contains("CERTIFICATE_REQUIRED"),
        "{py}"
    );

    // A certificate from another CA (a second `ward ca init`): unknown_ca alert.
    let other = Pki::init(&[]);
    let stranger = mint(
        &other,
        "client",
        "spiffe://example.org/stranger",
        "stranger",
        &[],
    );
    let (cert, key) = (
        s(&stranger.with_extension("crt")),
        s(&stranger.with_extension("key")),
    );
    let (out, err) = s_client(
        gate.addr,
        &root,
        Some(&cert),
        Some(&key),
        &["-servername", "localhost"],
        "",
    );
    assert!(
        out.is_empty() && err.contains("alert unknown ca"),
        "{out}\n{err}"
    );
    // Same names as the real hierarchy, other keys (imposter intermediate sent along).
    refused_by_curl(Some("imposter"), &[]);

    // Outside its validity: expired (Python reads the alert), not yet valid.
    let py = python(
        gate.addr,
        "localhost",
        &root,
        Some((&f("expired.crt"), &f("expired.key"))),
        "read",
    );
    assert_eq!(py["ok"], false, "{py}");
    assert!(
        py["error"]
            .as_str()
            .unwrap()
            .contains("CERTIFICATE_EXPIRED"),
        "{py}"
    );
    refused_by_curl(Some("not-yet-valid"), &[]);

    // EKU serverAuth only, and no EKU at all: unsupported_certificate alert.
    refused_by_curl(Some("server-only"), &[]);
    let (out, err) = s_client(
        gate.addr,
        &root,
        Some(&f("no-eku.crt")),
        Some(&f("no-eku.key")),
        &[],
        "",
    );
    assert!(
        out.is_empty() && err.contains("alert unsupported certificate"),
        "{out}\n{err}"
    );

    // A TLS 1.2-only client with a good certificate.
    refused_by_curl(Some("client"), &["--tlsv1.2", "--tls-max", "1.2"]);
    let (_, err) = s_client(
        gate.addr,
        &root,
        Some(&f("client.crt")),
        Some(&f("client.key")),
        &["-tls1_2"],
        "",
    );
    assert!(err.contains("alert protocol version"), "{err}");

    for (reason, n) in [
        ("no_certificate", 2.0),
        ("unknown_ca", 2.0),
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("bad_eku", 2.0),
        ("protocol_version", 2.0),
    ] {
        gate.wait_metric(HANDSHAKES, &[("result", "failure"), ("reason", reason)], n);
    }
    let m = gate.metrics();
    assert_eq!(m.sum(HANDSHAKES, &[("result", "failure")]), 10.0, "{}", m.0);
    assert_eq!(m.sum(HANDSHAKES, &[("result", "success")]), 0.0, "{}", m.0);
    assert_eq!(echo.hits(), 0, "a refused client reached the upstream");

    // The same gate lets a good client through.
    let ok = curl_as(&root, &f("client.crt"), &f("client.key"), &[&url]);
    assert_eq!((ok.code, ok.status), (0, 200), "{ok:?}");
    assert_eq!(echo.hits(), 1);

    let audit = gate.finish();
    let mut refused: Vec<&str> = audit
        .iter()
        .filter(|v| v["event"] == "handshake" && v["result"] == "refused")
        .map(|v| v["reason"].as_str().unwrap())
        .collect();
    refused.sort_unstable();
    assert_eq!(
        refused,
        [
            "bad_eku",
            "bad_eku",
            "expired",
            "no_certificate",
            "no_certificate",
            "not_yet_valid",
            "protocol_version",
            "protocol_version",
            "unknown_ca",
            "unknown_ca",
        ]
    );
}

#[test]
fn tls12_is_opt_in_and_then_negotiates_ecdhe_with_aead() {
    let echo = Echo::start();
    let (gate, _keys) = fixture_gate(&echo, &["--allow-tls12"]);
    let root = f("root.crt");
    let (cert, key) = (f("client.crt"), f("client.key"));
    let ok = curl_as(
        &root,
        &cert,
        &key,
        &["--tlsv1.2", "--tls-max", "1.2", &gate.url()],
    );
    assert_eq!((ok.code, ok.status), (0, 200), "{ok:?}");
    // A CBC-only TLS 1.2 client is still refused.
    let cbc = curl_as(
        &root,
        &cert,
        &key,
        &[
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "--ciphers",
            "ECDHE-ECDSA-AES128-SHA256",
            &gate.url(),
        ],
    );
    assert_ne!(cbc.code, 0, "{cbc:?}");
    gate.wait_metric(HANDSHAKES, &[("result", "failure")], 1.0);
    let m = gate.metrics();
    let tls12: Vec<_> = m
        .samples(HANDSHAKES)
        .into_iter()
        .filter(|(l, _)| l["result"] == "success")
        .collect();
    assert_eq!(tls12.len(), 1, "{}", m.0);
    assert_eq!(tls12[0].0["tls_version"], "TLSv1.2", "{}", m.0);
    let cipher = &tls12[0].0["cipher"];
    assert!(
        cipher.starts_with("TLS_ECDHE_") && cipher.contains("_GCM_"),
        "{cipher}"
    );
    gate.finish();
}

/// Issue 25 item 5: a server key that group or others can read is refused,
/// naming the file and its mode, in the flag form and in a config file,
/// unless the operator says otherwise; a 0600 copy of the same key loads.
#[test]
fn a_key_readable_by_others_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let keys = ward_testkit::temp_copy(&["server.key"]);
    let key = keys.path().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (cert, root, key_s) = (f("server.crt"), f("root.crt"), s(&key));
    let flags = |extra: &[&str]| {
        let mut args = vec![
            "gate",
            "serve",
            "--check-config",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            &cert,
            "--key",
            &key_s,
            "--client-ca",
            &root,
            "--upstream",
            "http://127.0.0.1:9",
        ];
        args.extend_from_slice(extra);
        crate::harness::ward(&args)
    };
    let out = flags(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(&key_s)
            && err.contains("mode 0644")
            && err.contains("--allow-insecure-permissions"),
        "{err}"
    );
    let out = flags(&["--allow-insecure-permissions"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let config = keys.path().join("gate.toml");
    let toml = |allow: bool| {
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n[tls]\nallow_insecure_permissions = {allow}\n\
             [[tenants]]\nname = \"t\"\ndefault = true\ncert = {cert:?}\nkey = {key_s:?}\n\
             client_ca = {root:?}\n[[tenants.routes]]\nname = \"r\"\nupstream = \"http://127.0.0.1:9\"\n"
        )
    };
    let check =
        || crate::harness::ward(&["gate", "serve", "--config", &s(&config), "--check-config"]);
    std::fs::write(&config, toml(false)).unwrap();
    let out = check();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&key_s));
    std::fs::write(&config, toml(true)).unwrap();
    assert!(check().status.success());

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&config, toml(false)).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
