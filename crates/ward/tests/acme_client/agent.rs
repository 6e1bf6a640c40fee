//! `ward agent run --acme-*` against Pebble: the certificate lands in
//! `--out-dir` as cert.pem and key.pem (0600), the hook runs, openssl
//! verifies the chain against Pebble's issuing root, and a restart
//! delivers the stored certificate without a new order.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::acme_client::pebble::{Pebble, PebbleOptions, free_port, have};
use crate::common::OutputText;

/// Starts the agent and waits for its "certificate ready" line.
fn agent(args: &[String]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["agent", "run"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.starts_with("ward agent: certificate ready:") {
                    return (child, line);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the agent delivered no certificate: {seen}");
            }
        }
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");
}

fn pubkey(args: &[&str], file: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_text());
    out.stdout_text()
}

#[test]
fn agent_writes_the_acme_certificate_and_runs_the_hook_then_reuses_it() {
    if !have("pebble") || !have("pebble-challtestsrv") || !have("openssl") {
        return;
    }
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        http_port,
        tls_port: free_port(),
        validity: None,
    });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let hook_log = work.path().join("hook.log");
    let args: Vec<String> = [
        "--acme-directory",
        &pebble.directory(),
        "--acme-domain",
        "host.acme.test",
        "--acme-challenge",
        "http-01",
        "--acme-http01-listen",
        &format!("127.0.0.1:{http_port}"),
        "--acme-ca-bundle",
        pebble.https_root().to_str().unwrap(),
        "--acme-state-dir",
        work.path().join("state").to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--on-rotate",
        &format!("echo rotated >> {}", hook_log.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (child, line) = agent(&args);
    assert!(line.contains("host.acme.test"), "{line}");
    stop(child);
    let root = pebble.issuing_root();
    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&cert)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        verify.stdout_text(),
        verify.stderr_text()
    );
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in"], &cert),
        pubkey(&["pkey", "-pubout", "-in"], &key)
    );
    assert_eq!(std::fs::read_to_string(&hook_log).unwrap(), "rotated\n");
    let orders = pebble.orders();
    assert_eq!(orders, 1);

    // A restart delivers the stored certificate: same file, no new order.
    let before = std::fs::read(&cert).unwrap();
    let (child, _) = agent(&args);
    stop(child);
    assert_eq!(std::fs::read(&cert).unwrap(), before);
    assert_eq!(pebble.orders(), orders);
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "rotated\nrotated\n"
    );
}

#[test]
fn agent_refuses_tls_alpn_01_and_a_socket() {
    let work = tempfile::tempdir().unwrap();
    let base = [
        "agent",
        "run",
        "--acme-directory",
        "https://127.0.0.1:1/dir",
        "--acme-domain",
        "host.acme.test",
        "--out-dir",
        work.path().to_str().unwrap(),
    ];
    let out = crate::common::ward(&base);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("http-01 or dns-01"),
        "{}",
        out.stderr_text()
    );
    let mut with_socket = base.to_vec();
    let sock = work.path().join("s.sock");
    with_socket.extend(["--acme-challenge", "dns-01", "--acme-dns-hook", "/bin/true"]);
    with_socket.extend(["--socket", sock.to_str().unwrap()]);
    let out = crate::common::ward(&with_socket);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("--socket"),
        "{}",
        out.stderr_text()
    );
}
