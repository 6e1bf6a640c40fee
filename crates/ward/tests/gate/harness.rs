//! `ward gate serve` as a child process: started on ephemeral ports, ready
//! when it says so on stderr, its audit lines (stdout) collected, its
//! `/metrics` read and parsed, and killed when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) use crate::common::{OutputText, Pki, ward};
pub(crate) use crate::pki::*;

/// Upper bound for anything the tests wait for.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it holds; panics with `what` after
/// [`DEADLINE`]. For conditions nothing signals (a counter, a file reload).
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running gate.
pub(crate) struct Gate {
    child: Child,
    /// The mTLS listener.
    pub(crate) addr: SocketAddr,
    /// The admin listener.
    pub(crate) admin: SocketAddr,
    audit: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(
    pipe: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    ready: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &ready {
                let _ = tx.send(line.clone());
            }
            into.lock().unwrap().push(line);
        }
    })
}

impl Gate {
    /// `ward gate serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 ARGS…`.
    pub(crate) fn flags(args: &[&str]) -> Gate {
        let mut all = vec!["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Gate::start(&all)
    }

    /// `ward gate serve --config FILE`.
    pub(crate) fn config(file: &Path) -> Gate {
        Gate::start(&["--config", file.to_str().unwrap()])
    }

    fn start(args: &[&str]) -> Gate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["gate", "serve"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward gate serve starts");
        let audit = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            collect(child.stdout.take().unwrap(), audit.clone(), None),
            collect(child.stderr.take().unwrap(), stderr.clone(), Some(tx)),
        ];
        let (mut addr, mut admin) = (None, None);
        let start = Instant::now();
        while addr.is_none() || admin.is_none() {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("ward gate: listening on ") {
                        addr = Some(a.trim().parse().unwrap());
                    }
                    if let Some(a) = line.strip_prefix("ward gate: admin on http://") {
                        admin = Some(a.trim().parse().unwrap());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    panic!(
                        "the gate did not become ready ({status}): {}",
                        stderr.lock().unwrap().join("\n")
                    );
                }
            }
        }
        Gate {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            audit,
            stderr,
            readers,
        }
    }

    /// The listener's port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://localhost:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("https://localhost:{}", self.port())
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`HUP`, `TERM`).
    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for the process to exit and for its output to be read.
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "the gate did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        status
    }

    /// Stops the gate with SIGTERM (it must exit 0) and returns every audit
    /// line, each checked against SPEC §6.
    pub(crate) fn finish(mut self) -> Vec<Value> {
        self.signal("TERM");
        let status = self.wait_exit();
        assert!(status.success(), "gate exit: {status}\n{}", self.stderr());
        self.audit_lines()
    }

    /// Audit lines so far, parsed and checked.
    pub(crate) fn audit_lines(&self) -> Vec<Value> {
        let lines = self.audit.lock().unwrap().clone();
        lines.iter().map(|l| check_audit_line(l)).collect()
    }

    /// Audit lines so far, as written (not checked).
    #[allow(dead_code)] // used by the acme_client test binary only
    pub(crate) fn audit_raw(&self) -> Vec<String> {
        self.audit.lock().unwrap().clone()
    }

    /// Everything the gate logged on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// `GET /metrics` on the admin listener.
    pub(crate) fn metrics(&self) -> Metrics {
        Metrics(admin_get(self.admin, "/metrics"))
    }

    /// Waits (bounded) until the sum of `name{labels…}` reaches `at_least`.
    pub(crate) fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) {
        wait_until(&format!("{name}{labels:?} >= {at_least}"), || {
            self.metrics().sum(name, labels) >= at_least
        });
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET (the admin listener); returns the body, asserting 200.
pub(crate) fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// Prometheus text.
pub(crate) struct Metrics(pub(crate) String);

impl Metrics {
    /// Every sample of `name` as (labels, value).
    pub(crate) fn samples(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, labels) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                (metric == name).then(|| (parse_labels(labels), value.parse().unwrap()))
            })
            .collect()
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .iter()
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// Parses one audit line and checks the fields SPEC §6 lists for its event.
pub(crate) fn check_audit_line(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let has = |k: &str| v.get(k).is_some();
    let time = v["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time: {line}"));
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("time {time:?}: {e}"));
    v["remote"]
        .as_str()
        .and_then(|r| r.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("remote: {line}"));
    assert!(v["result"].is_string() && has("reason"), "{line}");
    let required: &[&str] = match v["event"].as_str() {
        Some("handshake") => &[
            "sni",
            "tls_version",
            "cipher",
            "group",
            "alpn",
            "subject",
            "spiffe_id",
            "sans",
            "serial",
            "fingerprint",
            "duration_ms",
        ],
        Some("request") => &[
            "sni",
            "subject",
            "spiffe_id",
            "serial",
            "fingerprint",
            "method",
            "path",
            "route",
            "status",
            "duration_ms",
        ],
        Some("connection") => &["spiffe_id", "serial", "fingerprint", "upstream"],
        other => panic!("unknown audit event {other:?}: {line}"),
    };
    for k in required {
        assert!(has(k), "audit line lacks {k:?}: {line}");
    }
    let accepted = matches!(v["result"].as_str(), Some("accepted" | "forwarded"));
    if accepted {
        assert!(v["reason"].is_null(), "{line}");
        let fp = v["fingerprint"].as_str().unwrap();
        assert!(
            fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
            "{line}"
        );
        assert!(
            v["serial"].as_str().is_some_and(|s| !s.is_empty()),
            "{line}"
        );
    } else {
        assert!(
            v["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{line}"
        );
    }
    match v["event"].as_str() {
        Some("handshake") if accepted => {
            for k in ["tls_version", "cipher", "group"] {
                assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {line}");
            }
            assert!(v["sans"].is_array(), "{line}");
        }
        Some("request") => {
            assert!(
                v["status"]
                    .as_u64()
                    .is_some_and(|s| (100..600).contains(&s)),
                "{line}"
            );
            assert!(
                v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
                "{line}"
            );
            assert!(v["route"].is_string(), "{line}");
        }
        _ => {}
    }
    v
}
