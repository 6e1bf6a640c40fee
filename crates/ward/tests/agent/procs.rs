//! The processes these tests run: `ward ca serve` (restartable on the same
//! address) and `ward agent run`, each killed when dropped; plus small
//! probes (admin HTTP, Workload API clients, openssl fingerprints).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::Ca;

/// Generous bound for anything that should happen within seconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

fn collect(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut buf = into.lock().unwrap();
            buf.push_str(&line);
            buf.push('\n');
        }
    });
}

/// Polls `cond` every 50 ms until it holds or `deadline` passes.
pub(crate) fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to a process this test started.
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn reap(child: &mut Child, deadline: Duration) -> ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `ward ca serve`.
pub(crate) struct CaProcess {
    child: Option<Child>,
    /// Where it accepts HTTPS.
    pub(crate) addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl CaProcess {
    /// Starts the CA on `listen` and waits for its readiness line.
    pub(crate) fn start(ca: &Ca, listen: &str) -> CaProcess {
        let output = Arc::new(Mutex::new(String::new()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["ca", "serve", "--dir", ca.dir(), "--listen", listen])
            .args(ca.db_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward ca serve starts");
        collect(child.stdout.take().unwrap(), output.clone());
        collect(child.stderr.take().unwrap(), output.clone());
        let mut addr = None;
        let end = Instant::now() + DEADLINE;
        while addr.is_none() {
            addr = output.lock().unwrap().lines().find_map(|l| {
                l.strip_prefix("ward ca: listening on https://")
                    .map(|a| a.parse::<SocketAddr>().unwrap())
            });
            if Instant::now() > end || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("ward ca serve never got ready: {}", output.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        CaProcess {
            child: Some(child),
            addr: addr.unwrap(),
            output,
        }
    }

    /// `https://ADDR`.
    pub(crate) fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// SIGTERM, then waits for the exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            reap(&mut child, DEADLINE);
        }
    }

    /// Everything it printed.
    pub(crate) fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `ward agent run`.
pub(crate) struct AgentProcess {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    /// When it was spawned.
    pub(crate) started: Instant,
}

/// One "identity ready/rotated" line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The leaf serial, hex as the agent prints it.
    pub(crate) serial: String,
}

impl AgentProcess {
    /// Spawns `ward agent run ARGS` with extra environment `env`.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> AgentProcess {
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["agent", "run"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward agent run starts");
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        AgentProcess {
            child: Some(child),
            stderr,
            stdout,
            started,
        }
    }

    /// Everything it printed (stdout and stderr).
    pub(crate) fn output(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// The identities delivered so far, in order.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.stderr
            .lock()
            .unwrap()
            .lines()
            .filter(|l| {
                l.starts_with("ward agent: identity ready:")
                    || l.starts_with("ward agent: identity rotated:")
            })
            .map(|l| Delivery {
                serial: l
                    .split_whitespace()
                    .skip_while(|w| *w != "serial")
                    .nth(1)
                    .unwrap()
                    .to_owned(),
            })
            .collect()
    }

    /// Waits until `n` identities were delivered and returns them.
    pub(crate) fn wait_deliveries(&mut self, n: usize, deadline: Duration) -> Vec<Delivery> {
        let end = Instant::now() + deadline;
        loop {
            let got = self.deliveries();
            if got.len() >= n {
                return got;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the agent exited ({status}) early:\n{}", self.output());
            }
            assert!(
                Instant::now() < end,
                "only {} of {n} identities delivered:\n{}",
                got.len(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How often `needle` occurs in the output.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.output().matches(needle).count()
    }

    /// A line of its stderr announcing something, e.g. the admin address.
    pub(crate) fn line_value(&self, prefix: &str) -> Option<String> {
        self.stderr
            .lock()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
    }

    /// Whether it is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits for it to exit by itself.
    pub(crate) fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = reap(&mut child, deadline);
        // Let the readers drain the pipes.
        std::thread::sleep(Duration::from_millis(100));
        status
    }

    /// SIGTERM, then waits for the exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        sigterm(self.child.as_ref().unwrap());
        self.wait_exit(DEADLINE)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The root's SHA-256 fingerprint as openssl prints it (colons, upper case).
pub(crate) fn openssl_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .rsplit_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// The serial of the first certificate in a PEM file, lowercase hex as
/// Ward prints it.
pub(crate) fn pem_serial(path: &Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let certs = ward_pki::pem::parse_certs(&pem).unwrap();
    der_serial(&certs[0])
}

/// The serial of a DER certificate, lowercase hex as Ward prints it.
pub(crate) fn der_serial(der: &[u8]) -> String {
    ward_pki::inspect::CertInfo::from_der(der, time::OffsetDateTime::now_utc())
        .unwrap()
        .serial
        .replace(':', "")
        .to_lowercase()
}

/// A plain HTTP/1.1 GET against the admin listener: (status, body).
pub(crate) fn admin_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Mode bits of a file.
pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A directory for one agent: `out/`, the socket, the hook's files.
pub(crate) struct AgentDir {
    /// Root of it.
    pub(crate) root: PathBuf,
}

impl AgentDir {
    /// Under the CA's temporary directory.
    pub(crate) fn new(ca: &Ca, name: &str) -> AgentDir {
        let root = ca.pki().path(name);
        std::fs::create_dir_all(&root).unwrap();
        AgentDir { root }
    }

    /// A path inside it, as a string.
    pub(crate) fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_owned()
    }
}
