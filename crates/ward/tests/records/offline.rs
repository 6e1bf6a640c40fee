//! An offline certificate (`ward cert create`), made while `ward ca serve`
//! runs on the same directory, is recorded: `openssl ocsp` says good, then
//! revoked after `ward revoke SERIAL --dir`; nginx (`ssl_ocsp on`) accepts
//! it, then refuses it; the served CRL lists it; the admin list shows its
//! origin. On SQLite (two processes on one WAL database) and on PostgreSQL
//! named by ca.toml's `[storage] database`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::common::OutputText;
use crate::common::nginx::{Nginx, config, get_through, nginx_binary};
use crate::dual::DualServer;
use crate::harness::{Backend, Ca, Client, canon_serial, openssl, poll, ward, x509};

/// The URLs ca.toml writes into certificates (ports are placeholders: the
/// tests pass the real listeners).
pub(crate) const OCSP_URL: &str = "http://127.0.0.1:9/ocsp";
pub(crate) const CRL_URL: &str = "http://127.0.0.1:9/v1/crl";

/// Sets the OCSP and CRL URLs, a 1 s CRL refresh (revocations by another
/// process reach the served CRL at the next refresh), and on PostgreSQL the
/// database in ca.toml itself.
pub(crate) fn configure(ca: &Ca) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut new = text
        .replace(
            "# ocsp_url = \"http://ca.example.org/ocsp\"",
            &format!("ocsp_url = \"{OCSP_URL}\""),
        )
        .replace(
            "# crl_url = \"http://ca.example.org/v1/crl\"",
            &format!("crl_url = \"{CRL_URL}\""),
        )
        .replace("crl_refresh = \"1m\"", "crl_refresh = \"1s\"");
    if let Some(url) = ca.database_url() {
        new = new.replace(
            "# database = \"postgres://ward@db.example.org/ward\"",
            &format!("database = \"{url}\""),
        );
        assert!(new.contains(&format!("database = \"{url}\"")), "{new}");
    }
    assert!(
        new.contains("crl_refresh = \"1s\"") && new.contains(OCSP_URL),
        "{new}"
    );
    std::fs::write(&path, new).unwrap();
}

/// An offline certificate: the PEM chain, the key, the leaf alone, the serial.
pub(crate) struct Offline {
    pub(crate) chain: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) leaf: PathBuf,
    pub(crate) serial: String,
}

