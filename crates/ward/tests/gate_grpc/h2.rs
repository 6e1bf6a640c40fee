//! HTTP/2 to the upstream without gRPC clients: trailers and `te` with
//! curl, hostile input (a malformed `grpc-timeout`, an upstream that does
//! not speak HTTP/2 or breaks the protocol) and h2load through
//! `ward gate client` (h2load has no client certificates: the gate client
//! carries its prior-knowledge HTTP/2 over mTLS).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::grpc::raw;
use crate::harness::{DEADLINE, Gate, OutputText, crt, key};
use crate::support::{Py, Setup, python_has, tool};

/// One gRPC frame holding `payload` (uncompressed).
fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn route(upstream: &str, protocol: &str) -> String {
    format!(
        r#"
[[tenants.routes]]
name = "h2"
upstream = "{upstream}"
protocol = "{protocol}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    )
}

/// `curl --http2` as `ns/app` posting `body` to `path`; returns (head +
/// trailers as curl dumps them, exit ok).
fn curl_post(setup: &Setup, gate: &Gate, path: &str, body: &[u8], headers: &[&str]) -> String {
    let file = setup.pki.path("body.bin");
    std::fs::write(&file, body).unwrap();
    let (c, k) = (crt(&setup.app), key(&setup.app));
    let url = format!("{}{path}", gate.url());
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--http2",
        "--max-time",
        "15",
        "-o",
        "/dev/null",
        "-D",
        "-",
    ])
    .args(["--cacert", &setup.root(), "--cert", &c, "--key", &k])
    .args(["--data-binary", &format!("@{}", file.display())]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(&url).output().unwrap();
    format!("{}{}", out.stdout_text(), out.stderr_text()).to_ascii_lowercase()
}

#[test]
fn trailers_and_te_pass_both_ways_over_h2() {
    if !python_has(&["grpc", "grpc_health.v1.health"]) || !tool("curl", "curl") {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = Gate::config(&setup.config(&route(&upstream.url(), "h2"), ""));
    let grpc = ["content-type: application/grpc", "te: trailers"];
    let dump = curl_post(
        &setup,
        &gate,
        "/ward.test.Echo/Unary",
        &grpc_frame(b"hi"),
        &grpc,
    );
    assert!(dump.starts_with("http/2 200"), "{dump}");
    // grpc-status arrives as a trailer: the upstream's trailers reached
    // curl, and grpcio answered at all only because `te: trailers` reached it.
    assert!(dump.contains("grpc-status: 0"), "{dump}");
    let dump = curl_post(
        &setup,
        &gate,
        "/ward.test.Echo/Unary",
        &grpc_frame(b"fail"),
        &grpc,
    );
    assert!(dump.contains("grpc-status: 9"), "{dump}");
    assert!(dump.contains("grpc-message: asked to fail"), "{dump}");
}

#[test]
fn a_malformed_grpc_timeout_is_invalid_argument() {
    if !python_has(&["grpc", "grpc_health.v1.health"]) || !tool("curl", "curl") {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = Gate::config(&setup.config(&route(&upstream.url(), "h2"), ""));
    for bad in ["10x", "123456789S", "S", "-1S", "1.5S"] {
        let header = format!("grpc-timeout: {bad}");
        let dump = curl_post(
            &setup,
            &gate,
            "/ward.test.Echo/Unary",
            &grpc_frame(b"hi"),
            &["content-type: application/grpc", "te: trailers", &header],
        );
        assert!(dump.starts_with("http/2 200"), "{bad}: {dump}");
        assert!(dump.contains("grpc-status: 3"), "{bad}: {dump}");
        assert!(
            dump.contains("grpc-message: grpc-timeout must be"),
            "{bad}: {dump}"
        );
    }
    let dump = curl_post(
        &setup,
        &gate,
        "/ward.test.Echo/Unary",
        &grpc_frame(b"hi"),
        &[
            "content-type: application/grpc",
            "te: trailers",
            "grpc-timeout: 5S",
        ],
    );
    assert!(dump.contains("grpc-status: 0"), "{dump}");
}

/// An upstream that answers every connection with `reply` and closes.
fn broken_upstream(reply: &'static [u8]) -> (String, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            conn.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut first = vec![0u8; 24];
            let _ = conn.read_exact(&mut first);
            let _ = tx.send(first);
            let _ = conn.write_all(reply);
        }
    });
    (url, rx)
}

