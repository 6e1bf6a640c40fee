//! Lingering close: a client whose request the gate refuses before
//! reading its body reads the answer, not a connection reset.

use std::process::Command;

use crate::common::OutputText;
use crate::harness::{http_echo, p, pki_with_gate};
use crate::{gate_config, start_gate};

/// curl POSTing `body` (no `Expect: 100-continue`: the body follows the
/// head at once) as `client`; (exit code, status, stderr).
fn post(
    pki: &crate::common::Pki,
    client: &std::path::Path,
    url: &str,
    body: &std::path::Path,
) -> (i32, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["--cacert", &p(&pki.root())])
        .args(["--cert", &p(&client.with_extension("crt"))])
        .args(["--key", &p(&client.with_extension("key"))])
        .args(["--http1.1", "-H", "Expect:", "--data-binary"])
        .arg(format!("@{}", p(body)))
        .arg(url)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        out.stdout_text(),
        out.stderr_text(),
    )
}

/// A client that writes its whole body before it reads the rest of the
/// answer (Python's ssl module): it sends the head, waits for the answer's
/// first byte, then sends `size` bytes of body and reads the rest.
const WRITE_THEN_READ: &str = r#"
import json, socket, ssl, sys
addr, ca, cert, key, path, size = sys.argv[1:7]
host, port = addr.rsplit(":", 1)
size = int(size)
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
raw = socket.create_connection((host, int(port)), timeout=20)
s = ctx.wrap_socket(raw, server_hostname="localhost")
head = "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
s.sendall((head % (path, size)).encode())
answer = s.recv(1)
sent, error = 0, None
chunk = b"x" * 65536
try:
    while sent < size:
        s.sendall(chunk)
        sent += len(chunk)
    while True:
        data = s.recv(65536)
        if not data:
            break
        answer += data
except OSError as e:
    error = repr(e)
print(json.dumps({"sent": sent, "error": error, "answer": answer.decode("latin-1")}))
"#;

/// [`WRITE_THEN_READ`] as `client`: (bytes sent, error, answer).
fn write_then_read(
    pki: &crate::common::Pki,
    client: &std::path::Path,
    addr: std::net::SocketAddr,
    path: &str,
    size: usize,
) -> (u64, Option<String>, String) {
    let out = Command::new("python3")
        .args(["-c", WRITE_THEN_READ, &addr.to_string(), &p(&pki.root())])
        .arg(client.with_extension("crt"))
        .arg(client.with_extension("key"))
        .args([path, &size.to_string()])
        .output()
        .expect("python3 runs");
    let v: serde_json::Value = serde_json::from_str(&out.stdout_text())
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout_text(), out.stderr_text()));
    (
        v["sent"].as_u64().unwrap_or(0),
        v["error"].as_str().map(str::to_owned),
        v["answer"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn a_refused_request_with_a_large_unread_body_gets_its_answer_not_a_reset() {
    let (pki, gate) = pki_with_gate();
    // Not allowed by the route's rules: 403 before the body is read.
    let other = pki.issue("client", "spiffe://example.org/other/b", &[]);
    let (one, two) = (http_echo(), http_echo());
    // Route "all" is the HTTP/1 fast path; "balanced" (two endpoints) is
    // hyper's path.
    let balanced = format!(
        "[[tenants.routes]]\nname = \"balanced\"\npath_prefix = \"/balanced\"\n\
         upstreams = [\"http://{one}\", \"http://{two}\"]\n\
         [tenants.routes.allow]\nspiffe_ids = [\"spiffe://example.org/ns/*\"]\n"
    );
    let mut config = gate_config(&pki, &gate, one, "", "#passthrough\n");
    // Before route "all" (path /), which would take every path.
    let first_route = config.find("[[tenants.routes]]").unwrap();
    config.insert_str(first_route, &balanced);
    let (_gate, addr, _) = start_gate(&pki, &config, "linger.toml");
    let body = pki.path("body.bin");
    std::fs::write(&body, vec![b'x'; 8 * 1024 * 1024]).unwrap();
    for path in ["/fast", "/balanced/x"] {
        // The whole body after the answer: without a lingering close the
        // gate's socket is closed by then, and the body meets a reset.
        let size = 4 * 1024 * 1024;
        let (sent, error, answer) = write_then_read(&pki, &other, addr, path, size);
        assert_eq!(error, None, "{path}: {answer}");
        assert_eq!(sent, size as u64, "{path}");
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
        assert!(answer.contains("forbidden"), "{path}: {answer}");
        // curl sending while the answer comes (it stops when it sees it).
        for round in 0..20 {
            let (code, status, err) = post(&pki, &other, &format!("https://{addr}{path}"), &body);
            assert_eq!(
                (code, status.as_str()),
                (0, "403"),
                "{path} round {round}: {err}"
            );
        }
    }
}
