//! WebSocket (HTTP/1.1 Upgrade) through the gate, both ends Python
//! `websockets`: the upstream sees the caller's identity on the upgrade
//! request, messages pass both ways, and a quiet upgraded connection is
//! closed after the idle timeout, when the client's certificate is
//! revoked, and at the end of the drain on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{DEADLINE, Gate, OutputText, crt, key, mint};
use crate::support::{Py, Setup, python_has, script};

fn route(upstream: &str) -> String {
    format!(
        r#"
[[tenants.routes]]
name = "ws"
path_prefix = "/ws"
upstream = "{upstream}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    )
}

fn client(gate: &Gate, setup: &Setup, quiet: Option<&str>) -> Value {
    let (c, k) = (crt(&setup.app), key(&setup.app));
    let port = gate.port().to_string();
    let mut args = vec![script("ws.py"), "client".into(), port, setup.root(), c, k];
    args.extend(quiet.map(str::to_owned));
    let out = Command::new("python3").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "ws client: {}\ngate: {}",
        out.stderr_text(),
        gate.stderr()
    );
    serde_json::from_str(&out.stdout_text()).unwrap()
}

#[test]
fn a_websocket_echo_passes_with_the_callers_identity() {
    if !python_has(&["websockets"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("ws.py", &["server"]);
    let gate = Gate::config(&setup.config(&route(&upstream.url()), ""));
    let out = client(&gate, &setup, None);
    assert_eq!(
        out["identity"]["spiffe_id"], "spiffe://example.org/ns/app",
        "{out}"
    );
    let xfcc = out["identity"]["xfcc"].as_str().unwrap();
    assert!(xfcc.contains("URI=spiffe://example.org/ns/app"), "{xfcc}");
    assert_eq!(out["identity"]["path"], "/ws");
    assert_eq!(out["text"], "hello");
    assert_eq!(out["binary_same"], true);
    let audit = gate.finish();
    assert!(
        audit
            .iter()
            .any(|l| l["event"] == "request" && l["route"] == "ws" && l["status"] == 101),
        "{audit:?}"
    );
}

#[test]
fn a_quiet_websocket_is_closed_after_the_idle_timeout() {
    if !python_has(&["websockets"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("ws.py", &["server"]);
    let gate = Gate::config(&setup.config(&route(&upstream.url()), "[timeouts]\nidle = \"1s\"\n"));
    let out = client(&gate, &setup, Some("3"));
    assert_eq!(out["text"], "hello", "{out}");
    println!("{out}");
    let after = out["after_quiet"].as_str().unwrap();
    assert!(after.starts_with("closed"), "{out}");
}

/// A WebSocket held open by `ws.py hold`, sending on request.
struct Held {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<String>,
}

impl Held {
    fn open(gate: &Gate, setup: &Setup, who: &Path) -> Held {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(script("ws.py"))
            .args(["hold", &gate.port().to_string(), &setup.root()])
            .args([crt(who), key(who)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let held = Held {
            child,
            stdin,
            events,
        };
        assert_eq!(held.next(), "open", "gate: {}", gate.stderr());
        held
    }

    /// The next `EVENT` line (bounded).
    fn next(&self) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.events.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    if let Some(event) = line.strip_prefix("EVENT ") {
                        return event.to_owned();
                    }
                }
                Err(_) => panic!("no event from the WebSocket client"),
            }
        }
    }

    /// Sends `text` and returns what happened (`echo TEXT` when it came back).
    fn send(&mut self, text: &str) -> String {
        writeln!(self.stdin, "send {text}").unwrap();
        self.stdin.flush().unwrap();
        self.next()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn crl(setup: &Setup, number: u64, serials: &[&str]) -> Vec<u8> {
    let dir = setup.pki.ca_dir();
    let out = Command::new("python3")
        .args(["-c", SIGN_CRL])
        .arg(format!("{dir}/intermediate.crt"))
        .arg(format!("{dir}/intermediate.key"))
        .arg(number.to_string())
        .args(serials)
        .output()
        .unwrap();
    assert!(out.status.success(), "python CRL: {}", out.stderr_text());
    out.stdout
}

/// A DER CRL from Python's `cryptography`: ISSUER_CERT ISSUER_KEY NUMBER
/// SERIAL_HEX…
const SIGN_CRL: &str = r#"
import sys, datetime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
cert = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
now = datetime.datetime.now(datetime.timezone.utc)
b = (x509.CertificateRevocationListBuilder()
     .issuer_name(cert.subject)
     .last_update(now - datetime.timedelta(seconds=5))
     .next_update(now + datetime.timedelta(hours=1))
     .add_extension(x509.CRLNumber(int(sys.argv[3])), critical=False)
     .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False))
for serial in sys.argv[4:]:
    b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
        .serial_number(int(serial, 16)).revocation_date(now).build())
sys.stdout.buffer.write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
"#;

fn serial(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", &crt(cert)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_text());
    out.stdout_text()
        .trim()
        .strip_prefix("serial=")
        .unwrap()
        .to_owned()
}

fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_websocket_is_closed_when_its_client_certificate_is_revoked() {
    if !python_has(&["websockets", "cryptography"]) {
        return;
    }
    let setup = Setup::new();
    let other = mint(
        &setup.pki,
        "client",
        "spiffe://example.org/ns/other",
        "other",
        &[],
    );
    let file = setup.pki.path("gate.crl");
    replace_file(&file, &crl(&setup, 1, &[]));
    let upstream = Py::start("ws.py", &["server"]);
    let extra = format!(
        "[revocation]\ncrl = [\"{}\"]\ncrl_refresh = \"1s\"\n",
        file.display()
    );
    let gate = Gate::config(&setup.config(&route(&upstream.url()), &extra));
    let mut app = Held::open(&gate, &setup, &setup.app);
    let mut kept = Held::open(&gate, &setup, &other);
    assert_eq!(app.send("before"), "echo before");

    replace_file(&file, &crl(&setup, 2, &[&serial(&setup.app)]));
    // The gate closes the upgraded connection itself: the client sees
    // the close without sending anything.
    assert_eq!(app.next(), "closed", "gate: {}", gate.stderr());
    assert_eq!(kept.send("still here"), "echo still here");
    assert!(gate.metrics().sum("ward_gate_revocation_closed_total", &[]) >= 1.0);
    // The kept WebSocket would hold the drain for its full time.
    drop(kept);
    drop(app);
    let audit = gate.finish();
    assert!(
        audit.iter().any(|l| l["event"] == "connection"
            && l["result"] == "closed"
            && l["reason"] == "revoked"
            && l["spiffe_id"] == "spiffe://example.org/ns/app"),
        "{audit:?}"
    );
}

#[test]
fn sigterm_gives_a_websocket_the_drain_time_then_closes_it() {
    if !python_has(&["websockets"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("ws.py", &["server"]);
    let drain = Duration::from_secs(4);
    let gate = Gate::config(&setup.config(&route(&upstream.url()), "[timeouts]\ndrain = \"4s\"\n"));
    let mut gate = gate;
    let mut ws = Held::open(&gate, &setup, &setup.app);
    gate.signal("TERM");
    let stopped = Instant::now();
    // In flight: still served during the drain.
    assert_eq!(ws.send("draining"), "echo draining");
    assert_eq!(ws.next(), "closed", "gate: {}", gate.stderr());
    let closed = stopped.elapsed();
    assert!(
        closed >= drain - Duration::from_millis(500),
        "closed after {closed:?}, before the drain ended"
    );
    let status = gate.wait_exit();
    assert!(status.success(), "gate exit: {status}\n{}", gate.stderr());
}

#[test]
fn an_http2_extended_connect_reaches_an_http1_websocket_upstream_with_the_identity() {
    if !python_has(&["websockets", "h2"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("ws.py", &["server"]);
    let gate = Gate::config(&setup.config(&route(&upstream.url()), ""));
    // Python h2 sends RFC 8441 CONNECT with :protocol websocket once the
    // gate's SETTINGS allow it; websockets upstream sees an HTTP/1.1 upgrade.
    let out = crate::grpc::raw(&gate, &setup, &["websocket", "/ws"]);
    assert_eq!(
        out["settings"], 1,
        "SETTINGS_ENABLE_CONNECT_PROTOCOL: {out}"
    );
    assert_eq!(out["status"], "200", "{out}");
    let identity: Value = serde_json::from_str(out["frames"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        identity["spiffe_id"], "spiffe://example.org/ns/app",
        "{out}"
    );
    assert!(
        identity["xfcc"]
            .as_str()
            .unwrap()
            .contains("URI=spiffe://example.org/ns/app"),
        "{out}"
    );
    assert_eq!(identity["path"], "/ws");
    assert_eq!(out["frames"][1], "hello", "{out}");
    let audit = gate.finish();
    assert!(
        audit.iter().any(|l| l["event"] == "request"
            && l["route"] == "ws"
            && l["method"] == "CONNECT"
            && l["status"] == 200),
        "{audit:?}"
    );
}

#[test]
fn a_quiet_http2_extended_connect_tunnel_is_ended_after_the_idle_timeout() {
    if !python_has(&["websockets", "h2"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("ws.py", &["server"]);
    let gate = Gate::config(&setup.config(&route(&upstream.url()), "[timeouts]\nidle = \"1s\"\n"));
    // The tunnel is one stream of a multiplexed connection: traffic in it
    // keeps it (and its connection) open past the idle timeout; once quiet,
    // the gate ends it.
    let out = crate::grpc::raw(&gate, &setup, &["websocket", "/ws", "3", "5"]);
    assert_eq!(out["frames"][1], "hello", "{out}");
    assert!(out["ended_while_active"].is_null(), "{out}");
    assert!(out["echoes"].as_u64().unwrap() >= 5, "{out}");
    println!("{out}");
    let after = out["after_quiet"].as_str().unwrap();
    assert_ne!(after, "open", "the tunnel outlived the idle timeout: {out}");
    let elapsed = out["quiet_elapsed"].as_f64().unwrap();
    assert!(
        (0.5..4.0).contains(&elapsed),
        "ended after {elapsed} s, idle timeout 1 s: {out}"
    );
}

#[test]
fn an_upstream_with_a_wrong_websocket_accept_is_refused_for_extended_connect() {
    use std::io::Read;

    if !python_has(&["h2"]) {
        return;
    }
    let setup = Setup::new();
    // An HTTP/1.1 upstream that agrees to the upgrade with the wrong
    // Sec-WebSocket-Accept; it reports the request it got.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
            if sock.read(&mut byte).unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        sock.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
        )
        .unwrap();
        let _ = tx.send(String::from_utf8_lossy(&head).to_ascii_lowercase());
    });
    let gate = Gate::config(&setup.config(&route(&url), ""));
    let out = crate::grpc::raw(&gate, &setup, &["websocket", "/ws"]);
    assert_eq!(out["status"], "502", "{out}");
    let head = rx.recv_timeout(DEADLINE).unwrap();
    assert!(head.starts_with("get /ws http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nsec-websocket-version: 13\r\n"), "{head}");
    assert!(
        head.contains("\r\nx-ward-spiffe-id: spiffe://example.org/ns/app\r\n"),
        "{head}"
    );
    // A fresh key: 16 bytes, base64.
    let key = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("sec-websocket-key: "))
        .unwrap();
    assert_eq!(key.len(), 24, "{head}");
    assert!(!gate.stderr().contains("panicked"), "{}", gate.stderr());
}
