//! certbot (PyPI, current) against Ward's ACME server: standalone http-01
//! with `--preferred-profile shortlived`, `certbot renew` driven by ARI
//! (not due at first, due once the certificate is revoked), `certbot
//! revoke`.

use std::path::Path;
use std::process::{Command, Stdio};

use super::setup::{ChallTestSrv, Ports, configure, free_port, have};
use crate::common::OutputText;
use crate::dual::DualServer;
use crate::harness::{Backend, Ca, openssl_verify, x509};

/// Runs certbot with its state under `dir`; returns (success, output).
fn certbot(ca: &Ca, dir: &Path, args: &[&str]) -> (bool, String) {
    let d = |sub: &str| dir.join(sub).to_str().unwrap().to_owned();
    let out = Command::new("certbot")
        .env("REQUESTS_CA_BUNDLE", ca.root())
        .args([
            "--non-interactive",
            "--config-dir",
            &d("config"),
            "--work-dir",
            &d("work"),
            "--logs-dir",
            &d("logs"),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("certbot runs");
    (
        out.status.success(),
        format!("{}{}", out.stdout_text(), out.stderr_text()),
    )
}

fn lifetime_hours(cert: &Path) -> i64 {
    let dates = x509(cert, &["-dates"]);
    let parse = |prefix: &str| {
        let text = dates.lines().find_map(|l| l.strip_prefix(prefix)).unwrap();
        let out = Command::new("date")
            .args(["-u", "-d", text, "+%s"])
            .output()
            .unwrap();
        out.stdout_text().trim().parse::<i64>().unwrap()
    };
    (parse("notAfter=") - parse("notBefore=")) / 3600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certbot_standalone_profile_ari_renewal_and_revoke() {
    if !have("certbot", "pip install certbot")
        || !have("pebble-challtestsrv", "apt-get install pebble")
    {
        return;
    }
    let version = Command::new("certbot").arg("--version").output().unwrap();
    let text = format!("{}{}", version.stdout_text(), version.stderr_text());
    let major: u32 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next()?.parse().ok())
        .unwrap_or(0);
    if major < 4 {
        assert!(
            std::env::var_os("CI").is_none(),
            "certbot >= 4 is required under CI (pip install certbot): {text}"
        );
        println!("skipped: certbot {text} has no --preferred-profile (pip install certbot)");
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
    let directory = format!("https://{}/acme/web/directory", server.https);
    let port = ports.http01.to_string();
    let (ok, out) = certbot(
        &ca,
        work.path(),
        &[
            "certonly",
            "--standalone",
            "--http-01-address",
            "127.0.0.1",
            "--http-01-port",
            &port,
            "--server",
            &directory,
            "--agree-tos",
            "-m",
            "ops@acme.test",
            "--preferred-profile",
            "shortlived",
            "--cert-name",
            "e",
            "-d",
            "e.acme.test",
        ],
    );
    assert!(ok, "certbot certonly: {out}\nCA: {}", server.stderr());
    let live = work.path().join("config/live/e");
    let cert = live.join("cert.pem");
    let (ok, why) = openssl_verify(&ca.root(), &live.join("fullchain.pem"), "sslserver");
    assert!(ok, "{why}");
    assert!(x509(&cert, &["-ext", "subjectAltName"]).contains("DNS:e.acme.test"));
    assert_eq!(lifetime_hours(&cert), 6, "the shortlived profile is 6h");

    // Not due: the ARI window starts at 2/3 of the lifetime.
    let renew = |work: &Path| {
        certbot(
            &ca,
            work,
            &[
                "renew",
                "--no-random-sleep-on-renew",
                "--http-01-address",
                "127.0.0.1",
                "--http-01-port",
                &port,
            ],
        )
    };
    let (ok, out) = renew(work.path());
    assert!(ok, "certbot renew: {out}");
    assert!(
        !work.path().join("config/archive/e/cert2.pem").exists(),
        "renewed too early: {out}"
    );

    // certbot honours the Retry-After of the ARI answer (1 h) before
    // asking again; drop what it remembered, as if that hour had passed.
    let conf = work.path().join("config/renewal/e.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("ari_retry_after"),
        "certbot asked ARI: {text}"
    );
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("ari_retry_after"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&conf, kept).unwrap();

    // certbot revoke; ARI then says renew now.
    let (ok, out) = certbot(
        &ca,
        work.path(),
        &[
            "revoke",
            "--server",
            &directory,
            "--cert-path",
            cert.to_str().unwrap(),
            "--no-delete-after-revoke",
        ],
    );
    assert!(ok, "certbot revoke: {out}\nCA: {}", server.stderr());
    let (ok, out) = renew(work.path());
    assert!(
        ok,
        "certbot renew after revocation: {out}\nCA: {}",
        server.stderr()
    );
    assert!(
        work.path().join("config/archive/e/cert2.pem").exists(),
        "not renewed after revocation: {out}"
    );
}
