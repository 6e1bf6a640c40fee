//! The harness of the gate_extra tests: `ward` processes awaited by their
//! readiness lines, tiny upstreams on their own threads, curl, files.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::common::{OutputText, Pki};

pub(crate) const READY: Duration = Duration::from_secs(30);

/// A running `ward` process; killed when dropped.
pub(crate) struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub(crate) fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_env(args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub(crate) fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines, seen }
    }

    /// Consumes stderr lines until one contains `needle`.
    pub(crate) fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {needle:?} within {within:?}; stderr:\n{}",
                        self.stderr()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("exited before {needle:?}; stderr:\n{}", self.stderr())
                }
            }
        }
    }

    /// The address printed after `prefix` on a readiness line.
    pub(crate) fn ready(&self, prefix: &str) -> SocketAddr {
        let line = self.wait_for(prefix, READY);
        let addr = line
            .rsplit(' ')
            .next()
            .unwrap()
            .trim_start_matches("http://");
        addr.parse().unwrap()
    }

    /// The process id (for signals).
    #[allow(dead_code)] // used by the federation tests only
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stderr(&self) -> String {
        self.seen.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `serve` on its own thread and runtime; returns once bound.
pub(crate) fn background<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(
            async move { serve(tokio::net::TcpListener::from_std(listener).unwrap()).await },
        );
    });
    addr
}

/// An HTTP/1.1 upstream answering `{method, path, headers}` as JSON.
pub(crate) fn http_echo() -> SocketAddr {
    background(|listener| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let headers: serde_json::Map<String, Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                            (k.as_str().to_owned(), Value::String(v))
                        })
                        .collect();
                    let body = json!({
                        "method": req.method().as_str(),
                        "path": req.uri().path(),
                        "headers": headers,
                    });
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

/// A line-echo upstream; reports on `closed` each time a client hangs up.
pub(crate) fn line_echo() -> (SocketAddr, Receiver<()>) {
    let (tx, closed) = channel();
    let addr = background(move |listener| async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = tcp.into_split();
                let mut lines = tokio::io::BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
                let _ = tx.send(());
            });
        }
    });
    (addr, closed)
}

/// `curl` with extra args; returns (HTTP status, body). Status 0: no response.
pub(crate) fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let text = out.stdout_text();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// An mTLS request to the gate as the client certificate at `prefix`.
pub(crate) fn call(
    pki: &Pki,
    gate: SocketAddr,
    prefix: &Path,
    method: &str,
    path: &str,
    extra: &[&str],
) -> (u16, String) {
    let root = pki.root();
    let cert = prefix.with_extension("crt");
    let key = prefix.with_extension("key");
    let url = format!("https://{gate}{path}");
    let mut args = vec![
        "--cacert",
        root.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-X",
        method,
        &url,
    ];
    args.extend_from_slice(extra);
    curl(&args)
}

/// A CA with the gate's server identity (SPIFFE ID, localhost, 127.0.0.1).
pub(crate) fn pki_with_gate() -> (Pki, PathBuf) {
    let pki = Pki::init(&[]);
    let gate = pki.issue(
        "server",
        "spiffe://example.org/gate",
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    );
    (pki, gate)
}

pub(crate) fn p(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// Writes `text` to `path` atomically (temp file + rename), as deploy tools do.
pub(crate) fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    write_private(&tmp, text);
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes `text` to a new file readable by its owner only, as Ward
/// requires of any file holding a private key.
pub(crate) fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
}
