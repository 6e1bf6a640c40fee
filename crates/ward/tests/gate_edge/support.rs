//! The gate_edge harness: a Python TLS backend, `openssl s_client`,
//! HAProxy on free ports, metrics and audit lines.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::OutputText;
use crate::harness::curl;

/// A child process killed when dropped.
pub(crate) struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tls_backend.py` with the certificate at `prefix`; returns it
/// and its port (read from its first line).
pub(crate) fn backend(prefix: &Path, expect_proxy_v2: bool) -> (Killed, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gate_edge/tls_backend.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(prefix.with_extension("crt"))
        .arg(prefix.with_extension("key"))
        .arg(if expect_proxy_v2 { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("backend port: {line:?}"));
    (Killed(child), port)
}

/// A port nothing listens on (bound, then released).
pub(crate) fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `openssl s_client` to `addr` asking for `servername`, verifying against
/// `root`, sending `line`; (success, stdout + stderr).
pub(crate) fn s_client(
    addr: SocketAddr,
    servername: &str,
    root: &Path,
    line: &str,
) -> (bool, String) {
    s_client_with(addr, servername, root, line, &[])
}

/// [`s_client`] with more openssl arguments.
pub(crate) fn s_client_with(
    addr: SocketAddr,
    servername: &str,
    root: &Path,
    line: &str,
    extra: &[&str],
) -> (bool, String) {
    let mut child = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args([
            "-servername",
            servername,
            "-verify_return_error",
            "-ign_eof",
            "-CAfile",
        ])
        .arg(root)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!("{}{}", out.stdout_text(), out.stderr_text()),
    )
}

/// The gate's Prometheus text.
pub(crate) fn metrics(admin: SocketAddr) -> String {
    let (status, body) = curl(&[&format!("http://{admin}/metrics")]);
    assert_eq!(status, 200, "{body}");
    body
}

/// The sum of the samples of `name` whose labels include every pair.
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The audit log's JSON lines.
pub(crate) fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Debian's haproxy; `None` (with a message) when it is absent outside CI.
pub(crate) fn haproxy_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "haproxy is required under CI"
        );
        eprintln!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
    }
    found
}

/// HAProxy in TCP mode in front of the gate: `v2` and `v1` frontends
/// connect from 127.0.0.1 with `send-proxy-v2` / `send-proxy`,
/// `unlisted` from 127.0.0.3 with `send-proxy-v2`.
pub(crate) struct Haproxy {
    _child: Killed,
    log: PathBuf,
    pub(crate) v2: u16,
    pub(crate) v1: u16,
    pub(crate) unlisted: u16,
}

impl Haproxy {
    /// Starts it on free ports (another pick when one was taken).
    pub(crate) fn start(bin: &Path, dir: &Path, gate: SocketAddr) -> Haproxy {
        std::fs::create_dir_all(dir).unwrap();
        for _ in 0..5 {
            let (v2, v1, unlisted) = (dead_port(), dead_port(), dead_port());
            let conf = dir.join("haproxy.cfg");
            std::fs::write(
                &conf,
                format!(
                    "global\n    nbthread 1\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                     frontend v2\n    bind 127.0.0.1:{v2}\n    default_backend v2\n\
                     backend v2\n    server gate {gate} send-proxy-v2 source 127.0.0.1\n\
                     frontend v1\n    bind 127.0.0.1:{v1}\n    default_backend v1\n\
                     backend v1\n    server gate {gate} send-proxy source 127.0.0.1\n\
                     frontend unlisted\n    bind 127.0.0.1:{unlisted}\n    default_backend unlisted\n\
                     backend unlisted\n    server gate {gate} send-proxy-v2 source 127.0.0.3\n"
                ),
            )
            .unwrap();
            let log = dir.join("haproxy.log");
            let mut child = Command::new(bin)
                .arg("-db")
                .arg("-f")
                .arg(&conf)
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("haproxy runs");
            // Ready once every frontend accepts; gone early: a port was taken.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let up = [v2, v1, unlisted].iter().all(|p| {
                    TcpStream::connect_timeout(&([127, 0, 0, 1], *p).into(), Duration::from_secs(1))
                        .is_ok()
                });
                if up {
                    return Haproxy {
                        _child: Killed(child),
                        log,
                        v2,
                        v1,
                        unlisted,
                    };
                }
                assert!(Instant::now() < deadline, "haproxy did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("haproxy could not bind free ports");
    }

    /// What HAProxy printed.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
