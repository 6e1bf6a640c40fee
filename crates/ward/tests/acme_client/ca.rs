//! `ward ca serve --acme-*` against Pebble: the CA's HTTPS API answers
//! Pebble's tls-alpn-01 validation on its own listener and then presents
//! the certificate Pebble issued, so curl trusting only Pebble's root
//! reaches it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::acme_client::gate::{curl, wait_for};
use crate::acme_client::pebble::{Pebble, PebbleOptions, free_port, have};
use crate::common::Pki;

#[test]
fn the_ca_api_serves_a_certificate_from_pebble() {
    if !have("pebble") || !have("pebble-challtestsrv") || !have("curl") {
        return;
    }
    let port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        http_port: free_port(),
        tls_port: port,
        validity: None,
    });
    let ca = Pki::init(&[]);
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["ca", "serve", "--dir", ca.ca_dir()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--acme-directory", &pebble.directory()])
        .args(["--acme-domain", "ca.acme.test"])
        .arg("--acme-ca-bundle")
        .arg(pebble.https_root())
        .arg("--acme-state-dir")
        .arg(work.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    wait_for(
        "the CA to obtain its certificate",
        Duration::from_secs(60),
        || {
            log.lock()
                .unwrap()
                .contains("the API serves the renewed ACME certificate")
        },
    );
    let root = pebble.issuing_root();
    let (code, status, body, err) = curl(&root, None, "ca.acme.test", port, "/healthz");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        (code, status),
        (0, 200),
        "{err} {body}\n{}",
        log.lock().unwrap()
    );
    assert_eq!(pebble.orders(), 1);
}
