//! Workload API clients that send an `:authority` h2 would refuse (issue 14
//! item 3, ARCHITECTURE.md trap 15): py-spiffe on grpcio (gRPC C-core sends
//! the percent-encoded socket path) fetches, and follows a rotation on one
//! open stream; the Python `h2` package sends raw requests with the
//! C-core, grpc-java (raw path) and grpc-go (`localhost`) authorities.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::procs::{AgentDir, AgentProcess, CaProcess, DEADLINE, openssl_fingerprint};
use crate::harness::{Backend, Ca, OutputText};

const CLIENT: &str = include_str!("pyspiffe.py");

fn python(socket: &str, mode: &str, stdin: &str) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", CLIENT, socket, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python: {}", out.stderr_text());
    serde_json::from_str(&out.stdout_text()).unwrap()
}

/// Serials compare without leading zeros (Python prints the integer).
fn serial(s: &str) -> String {
    s.trim_start_matches('0').to_owned()
}

#[test]
fn py_spiffe_and_raw_h2_clients_are_served_whatever_their_authority() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let token = ca.token("spiffe://example.org/py", &["--cert-ttl", "12s"]);
    let dir = AgentDir::new(&ca, "agent");
    let socket = dir.path("api.sock");
    let fingerprint = openssl_fingerprint(&ca.root());
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &server.url(),
            "--ca-fingerprint",
            &fingerprint,
            "--socket",
            &socket,
        ],
        &[("WARD_TOKEN", &token.secret)],
    );
    agent.wait_deliveries(1, DEADLINE);

    // Raw HTTP/2 first: what each gRPC implementation sends over a socket.
    let percent = socket.trim_start_matches('/').replace('/', "%2F");
    let authorities = [percent.as_str(), &socket, "localhost"];
    let raw = python(&socket, "raw", &authorities.join("\n"));
    let raw = raw.as_array().unwrap();
    assert_eq!(raw.len(), 3);
    // The bundle is the CA's root, DER: the size says it came whole.
    let root_der = ward_pki::pem::parse_certs(&std::fs::read(ca.root()).unwrap()).unwrap();
    let root_len = root_der[0].len();
    for reply in raw {
        assert_eq!(reply["reset"], Value::Null, "stream reset: {reply}");
        assert_eq!(reply["headers"][":status"], "200", "{reply}");
        assert_eq!(
            reply["headers"]["content-type"], "application/grpc",
            "{reply}"
        );
        assert_eq!(
            reply["bundles"]["spiffe://example.org"], root_len,
            "{reply}"
        );
    }

    let py = python(&socket, "spiffe", "");
    let context = &py["context"];
    assert_eq!(context["spiffe_id"], "spiffe://example.org/py", "{py}");
    let delivered = agent.deliveries();
    let first = context["serial"].as_str().unwrap();
    assert!(
        delivered.iter().any(|d| serial(&d.serial) == serial(first)),
        "py-spiffe got a certificate the agent delivered: {first} vs {delivered:?}"
    );
    assert_eq!(context["bundles"], serde_json::json!(["example.org"]));
    let root = super::procs::pem_serial(&ca.root());
    assert_eq!(
        py["bundles"]["example.org"],
        serde_json::json!([serial(&root)]),
        "{py}"
    );
    // The stream saw a new certificate without reconnecting (a stream end
    // would be an error with retry_connect=False).
    let stream = &py["stream"];
    assert_eq!(stream["errors"], serde_json::json!([]), "{py}");
    let seen: Vec<String> = stream["serials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serial(s.as_str().unwrap()))
        .collect();
    assert!(seen.len() >= 2 && seen[0] != seen[seen.len() - 1], "{py}");
    let delivered: Vec<String> = agent
        .deliveries()
        .iter()
        .map(|d| serial(&d.serial))
        .collect();
    assert!(
        seen.iter().all(|s| delivered.contains(s)),
        "{seen:?} vs {delivered:?}"
    );
    agent.terminate();
}
