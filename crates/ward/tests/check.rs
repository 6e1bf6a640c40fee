//! End-to-end tests of `ward check` and `ward cert lint`: real `ward`
//! processes against endpoints the tests start (rustls, and openssl
//! s_server where a weak configuration is needed), each hostile endpoint
//! reported under its rule id with exit 1, a good one with exit 0, and every
//! JSON document validated against the committed schema by Python's
//! `jsonschema`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

mod common;
#[path = "check/gate.rs"]
mod gate;
#[path = "check/lint_cli.rs"]
mod lint_cli;
#[path = "check/revocation.rs"]
mod revocation;
#[path = "check/servers.rs"]
mod servers;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{OutputText, Pki, ward};
use servers::{OpensslServer, RustlsServer, certs};
use ward_testkit::fixture;

/// Validates `json` against `docs/<schema>` with Python's jsonschema.
pub(crate) fn validate(schema: &str, json: &str) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(schema);
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.loads(sys.stdin.read())
docs = doc if isinstance(doc, list) and schema.get("type") == "object" else [doc]
for d in docs:
    jsonschema.validate(d, schema, format_checker=jsonschema.FormatChecker())
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&schema)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{json}\ndoes not validate against {}: {}",
        schema.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ward check … --format json`, validates the output, returns the
/// exit code and the document.
pub(crate) async fn check(args: &[&str]) -> (i32, serde_json::Value) {
    let mut argv: Vec<String> = vec!["check".into()];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    argv.extend(["--format".into(), "json".into()]);
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        ward(&refs)
    })
    .await
    .unwrap();
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 1, "exit {code}: {}", out.stderr_text());
    validate("check-output.schema.json", &out.stdout_text());
    (code, serde_json::from_str(&out.stdout_text()).unwrap())
}

/// Finding ids at error level.
pub(crate) fn errors(report: &serde_json::Value) -> BTreeSet<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The fixtures live for a century: a policy that lifts the lifetime caps,
/// so each hostile fixture shows only its own flaw.
fn long_lived_policy(dir: &Path) -> PathBuf {
    let path = dir.join("long-lived.toml");
    std::fs::write(
        &path,
        "max_workload_lifetime = \"40000d\"\nmax_server_lifetime = \"40000d\"\n",
    )
    .unwrap();
    path
}

/// Serves a fixture leaf (with its intermediate) over rustls and checks it
/// against the fixture root, expecting exactly `want` at error level.
async fn fixture_case(name: &str, extra: &[&str], want: &[&str]) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let policy = long_lived_policy(tmp.path());
    let server = RustlsServer::start(
        &fixture(&format!("{name}.crt")),
        &fixture(&format!("{name}.key")),
    )
    .await;
    let target = server.target();
    let root = fixture("root.crt");
    let sni = if extra.contains(&"--sni") {
        &[][..]
    } else {
        &["--sni", "localhost"][..]
    };
    let mut args = vec![target.as_str()];
    args.extend_from_slice(sni);
    args.extend_from_slice(&["--roots", path_str(&root), "--policy", path_str(&policy)]);
    args.extend_from_slice(extra);
    let (code, report) = check(&args).await;
    assert_eq!(errors(&report), set(want), "{name}: {report:#}");
    assert_eq!(code, if want.is_empty() { 0 } else { 1 }, "{name}");
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_intermediate_names_the_missing_issuer() {
    let report = fixture_case("missing-intermediate", &[], &["wchain.unknown_issuer"]).await;
    let missing = &report["chain"]["missing_issuer"];
    assert!(
        missing["issuer"]
            .as_str()
            .unwrap()
            .contains("Intermediate CA"),
        "{report:#}"
    );
    assert!(missing["authority_key_id"].is_string());
    let intermediate = certs(&fixture("intermediate.crt"));
    let ski = ward_pki::lint::Facts::from_der(&intermediate[0])
        .unwrap()
        .subject_key_id;
    assert_eq!(missing["authority_key_id"].as_str(), ski.as_deref());
    assert_eq!(report["chain"]["presented"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_leaf() {
    fixture_case("expired", &[], &["wlife.expired", "wchain.expired"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_eku() {
    // No EKU at all: a verifier that requires serverAuth refuses it.
    let report = fixture_case("no-eku", &[], &["wchain.wrong_eku"]).await;
    let warnings: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "warning")
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert!(warnings.contains(&"w5280.eku_missing"), "{report:#}");
    // A client-only certificate on a server (it has no DNS SAN either).
    fixture_case("client", &[], &["wchain.wrong_eku", "wname.mismatch"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sha1_signature() {
    fixture_case("sha1", &[], &["wsig.weak_hash", "wchain.weak_signature"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostname_and_spiffe_id_mismatch() {
    fixture_case("server", &[], &[]).await;
    let report = fixture_case("server", &["--sni", "www.example.org"], &["wname.mismatch"]).await;
    assert_eq!(report["identity"]["name_valid"], false);
    fixture_case(
        "wrong-td",
        &["--spiffe-id", "spiffe://example.org/*"],
        &["wname.spiffe_id_mismatch"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_1024_leaf() {
    // rustls will not sign with a 1024-bit key; openssl will, at level 0.
    let tmp = tempfile::tempdir().unwrap();
    let policy = long_lived_policy(tmp.path());
    let server = OpensslServer::start(
        &fixture("rsa-1024.crt"),
        &fixture("rsa-1024.key"),
        &["-tls1_3", "-cipher", "DEFAULT@SECLEVEL=0"],
    );
    let (code, report) = check(&[
        &server.target(),
        "--sni",
        "localhost",
        "--roots",
        path_str(&fixture("root.crt")),
        "--policy",
        path_str(&policy),
    ])
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        errors(&report),
        set(&["wkey.rsa_size", "wchain.weak_key"]),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetime_over_398_days() {
    let pki = Pki::init(&["--intermediate-validity", "1000d"]);
    let prefix = pki.path("long");
    let out = ward(&[
        "cert",
        "create",
        "--ca-dir",
        pki.ca_dir(),
        "--profile",
        "server",
        "--dns",
        "localhost",
        "--ttl",
        "400d",
        "--out",
        path_str(&prefix),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let server =
        RustlsServer::start(&prefix.with_extension("crt"), &prefix.with_extension("key")).await;
    let (code, report) = check(&[
        &server.target(),
        "--sni",
        "localhost",
        "--roots",
        path_str(&pki.root()),
    ])
    .await;
    assert_eq!(code, 1);
    assert_eq!(errors(&report), set(&["wlife.max_server"]), "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls12_with_cbc_suites() {
    let (cert, key) = (fixture("server.crt"), fixture("server.key"));
    let tmp = tempfile::tempdir().unwrap();
    let policy = long_lived_policy(tmp.path());
    let roots = fixture("root.crt");
    let base = [
        "--sni",
        "localhost",
        "--roots",
        path_str(&roots),
        "--policy",
        path_str(&policy),
    ];
    // AEAD for modern clients, CBC as well for old ones.
    let both = OpensslServer::start(
        &cert,
        &key,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA",
        ],
    );
    let mut args = vec![both.target()];
    args.extend(base.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report) = check(&refs).await;
    assert_eq!(code, 1);
    assert_eq!(errors(&report), set(&["wtls.tls12_cbc"]), "{report:#}");
    assert_eq!(report["tls"]["version"], "TLSv1_2");
    let legacy = report["tls"]["legacy"].as_array().unwrap();
    assert_eq!(legacy[2]["result"], "accepted");
    assert_eq!(legacy[2]["cipher"], "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA");
    assert_eq!(legacy[0]["result"], "refused");
    drop(both);

    // CBC only: rustls cannot connect, the chain comes from the probe.
    let cbc = OpensslServer::start(
        &cert,
        &key,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"],
    );
    args[0] = cbc.target();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report) = check(&refs).await;
    assert_eq!(code, 1);
    assert_eq!(
        errors(&report),
        set(&["wtls.tls12_cbc", "wtls.no_modern"]),
        "{report:#}"
    );
    assert_eq!(report["chain"]["valid"], true, "{report:#}");
    drop(cbc);

    // TLS 1.0 (OpenSSL 3 allows it only at security level 0).
    let old = OpensslServer::start(
        &cert,
        &key,
        &["-tls1", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"],
    );
    args[0] = old.target();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report) = check(&refs).await;
    assert_eq!(code, 1);
    assert_eq!(
        errors(&report),
        set(&["wtls.tls10", "wtls.no_modern"]),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correctly_configured_endpoint_passes() {
    let pki = Pki::init(&[]);
    let prefix = pki.issue(
        "server",
        "spiffe://example.org/web",
        &["--dns", "localhost"],
    );
    let server =
        RustlsServer::start(&prefix.with_extension("crt"), &prefix.with_extension("key")).await;
    let root = pki.root();
    let (code, report) = check(&[
        &server.target(),
        "--sni",
        "localhost",
        "--roots",
        path_str(&root),
        "--spiffe-id",
        "spiffe://example.org/web",
    ])
    .await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["passed"], true);
    let noisy: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "notice")
        .collect();
    assert!(noisy.is_empty(), "{report:#}");
    assert_eq!(report["tls"]["version"], "TLSv1_3");
    assert_eq!(report["chain"]["valid"], true);
    assert_eq!(report["identity"]["spiffe_id_valid"], true);
    assert_eq!(report["revocation"]["status"], "unchecked");
    for probe in report["tls"]["legacy"].as_array().unwrap() {
        assert_eq!(probe["result"], "refused", "{report:#}");
    }
    // Text output says the same.
    let target = server.target();
    let text = tokio::task::spawn_blocking(move || {
        ward(&[
            "check",
            &target,
            "--sni",
            "localhost",
            "--roots",
            path_str(&root),
        ])
    })
    .await
    .unwrap();
    assert!(text.status.success(), "{}", text.stdout_text());
    assert!(
        text.stdout_text().contains("PASS: 0 errors"),
        "{}",
        text.stdout_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_is_presented_when_given() {
    let (server, mut seen) = RustlsServer::start_mtls(
        &fixture("server.crt"),
        &fixture("server.key"),
        &fixture("root.crt"),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let policy = long_lived_policy(tmp.path());
    let (code, report) = check(&[
        &server.target(),
        "--sni",
        "localhost",
        "--roots",
        path_str(&fixture("root.crt")),
        "--policy",
        path_str(&policy),
        "--cert",
        path_str(&fixture("client.crt")),
        "--key",
        path_str(&fixture("client.key")),
        "--no-legacy",
    ])
    .await;
    assert_eq!(code, 0, "{report:#}");
    assert!(report["tls"]["handshake_error"].is_null(), "{report:#}");
    let id = tokio::time::timeout(std::time::Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, "spiffe://example.org/client");
    // --cert without --key is a usage error.
    let out = ward(&[
        "check",
        &server.target(),
        "--cert",
        path_str(&fixture("client.crt")),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_cannot_be_checked_is_exit_2() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = tokio::task::spawn_blocking(move || ward(&["check", &target, "--format", "json"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout_text().is_empty());
    assert!(
        out.stderr_text().contains("cannot check"),
        "{}",
        out.stderr_text()
    );
    let out = ward(&["check", "no-port-here"]);
    assert_eq!(out.status.code(), Some(2));
}