/// `ward cert create --ca-dir DIR ARGS… --out PREFIX` (no `--database`:
/// ca.toml says where the store is).
pub(crate) fn cert_create(ca: &Ca, name: &str, args: &[&str]) -> Offline {
    let prefix = ca.scratch(name);
    let mut all = vec!["cert", "create", "--ca-dir", ca.dir()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", prefix.to_str().unwrap()]);
    let out = ward(&all);
    assert!(out.status.success(), "cert create: {}", out.stderr_text());
    let chain = prefix.with_extension("crt");
    let key = prefix.with_extension("key");
    let text = std::fs::read_to_string(&chain).unwrap();
    let end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
    let leaf = ca.write("leaf.pem", &format!("{}\n", &text[..end]));
    let serial = canon_serial(&x509(&leaf, &["-serial"]));
    Offline {
        chain,
        key,
        leaf,
        serial,
    }
}

/// `openssl ocsp` about `leaf` at `url`: the status word it prints.
fn ocsp_status(ca: &Ca, leaf: &Path, url: &str) -> String {
    let issuer = ca.file("intermediate.crt");
    let root = ca.root();
    let (ok, out, err) = openssl(&[
        "ocsp",
        "-issuer",
        issuer.to_str().unwrap(),
        "-cert",
        leaf.to_str().unwrap(),
        "-url",
        url,
        "-CAfile",
        root.to_str().unwrap(),
    ]);
    assert!(ok, "openssl ocsp: {out}{err}");
    assert!(err.contains("Response verify OK"), "{err}");
    let line = out.lines().find(|l| l.contains(": ")).unwrap_or_default();
    line.rsplit(": ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The serials a PEM CRL lists, by `openssl crl -text`.
fn crl_serials(pem: &str, dir: &Ca) -> Vec<String> {
    let path = dir.write("crl.pem", pem);
    let (ok, out, err) = openssl(&["crl", "-in", path.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "openssl crl: {err}");
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(canon_serial)
        .collect()
}

/// GET over plain HTTP with curl: the body.
fn http_get(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {url}: {}", out.stderr_text());
    out.stdout_text()
}

/// The admin certificate list: serial → origin.
pub(crate) async fn origins(admin: &Client) -> Vec<(String, String)> {
    let json = admin
        .get("/v1/admin/certificates?limit=1000")
        .await
        .expect(200);
    json["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                canon_serial(c["serial"].as_str().unwrap()),
                c["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn offline_certificates_are_revocable(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    configure(&ca);
    let server = DualServer::start(&ca);
    let ocsp = format!("http://{}/ocsp", server.http);
    let client = cert_create(
        &ca,
        "offline-client",
        &[
            "--profile",
            "client",
            "--spiffe-id",
            "spiffe://example.org/offline-client",
            "--ttl",
            "90d",
        ],
    );
    // The same CRL DP and AIA OCSP URLs as online certificates.
    let text = x509(&client.leaf, &["-text"]);
    assert!(text.contains(&format!("OCSP - URI:{OCSP_URL}")), "{text}");
    assert!(text.contains(&format!("URI:{CRL_URL}")), "{text}");

    assert_eq!(ocsp_status(&ca, &client.leaf, &ocsp), "good");

    // nginx with ssl_ocsp on accepts it (skipped locally without nginx).
    let nginx = nginx_binary().map(|bin| {
        let tls = cert_create(
            &ca,
            "nginx",
            &[
                "--profile",
                "server",
                "--dns",
                "localhost",
                "--ip",
                "127.0.0.1",
            ],
        );
        let dir = ca.pki().path("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = tls.chain.with_extension("");
        let root = ca.root();
        Nginx::start(&bin, &dir, |port| config(&dir, port, &prefix, &root, &ocsp))
    });
    if nginx.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is required under CI"
        );
        println!("nginx part skipped: nginx is not installed");
    }
    if let Some(nginx) = &nginx {
        let (status, body) = get_through(nginx, &ca.root(), &client.chain, &client.key);
        assert_eq!(status, 200, "{body}\n{}", nginx.error_log());
        assert!(body.contains("hello SUCCESS"), "{body}");
    }

    // Revoked by another process on the same store, while the CA runs.
    let out = ca.ward(&["revoke", &client.serial, "--reason", "keyCompromise"]);
    assert!(out.status.success(), "ward revoke: {}", out.stderr_text());
    assert_eq!(ocsp_status(&ca, &client.leaf, &ocsp), "revoked");
    if let Some(nginx) = &nginx {
        let (status, body) = get_through(nginx, &ca.root(), &client.chain, &client.key);
        assert_eq!(status, 400, "{body}\n{}", nginx.error_log());
        assert!(
            nginx.error_log().contains("revoked"),
            "{}",
            nginx.error_log()
        );
    }
    let crl_url = format!("http://{}/v1/crl.pem", server.http);
    poll(
        Duration::from_secs(15),
        "the CRL to list the serial",
        || {
            let listed = crl_serials(&http_get(&crl_url), &ca).contains(&client.serial);
            async move { listed.then_some(()) }
        },
    )
    .await;

    // The admin list shows every certificate the directory's keys signed.
    let admin = Client::new(
        server.https,
        &ca.root(),
        Some((&ca.file("admin.crt"), &ca.file("admin.key"))),
    );
    let list = origins(&admin).await;
    let origin_of = |serial: &str| {
        list.iter()
            .find(|(s, _)| s == serial)
            .map(|(_, o)| o.clone())
    };
    assert_eq!(origin_of(&client.serial).as_deref(), Some("offline"));
    let admin_serial = canon_serial(&x509(&ca.file("admin.crt"), &["-serial"]));
    assert_eq!(origin_of(&admin_serial).as_deref(), Some("admin"));
    for origin in ["ca-server", "ocsp-responder"] {
        assert!(
            list.iter().any(|(_, o)| o == origin),
            "no {origin}: {list:?}"
        );
    }
}

on_both_backends!(offline_certificates_are_revocable);

/// Without a store there is no offline certificate: nothing is written.
#[tokio::test]
async fn cert_create_without_a_store_writes_nothing() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    std::fs::remove_file(ca.file("ward.db")).unwrap();
    let prefix = ca.scratch("orphan");
    let out = ward(&[
        "cert",
        "create",
        "--ca-dir",
        ca.dir(),
        "--profile",
        "server",
        "--dns",
        "orphan.example.org",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("ward.db"),
        "{}",
        out.stderr_text()
    );
    assert!(!prefix.with_extension("crt").exists());
    assert!(!prefix.with_extension("key").exists());
    assert!(!ca.file("ward.db").exists(), "a store was created");
}
