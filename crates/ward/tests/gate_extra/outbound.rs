//! `ward gate client` (outbound mode) and the TCP tenant's idle timeout
//! and policy, end to end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use crate::common::Pki;
use crate::harness::{Proc, READY, curl, http_echo, line_echo, p, pki_with_gate, replace};

/// A flag-form gate admitting `ns/*` in front of an HTTP echo upstream.
fn flag_gate(pki: &Pki, gate: &Path, upstream: &str) -> (Proc, SocketAddr) {
    let proc = Proc::spawn(&[
        "gate",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        &p(&gate.with_extension("crt")),
        "--key",
        &p(&gate.with_extension("key")),
        "--client-ca",
        &p(&pki.root()),
        "--upstream",
        upstream,
        "--allow-spiffe-id",
        "spiffe://example.org/ns/*",
        "--audit-log",
        "off",
    ]);
    let addr = proc.ready("ward gate: listening on ");
    (proc, addr)
}

fn gate_client(pki: &Pki, client: &Path, target: SocketAddr, extra: &[&str]) -> (Proc, SocketAddr) {
    let (cert, key) = (client.with_extension("crt"), client.with_extension("key"));
    gate_client_files(pki, &cert, &key, target, extra)
}

fn gate_client_files(
    pki: &Pki,
    cert: &Path,
    key: &Path,
    target: SocketAddr,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let target = target.to_string();
    let mut args = vec![
        "gate".to_owned(),
        "client".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--target".into(),
        target,
        "--cert".into(),
        p(cert),
        "--key".into(),
        p(key),
        "--ca".into(),
        p(&pki.root()),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = Proc::spawn(&args);
    let addr = proc.ready("ward gate client: listening on ");
    (proc, addr)
}

#[test]
fn gate_client_carries_plaintext_to_an_mtls_server() {
    let (pki, gate) = pki_with_gate();
    let legacy = pki.issue("client", "spiffe://example.org/ns/legacy", &[]);
    let (_gate, gate_addr) = flag_gate(&pki, &gate, &format!("http://{}", http_echo()));
    // Verified by IP SAN, exact SPIFFE ID; then by --sni and a prefix pattern.
    for extra in [
        &["--verify-spiffe-id", "spiffe://example.org/gate"][..],
        &[
            "--sni",
            "localhost",
            "--verify-spiffe-id",
            "spiffe://example.org/*",
        ][..],
        &[][..],
    ] {
        let (_client, plain) = gate_client(&pki, &legacy, gate_addr, extra);
        let (status, body) = curl(&[&format!("http://{plain}/hello?x=1")]);
        assert_eq!(status, 200, "{extra:?}: {body}");
        let echoed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echoed["path"], "/hello");
        assert_eq!(
            echoed["headers"]["x-ward-spiffe-id"],
            "spiffe://example.org/ns/legacy"
        );
        let xfcc = echoed["headers"]["x-forwarded-client-cert"]
            .as_str()
            .unwrap();
        assert!(
            xfcc.contains("URI=spiffe://example.org/ns/legacy"),
            "{xfcc}"
        );
    }
}

