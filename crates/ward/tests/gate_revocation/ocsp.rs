//! OCSP stapling of the gate's own certificate (issue 6, item 5): the gate's
//! server certificate is issued online with the CA's OCSP responder in its
//! AIA; `openssl s_client -status` must see a stapled `good` response, and
//! when the responder goes away the gate keeps the last good response until
//! its nextUpdate, then stops stapling.
//!
//! The responder URL must be written into ca.toml before the CA starts, so
//! it points at a small TCP relay bound first on port 0 that forwards to the
//! CA's plain-HTTP listener once that is known; switching the relay off
//! makes the responder unreachable.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ca::CaServer;
use crate::common::OutputText;
use crate::harness::{Gate, wait_until};
use crate::upstream::Echo;

/// A TCP relay to a target set later; connections are dropped while it is off.
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    on: Arc<AtomicBool>,
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Relay {
    fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let on = Arc::new(AtomicBool::new(true));
        let (t, o) = (target.clone(), on.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let to = *t.lock().unwrap();
                let Some(to) = to.filter(|_| o.load(Ordering::SeqCst)) else {
                    continue; // dropped: the responder is "down"
                };
                let Ok(upstream) = TcpStream::connect(to) else {
                    continue;
                };
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || copy(client, upstream));
                std::thread::spawn(move || copy(u2, c2));
            }
        });
        Relay { addr, target, on }
    }
}

/// `openssl s_client -status` against the gate with a client certificate;
/// the text of its OCSP section.
fn s_client_status(gate: &Gate, ca: &CaServer, crt: &str, key: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &gate.addr.to_string()])
        .args(["-servername", "localhost", "-status", "-CAfile", &ca.root()])
        .args(["-cert", crt, "-key", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closing stdin ends the session after the handshake.
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = out.stdout_text();
    let start = text.find("OCSP response").unwrap_or(0);
    let end = text
        .find("Certificate chain")
        .unwrap_or(text.len())
        .max(start);
    text[start..end].to_owned()
}

fn metric(gate: &Gate, result: &str) -> f64 {
    gate.metrics()
        .sum("ward_gate_ocsp_staple_total", &[("result", result)])
}

#[test]
fn the_gate_staples_a_good_ocsp_response_and_stops_after_next_update() {
    if !std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ward-ca/src/http/ocsp.rs"
    ))
    .exists()
    {
        println!("skipped: the CA's OCSP responder has not landed");
        return;
    }
    let relay = Relay::start();
    let url = format!("\"http://{}/ocsp\"", relay.addr);
    let ca = CaServer::start(&[("ocsp_url", &url), ("ocsp_validity", "\"10s\"")]);
    *relay.target.lock().unwrap() = Some(ca.http);

    // The gate's own certificate, issued online: it carries the AIA.
    let (token, _) = ca.token("spiffe://example.org/gate", &["--dns", "localhost"]);
    let server = ca.issue_with(&token, "gate");
    let aia = Command::new("openssl")
        .args(["x509", "-noout", "-ocsp_uri", "-in"])
        .arg(&server.crt)
        .output()
        .unwrap();
    assert!(
        aia.stdout_text().contains(&relay.addr.to_string()),
        "{}",
        aia.stdout_text()
    );
    let client = ca.issue("client");
    let echo = Echo::start();
    let gate = Gate::flags(&[
        "--cert",
        server.crt.to_str().unwrap(),
        "--key",
        server.key.to_str().unwrap(),
        "--client-ca",
        &ca.root(),
        "--upstream",
        &echo.url(),
        "--allow-spiffe-id",
        "spiffe://example.org/*",
    ]);
    gate.wait_metric("ward_gate_ocsp_staple_total", &[("result", "stapled")], 1.0);
    let (crt, key) = (
        client.crt.to_str().unwrap().to_owned(),
        client.key.to_str().unwrap().to_owned(),
    );
    let status = s_client_status(&gate, &ca, &crt, &key);
    assert!(
        status.contains("OCSP Response Status: successful"),
        "{status}\n{}",
        gate.stderr()
    );
    assert!(status.contains("Cert Status: good"), "{status}");
    assert_eq!(
        gate.metrics().sum("ward_gate_ocsp_stapled", &[]),
        1.0,
        "{}",
        gate.metrics().0
    );

    // The responder goes away: the last good response stays until its
    // nextUpdate (10 s), then stapling stops, counted and logged.
    relay.on.store(false, Ordering::SeqCst);
    let off = Instant::now();
    wait_until("a failed OCSP refresh", || {
        metric(&gate, "fetch_failed") >= 1.0
    });
    if off.elapsed() < Duration::from_secs(8) {
        let status = s_client_status(&gate, &ca, &crt, &key);
        assert!(status.contains("Cert Status: good"), "kept: {status}");
    }
    wait_until("stapling to stop", || metric(&gate, "expired") >= 1.0);
    let status = s_client_status(&gate, &ca, &crt, &key);
    assert!(status.contains("no response sent"), "{status}");
    assert_eq!(gate.metrics().sum("ward_gate_ocsp_stapled", &[]), 0.0);
    assert!(
        gate.stderr().contains("stopped stapling"),
        "{}",
        gate.stderr()
    );

    // Back again: stapled anew.
    relay.on.store(true, Ordering::SeqCst);
    gate.wait_metric("ward_gate_ocsp_staple_total", &[("result", "stapled")], 2.0);
    assert!(s_client_status(&gate, &ca, &crt, &key).contains("Cert Status: good"));
}
