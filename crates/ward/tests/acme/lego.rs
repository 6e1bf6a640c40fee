//! lego (Debian) against Ward's ACME server: http-01, tls-alpn-01 and
//! dns-01 (records through lego's `exec` provider into
//! `pebble-challtestsrv`), a wildcard, external account binding, and
//! `lego revoke` followed by `openssl ocsp`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::setup::{ChallTestSrv, Ports, configure, free_port, have};
use crate::common::OutputText;
use crate::dual::DualServer;
use crate::harness::{Backend, Ca, openssl, openssl_verify, x509};

/// Runs lego against provisioner `prov`; returns (success, output).
fn lego(ca: &Ca, server: &DualServer, prov: &str, path: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("lego")
        .env("LEGO_CA_CERTIFICATES", ca.root())
        .args([
            "--server",
            &format!("https://{}/acme/{prov}/directory", server.https),
            "--accept-tos",
            "--email",
            "ops@acme.test",
            "--path",
            path.to_str().unwrap(),
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

/// The certificate lego saved for `domain` (full chain, leaf first).
fn saved(path: &Path, domain: &str) -> PathBuf {
    path.join("certificates")
        .join(format!("{}.crt", domain.replace('*', "_")))
}

/// Checks the chain verifies for serverAuth and the leaf names exactly `domain`.
fn check_issued(ca: &Ca, chain: &Path, domain: &str) {
    let (ok, why) = openssl_verify(&ca.root(), chain, "sslserver");
    assert!(ok, "openssl verify: {why}");
    let text = x509(chain, &["-ext", "subjectAltName"]);
    assert!(text.contains(&format!("DNS:{domain}")), "{text}");
    assert!(
        !text.contains("URI:"),
        "ACME certificates carry no SPIFFE ID: {text}"
    );
    assert_eq!(text.matches("DNS:").count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lego_http01_tls_alpn01_dns01_eab_and_revoke() {
    if !have("lego", "apt-get install lego")
        || !have("pebble-challtestsrv", "apt-get install pebble")
        || !have("curl", "apt-get install curl")
    {
        return;
    }
    let dns = ChallTestSrv::start();
    let ports = Ports {
        http01: free_port(),
        tlsalpn01: free_port(),
        dns: dns.dns,
    };
    let ca = Ca::new(Backend::Sqlite).unwrap();
    configure(&ca, &ports, "");
    let server = DualServer::start(&ca);
    let work = tempfile::tempdir().unwrap();

    // http-01.
    let http_path = work.path().join("http");
    let http_port = format!("127.0.0.1:{}", ports.http01);
    let (ok, out) = lego(
        &ca,
        &server,
        "web",
        &http_path,
        &[
            "--http",
            "--http.port",
            &http_port,
            "-d",
            "a.acme.test",
            "run",
        ],
    );
    assert!(ok, "lego http-01: {out}\nCA: {}", server.stderr());
    check_issued(&ca, &saved(&http_path, "a.acme.test"), "a.acme.test");

    // tls-alpn-01.
    let tls_path = work.path().join("tls");
    let tls_port = format!("127.0.0.1:{}", ports.tlsalpn01);
    let (ok, out) = lego(
        &ca,
        &server,
        "web",
        &tls_path,
        &["--tls", "--tls.port", &tls_port, "-d", "b.acme.test", "run"],
    );
    assert!(ok, "lego tls-alpn-01: {out}\nCA: {}", server.stderr());
    check_issued(&ca, &saved(&tls_path, "b.acme.test"), "b.acme.test");

    // dns-01 for a wildcard, the record set through lego's exec provider.
    let dns_path = work.path().join("dns");
    std::fs::create_dir_all(&dns_path).unwrap();
    let script = dns.txt_script(&dns_path, 0);
    let resolver = format!("127.0.0.1:{}", dns.dns);
    let out = Command::new("lego")
        .env("LEGO_CA_CERTIFICATES", ca.root())
        .env("EXEC_PATH", &script)
        .env("EXEC_PROPAGATION_TIMEOUT", "30")
        .env("EXEC_POLLING_INTERVAL", "1")
        .args([
            "--server",
            &format!("https://{}/acme/web/directory", server.https),
            "--accept-tos",
            "--email",
            "ops@acme.test",
            "--path",
            dns_path.to_str().unwrap(),
            "--dns",
            "exec",
            "--dns.resolvers",
            &resolver,
            "--dns.disable-cp",
            "-d",
            "*.c.acme.test",
            "run",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lego dns-01: {}{}\nCA: {}",
        out.stdout_text(),
        out.stderr_text(),
        server.stderr()
    );
    check_issued(&ca, &saved(&dns_path, "*.c.acme.test"), "*.c.acme.test");

    // External account binding: refused without, accepted with a key.
    let eab_path = work.path().join("eab");
    let (ok, out) = lego(
        &ca,
        &server,
        "eab",
        &eab_path,
        &[
            "--http",
            "--http.port",
            &http_port,
            "-d",
            "d.acme.test",
            "run",
        ],
    );
    assert!(!ok, "an account without EAB was accepted: {out}");
    // lego reads `externalAccountRequired` from the directory and stops
    // before asking; the server's own refusal is tested in hostile.rs.
    assert!(
        out.contains("External Account Binding") || out.contains("externalAccountRequired"),
        "{out}"
    );
    let created = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args([
            "acme",
            "eab",
            "create",
            "--dir",
            ca.dir(),
            "--provisioner",
            "eab",
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", created.stderr_text());
    let text = created.stdout_text();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap()
            .to_owned()
    };
    let (kid, hmac) = (field("key_id"), field("hmac_key"));
    let eab_path = work.path().join("eab2");
    let (ok, out) = lego(
        &ca,
        &server,
        "eab",
        &eab_path,
        &[
            "--eab",
            "--kid",
            &kid,
            "--hmac",
            &hmac,
            "--http",
            "--http.port",
            &http_port,
            "-d",
            "d.acme.test",
            "run",
        ],
    );
    assert!(ok, "lego with EAB: {out}\nCA: {}", server.stderr());
    check_issued(&ca, &saved(&eab_path, "d.acme.test"), "d.acme.test");
    // The key binds one account only.
    let (ok, out) = lego(
        &ca,
        &server,
        "eab",
        &work.path().join("eab3"),
        &[
            "--eab",
            "--kid",
            &kid,
            "--hmac",
            &hmac,
            "--http",
            "--http.port",
            &http_port,
            "-d",
            "d.acme.test",
            "run",
        ],
    );
    assert!(!ok, "an EAB key was used twice: {out}");

    // lego revoke, then OCSP says revoked.
    let chain = saved(&http_path, "a.acme.test");
    let leaf = work.path().join("a-leaf.pem");
    let pem = std::fs::read_to_string(&chain).unwrap();
    let first = pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    std::fs::write(&leaf, first).unwrap();
    let ocsp = |cert: &Path| {
        let issuer = ca.file("intermediate.crt");
        let url = format!("http://{}/ocsp", server.http);
        openssl(&[
            "ocsp",
            "-issuer",
            issuer.to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-url",
            &url,
            "-CAfile",
            ca.root().to_str().unwrap(),
        ])
    };
    let (ok, out, err) = ocsp(&leaf);
    assert!(
        ok && out.contains(": good"),
        "before revocation: {out}{err}"
    );
    let (ok, out) = lego(
        &ca,
        &server,
        "web",
        &http_path,
        &["-d", "a.acme.test", "revoke"],
    );
    assert!(ok, "lego revoke: {out}\nCA: {}", server.stderr());
    let (ok, out, err) = ocsp(&leaf);
    assert!(
        ok && out.contains(": revoked"),
        "after revocation: {out}{err}"
    );
}