#[test]
fn gate_client_reloads_its_certificate_on_file_change() {
    let (pki, gate) = pki_with_gate();
    let (_gate, gate_addr) = flag_gate(&pki, &gate, &format!("http://{}", http_echo()));
    // Certificate and key in one file, so one atomic replace swaps both.
    let pem = |prefix: &Path| {
        let cert = std::fs::read_to_string(prefix.with_extension("crt")).unwrap();
        let key = std::fs::read_to_string(prefix.with_extension("key")).unwrap();
        format!("{cert}{key}")
    };
    let first = pki.issue("client", "spiffe://example.org/ns/first", &[]);
    let second = pki.issue("client", "spiffe://example.org/ns/second", &[]);
    let both = pki.path("identity.pem");
    crate::harness::write_private(&both, &pem(&first));
    let (client, plain) = gate_client_files(&pki, &both, &both, gate_addr, &[]);
    let who = || {
        let (status, body) = curl(&[&format!("http://{plain}/")]);
        assert_eq!(status, 200, "{body}");
        let echoed: Value = serde_json::from_str(&body).unwrap();
        echoed["headers"]["x-ward-spiffe-id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(who(), "spiffe://example.org/ns/first");
    replace(&both, &pem(&second));
    client.wait_for("client credentials reloaded", READY);
    assert_eq!(who(), "spiffe://example.org/ns/second");
    // A garbage file is rejected; the current credentials stay.
    replace(&both, "not a certificate");
    client.wait_for("reload rejected", READY);
    assert_eq!(who(), "spiffe://example.org/ns/second");
}

#[test]
fn gate_client_refuses_a_target_with_another_spiffe_id() {
    let (pki, gate) = pki_with_gate();
    let legacy = pki.issue("client", "spiffe://example.org/ns/legacy", &[]);
    let (_gate, gate_addr) = flag_gate(&pki, &gate, &format!("http://{}", http_echo()));
    for pattern in ["spiffe://example.org/db", "spiffe://example.org/gate/*"] {
        let (client, plain) =
            gate_client(&pki, &legacy, gate_addr, &["--verify-spiffe-id", pattern]);
        let (status, body) = curl(&[&format!("http://{plain}/hello")]);
        assert_eq!(status, 0, "{pattern}: {body}");
        let line = client.wait_for("refusing the connection", READY);
        assert!(
            line.contains(&format!(
                "the target's SPIFFE ID spiffe://example.org/gate does not match --verify-spiffe-id {pattern}"
            )),
            "{line}"
        );
    }
    // A wrong server name is refused too (the certificate has no such SAN).
    let (client, plain) = gate_client(&pki, &legacy, gate_addr, &["--sni", "db.example.org"]);
    assert_eq!(curl(&[&format!("http://{plain}/hello")]).0, 0);
    client.wait_for("refusing the connection", READY);
}

fn tls_client(pki: &Pki, prefix: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.root()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(prefix.with_extension("crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(prefix.with_extension("key")).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(ward_tls::provider())
            .with_protocol_versions(ward_tls::TLS13_ONLY)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

/// Sends a line, reads it back, then times how long until EOF.
fn echo_then_eof(stream: &mut impl ReadWrite) -> Duration {
    stream.write_all(b"hello\n").unwrap();
    stream.flush().unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "echo");
        got.push(byte[0]);
    }
    assert_eq!(got, b"hello\n");
    let started = Instant::now();
    let n = stream
        .read(&mut byte)
        .expect("a clean EOF, not an error or a timeout");
    assert_eq!(n, 0, "EOF");
    started.elapsed()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn tls_connect(pki: &Pki, prefix: &Path, addr: SocketAddr) -> impl ReadWrite {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let conn = rustls::ClientConnection::new(
        tls_client(pki, prefix),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// TCP tenants: the policy sees `request: null`; allow rules AND policy.
const TCP_POLICY: &str = r#"
package ward.gate
allow if {
    input.request == null
    input.route == null
    input.tenant == "db"
    input.identity.spiffe_id == "spiffe://example.org/ns/app"
}
"#;

#[test]
fn tcp_tenant_closes_an_idle_connection() {
    let (pki, gate) = pki_with_gate();
    let app = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let other = pki.issue("client", "spiffe://example.org/ns/other", &[]);
    let (echo, closed) = line_echo();
    std::fs::write(pki.path("tcp.rego"), TCP_POLICY).unwrap();
    let config = format!(
        "audit_log = \"off\"\n[listen]\naddress = \"127.0.0.1:0\"\n[timeouts]\nidle = \"1s\"\n[[tenants]]\nname = \"db\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\ntcp_upstream = \"tcp://{echo}\"\npolicy = \"tcp.rego\"\n[tenants.allow]\nspiffe_ids = [\"spiffe://example.org/ns/*\"]\n",
        p(&gate.with_extension("crt")),
        p(&gate.with_extension("key")),
        p(&pki.root()),
    );
    let path = pki.path("gate.toml");
    std::fs::write(&path, config).unwrap();
    let proc = Proc::spawn(&["gate", "serve", "--config", &p(&path)]);
    let addr = proc.ready("ward gate: listening on ");

    // The rules admit ns/other, the policy does not: closed at once.
    let mut denied = tls_connect(&pki, &other, addr);
    denied.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        denied.read(&mut buf).expect("close_notify, not a timeout"),
        0
    );

    let mut tls = tls_connect(&pki, &app, addr);
    let idle = echo_then_eof(&mut tls);
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(10),
        "{idle:?}"
    );
    // The upstream side was closed too.
    closed
        .recv_timeout(Duration::from_secs(10))
        .expect("upstream connection closed");

    // The same through `ward gate client --idle-timeout 1s` to a gate
    // whose own idle timeout is long: the client closes both sides.
    let long = std::fs::read_to_string(&path)
        .unwrap()
        .replace("idle = \"1s\"", "idle = \"5m\"");
    std::fs::write(&path, long).unwrap();
    drop(proc);
    let proc = Proc::spawn(&["gate", "serve", "--config", &p(&path)]);
    let addr = proc.ready("ward gate: listening on ");
    let (_client, plain) = gate_client(&pki, &app, addr, &["--idle-timeout", "1s"]);
    let mut tcp = TcpStream::connect(plain).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let idle = echo_then_eof(&mut tcp);
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(10),
        "{idle:?}"
    );
    closed
        .recv_timeout(Duration::from_secs(10))
        .expect("upstream connection closed");
}
