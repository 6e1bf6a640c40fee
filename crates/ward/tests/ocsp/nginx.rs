//! nginx (`ssl_verify_client on; ssl_ocsp on;`) trusting the Ward root and
//! asking Ward's responder: a good Ward client certificate gets in, a
//! revoked one is refused. nginx checks the leaf *and* the intermediate
//! (ARCHITECTURE.md, trap 13), so this also proves the root-side answers.
//!
//! The intermediate is made by `ward ca init`, before any responder URL is
//! known, so it carries no AIA: nginx is pointed at the responder with
//! `ssl_ocsp_responder` (an IP URL, so no `resolver` is needed). No
//! `ssl_ocsp_cache` is configured, so nginx asks on every handshake.
//!
//! Skipped with a notice when nginx is not installed, unless `CI` is set.

use super::setup::{configure, issue};
use crate::common::OutputText;
use crate::common::nginx::{Nginx, config, get_through, nginx_binary};
use crate::dual::DualServer;
use crate::harness::{Backend, Ca, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_ssl_ocsp_accepts_good_and_refuses_revoked_client_certificates() {
    let Some(bin) = nginx_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is required under CI (apt-get install nginx)"
        );
        println!("skipped: nginx is not installed (apt-get install nginx)");
        return;
    };
    let ca = Ca::new(Backend::Sqlite).unwrap();
    configure(&ca);
    let server = DualServer::start(&ca);
    let client = Client::new(server.https, &ca.root(), None);
    let good = issue(&ca, &client, "good").await;
    let bad = issue(&ca, &client, "bad").await;
    // nginx's own server certificate, from the same CA (offline issuance).
    let tls = ca.pki().issue(
        "server",
        "spiffe://example.org/nginx",
        &["--ip", "127.0.0.1", "--dns", "localhost"],
    );
    let dir = ca.pki().path("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let root = ca.root();
    let responder = format!("http://{}/ocsp", server.http);
    let nginx = Nginx::start(&bin, &dir, |port| {
        config(&dir, port, &tls, &root, &responder)
    });

    let (status, body) = get_through(&nginx, &root, &good.chain, &good.key);
    assert_eq!(status, 200, "{body}\n{}", nginx.error_log());
    assert!(body.contains("hello SUCCESS"), "{body}");
    let (status, _) = get_through(&nginx, &root, &bad.chain, &bad.key);
    assert_eq!(status, 200, "{}", nginx.error_log());

    let out = ca.ward(&["revoke", &bad.serial, "--reason", "keyCompromise"]);
    assert!(out.status.success(), "ward revoke: {}", out.stderr_text());
    // nginx completes the handshake and answers 400 for a failed client
    // verification; its log names the OCSP verdict.
    let (status, body) = get_through(&nginx, &root, &bad.chain, &bad.key);
    assert_eq!(status, 400, "{body}\n{}", nginx.error_log());
    let log = nginx.error_log();
    assert!(log.contains("revoked"), "{log}");
    // The good certificate is still accepted.
    let (status, _) = get_through(&nginx, &root, &good.chain, &good.key);
    assert_eq!(status, 200, "{}", nginx.error_log());
}
