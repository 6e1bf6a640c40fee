//! The clients: curl, `openssl s_client`, Python's `ssl`, and a Rust
//! (rustls) client that opens a new connection per request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;

use crate::harness::{DEADLINE, OutputText};

/// What curl got.
#[derive(Debug)]
pub(crate) struct CurlResult {
    /// curl's exit status (0 = a response came back).
    pub(crate) code: i32,
    /// HTTP status (0 if none).
    pub(crate) status: u16,
    /// `%{http_version}`: `1.1`, `2`.
    pub(crate) http_version: String,
    /// Response body.
    pub(crate) body: String,
    /// curl's error text.
    pub(crate) stderr: String,
}

impl CurlResult {
    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// `curl -sS --max-time … ARGS… URL`.
pub(crate) fn curl(args: &[&str]) -> CurlResult {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "15",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let text = out.stdout_text();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or(("0", ""));
    CurlResult {
        code: out.status.code().unwrap_or(-1),
        status: status.parse().unwrap_or(0),
        http_version: version.to_owned(),
        body: body.to_owned(),
        stderr: out.stderr_text(),
    }
}

/// curl with a client certificate trusting `ca`.
pub(crate) fn curl_as(ca: &str, cert: &str, key: &str, extra: &[&str]) -> CurlResult {
    let mut args = vec!["--cacert", ca, "--cert", cert, "--key", key];
    args.extend_from_slice(extra);
    curl(&args)
}

/// `openssl s_client -quiet` with `input` on stdin (bounded by `timeout`);
/// `-cert_chain` sends the intermediates. Returns (stdout, stderr).
pub(crate) fn s_client(
    addr: SocketAddr,
    ca: &str,
    cert: Option<&str>,
    key: Option<&str>,
    extra: &[&str],
    input: &str,
) -> (String, String) {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "15",
        "openssl",
        "s_client",
        "-quiet",
        "-connect",
        &addr.to_string(),
    ])
    .args(["-CAfile", ca]);
    if let (Some(c), Some(k)) = (cert, key) {
        cmd.args(["-cert", c, "-cert_chain", c, "-key", k]);
    }
    let mut child = cmd
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "s_client timed out: {}",
        out.stderr_text()
    );
    (out.stdout_text(), out.stderr_text())
}

const PY_CLIENT: &str = r#"
import json, socket, ssl, sys
host, port, sni, ca, cert, key, mode = sys.argv[1:8]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
if cert != "-":
    ctx.load_cert_chain(cert, key)
out = {"ok": False}
data = b""
try:
    with socket.create_connection((host, int(port)), timeout=15) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            out["version"] = s.version()
            if mode == "get":
                s.sendall(f"GET /python HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except ssl.SSLEOFError:
                if not data:
                    raise
    out["ok"] = True
except (ssl.SSLError, OSError) as e:
    out["error"] = str(e)
out["data"] = data.decode(errors="replace")
print(json.dumps(out))
"#;

/// Python's `ssl`: connects with SNI `sni`, then either sends `GET /python`
/// (`mode` = "get") or just reads (`"read"`: a refused handshake shows up as
/// the server's alert). Returns `{"ok","version"?,"error"?,"data"}`.
pub(crate) fn python(
    addr: SocketAddr,
    sni: &str,
    ca: &str,
    cert: Option<(&str, &str)>,
    mode: &str,
) -> Value {
    let (c, k) = cert.unwrap_or(("-", "-"));
    let out = Command::new("python3")
        .args([
            "-c",
            PY_CLIENT,
            "127.0.0.1",
            &addr.port().to_string(),
            sni,
            ca,
            c,
            k,
            mode,
        ])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python: {}", out.stderr_text());
    serde_json::from_str(&out.stdout_text()).unwrap()
}

/// A rustls client (TLS 1.3, ward's provider: X25519MLKEM768 first).
#[derive(Clone)]
pub(crate) struct RustClient {
    config: Arc<ClientConfig>,
}

/// One response from [`RustClient::get`].
#[derive(Debug)]
pub(crate) struct RustResponse {
    /// The status line's code.
    pub(crate) status: u16,
    /// The serial of the server's leaf, lowercase hex.
    pub(crate) server_serial: String,
}

impl RustClient {
    /// Trusts the roots in `ca`, presents `cert` (chain) and `key`.
    pub(crate) fn new(ca: &Path, cert: &str, key: &str) -> RustClient {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let config = ClientConfig::builder_with_provider(ward_tls::provider())
            .with_protocol_versions(ward_tls::TLS13_ONLY)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
            .unwrap();
        RustClient {
            config: Arc::new(config),
        }
    }

    /// `GET path` on a new connection (`Connection: close`).
    pub(crate) fn get(&self, addr: SocketAddr, path: &str) -> Result<RustResponse, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(DEADLINE))
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn =
            rustls::ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let status = loop {
            let n = tls.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("eof after {} bytes", buf.len()));
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .ok_or_else(|| format!("no content-length: {head}"))?;
            if body.len() >= length {
                let code = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                break code;
            }
        };
        let leaf = tls
            .conn
            .peer_certificates()
            .ok_or("no server certificate")?[0]
            .clone();
        let info = ward_pki::inspect::CertInfo::from_der(&leaf, time::OffsetDateTime::now_utc())
            .map_err(|e| e.to_string())?;
        Ok(RustResponse {
            status,
            server_serial: info.serial,
        })
    }
}
