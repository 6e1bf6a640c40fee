//! Helper processes for the gRPC tests: Python scripts that print
//! `PORT n` when ready and `EVENT …` lines the tests wait for, killed when
//! dropped; a PKI with a gate certificate and clients; the gate's config.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{DEADLINE, Pki, crt, key, mint, s, server_cert};

/// The directory of the Python scripts.
pub(crate) fn script(name: &str) -> String {
    format!("{}/tests/gate_grpc/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Whether Python with `modules` is usable; when not, a notice (or, under
/// `CI`, a failure).
pub(crate) fn python_has(modules: &[&str]) -> bool {
    let code = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = Command::new("python3")
        .args(["-c", &code])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with {modules:?} is required under CI (pip install grpcio grpcio-health-checking websockets)"
        );
        println!("skipped: python3 lacks one of {modules:?}");
    }
    ok
}

/// Whether `tool` is on PATH; when not, a notice (or, under `CI`, a failure).
pub(crate) fn tool(tool: &str, package: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required under CI (apt-get install {package})"
        );
        println!("skipped: {tool} is not installed (apt-get install {package})");
    }
    ok
}

/// A Python helper process.
pub(crate) struct Py {
    child: Child,
    /// The port it listens on.
    pub(crate) port: u16,
    events: mpsc::Receiver<String>,
}

impl Py {
    /// Runs `python3 SCRIPT ARGS…` and waits for its `PORT n` line.
    pub(crate) fn start(name: &str, args: &[&str]) -> Py {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(script(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port = loop {
            let line = rx
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("{name} did not print its port"));
            if let Some(p) = line.strip_prefix("PORT ") {
                break p.trim().parse().unwrap();
            }
        };
        Py {
            child,
            port,
            events: rx,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The lines printed since the last look, without waiting.
    pub(crate) fn printed(&self) -> Vec<String> {
        self.events.try_iter().collect()
    }

    /// Waits (bounded) for the line `EVENT what`.
    pub(crate) fn wait_event(&self, what: &str) {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.events.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if line.strip_prefix("EVENT ") == Some(what) => return,
                Ok(_) => {}
                Err(_) => panic!("no EVENT {what} from the upstream"),
            }
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA with a gate certificate and two clients: `ns/app` and `ops/admin`.
pub(crate) struct Setup {
    pub(crate) pki: Pki,
    pub(crate) server: PathBuf,
    pub(crate) app: PathBuf,
    pub(crate) admin: PathBuf,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        let pki = Pki::init(&[]);
        let server = server_cert(&pki, "spiffe://example.org/gate", "gate");
        let app = mint(&pki, "client", "spiffe://example.org/ns/app", "app", &[]);
        let admin = mint(
            &pki,
            "client",
            "spiffe://example.org/ops/admin",
            "admin",
            &[],
        );
        Setup {
            pki,
            server,
            app,
            admin,
        }
    }

    /// The root certificate file.
    pub(crate) fn root(&self) -> String {
        s(&self.pki.root())
    }

    /// Writes a gate config with one tenant and `routes` (TOML
    /// `[[tenants.routes]]` entries) and returns its path.
    pub(crate) fn config(&self, routes: &str, extra: &str) -> PathBuf {
        let path = self.pki.path("gate.toml");
        let text = format!(
            r#"audit_log = "stdout"
{extra}
[listen]
address = "127.0.0.1:0"
admin = "127.0.0.1:0"

[[tenants]]
name = "grpc"
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
{routes}
"#,
            cert = crt(&self.server),
            key = key(&self.server),
            ca = self.root(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `(cert, key)` of a client.
    pub(crate) fn creds(prefix: &Path) -> (String, String) {
        (crt(prefix), key(prefix))
    }
}