#[test]
fn an_upstream_that_breaks_http2_gets_a_precise_refusal() {
    if !tool("curl", "curl") || !python_has(&["h2"]) {
        return;
    }
    let setup = Setup::new();
    // An HTTP/1.1 server behind `protocol = "h2"`, then one that sends a
    // malformed frame: neither panics the gate; each request is a 502
    // (UNAVAILABLE for gRPC) naming the gateway failure.
    for reply in [
        &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"[..],
        &b"\x00\x00\x04\x07\x00\x00\x00\x00\x01garbage-frame"[..],
    ] {
        let (url, seen) = broken_upstream(reply);
        let gate = Gate::config(&setup.config(&route(&url, "h2"), ""));
        // Requests without a body: the refusal always arrives.
        let dump = curl_post(
            &setup,
            &gate,
            "/x",
            b"",
            &["content-type: application/json"],
        );
        assert!(dump.starts_with("http/2 502"), "{dump}\n{}", gate.stderr());
        // The gate spoke HTTP/2 with prior knowledge.
        let first = seen.recv_timeout(DEADLINE).unwrap();
        assert_eq!(&first[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let dump = curl_post(
            &setup,
            &gate,
            "/ward.test.Echo/Unary",
            b"",
            &["content-type: application/grpc", "te: trailers"],
        );
        assert!(dump.contains("grpc-status: 14"), "{dump}");
        // With the request body sent along, and with the body still to come
        // when the upstream fails (the client holds it back until it has
        // an answer): the refusal arrives, never a bare stream reset.
        for scenario in [
            &["grpc", "/ward.test.Echo/Unary", "hi", "-"][..],
            &["grpc-held", "/ward.test.Echo/Unary", "hi"],
        ] {
            let out = raw(&gate, &setup, scenario);
            assert_eq!(
                out["grpc_status"],
                "14",
                "{scenario:?}: {out}\n{}",
                gate.stderr()
            );
            assert_eq!(out["headers"][":status"], "200", "{out}");
            assert!(
                out["reset"].is_null() || out["reset"] == 0,
                "{scenario:?}: reset with an error: {out}"
            );
        }
        let dump = curl_post(&setup, &gate, "/x", b"", &[]);
        assert!(dump.starts_with("http/2 502"), "{dump}");
        assert!(!gate.stderr().contains("panicked"), "{}", gate.stderr());
    }
}

#[test]
fn h2load_through_the_gate_to_an_h2_upstream_has_no_errors() {
    if !python_has(&["grpc", "grpc_health.v1.health"]) || !tool("h2load", "nghttp2-client") {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = Gate::config(&setup.config(&route(&upstream.url(), "h2"), ""));
    // h2load has no client certificate option: `ward gate client` carries
    // its connections over mTLS (no ALPN: the gate sees HTTP/2's preface).
    let (c, k) = (crt(&setup.app), key(&setup.app));
    let target = gate.addr.to_string();
    let mut outbound = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args([
            "gate",
            "client",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target,
        ])
        .args([
            "--cert",
            &c,
            "--key",
            &k,
            "--ca",
            &setup.root(),
            "--sni",
            "localhost",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(outbound.stderr.take().unwrap());
    let mut line = String::new();
    let listen = loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "ward gate client exited");
        if let Some(a) = line.trim().strip_prefix("ward gate client: listening on ") {
            break a.to_owned();
        }
    };
    let body = setup.pki.path("call.bin");
    std::fs::write(&body, grpc_frame(b"load")).unwrap();
    let out = Command::new("timeout")
        .args(["60", "h2load", "-n", "2000", "-c", "4", "-m", "8"])
        .args(["-d", body.to_str().unwrap()])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("http://{listen}/ward.test.Echo/Unary"))
        .output()
        .unwrap();
    let _ = outbound.kill();
    let _ = outbound.wait();
    let text = out.stdout_text();
    assert!(out.status.success(), "{text}{}", out.stderr_text());
    assert!(
        text.contains("2000 succeeded, 0 failed, 0 errored"),
        "{text}\n{}",
        gate.stderr()
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
    gate.wait_metric(
        "ward_gate_requests_total",
        &[("route", "h2"), ("grpc_status", "0")],
        2000.0,
    );
}
