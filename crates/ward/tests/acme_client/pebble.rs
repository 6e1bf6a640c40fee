//! Pebble and `pebble-challtestsrv` as child processes. Pebble dials fixed
//! validation ports (`httpPort`, `tlsPort` in its JSON config), so the
//! ports are chosen up front: the kernel picks a free one and it is
//! released just before the process that needs it binds it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::acme_tools::wait_tcp;
pub(crate) use crate::common::acme_tools::{ChallTestSrv, free_port};
use crate::common::{OutputText, Pki, ward};

/// Upper bound for a tool to start.
const START: Duration = Duration::from_secs(30);

/// Whether `tool` (Pebble's or a checker) is installed; see
/// [`acme_tools::have`](crate::common::acme_tools::have).
pub(crate) fn have(tool: &str) -> bool {
    let package = match tool {
        "pebble-challtestsrv" => "pebble",
        other => other,
    };
    crate::common::acme_tools::have(tool, &format!("apt-get install {package}"))
}

/// How Pebble is configured.
pub(crate) struct PebbleOptions {
    /// Where it validates http-01.
    pub(crate) http_port: u16,
    /// Where it validates tls-alpn-01.
    pub(crate) tls_port: u16,
    /// Certificate lifetime in seconds (Pebble's default: 5 years).
    pub(crate) validity: Option<u64>,
}

/// A running Pebble (its HTTPS certificate from a Ward CA), killed when
/// dropped.
pub(crate) struct Pebble {
    child: Option<Child>,
    /// The Ward CA whose root Pebble's HTTPS certificate chains to.
    pub(crate) pki: Pki,
    /// ACME port.
    pub(crate) port: u16,
    /// Management port.
    pub(crate) management: u16,
    /// DNS for Pebble's validator.
    pub(crate) dns: ChallTestSrv,
    log: PathBuf,
}

impl Pebble {
    /// Starts challtestsrv and Pebble; ready once the directory answers.
    pub(crate) fn start(options: PebbleOptions) -> Pebble {
        let pki = Pki::init(&[]);
        let tls = pki.path("pebble-tls");
        let out = ward(&[
            "cert",
            "create",
            "--ca-dir",
            pki.ca_dir(),
            "--profile",
            "server",
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
            "--out",
            tls.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "cert create: {}", out.stderr_text());
        let dns = ChallTestSrv::start();
        let port = free_port();
        let management = free_port();
        let validity = options
            .validity
            .map(|v| format!(", \"certificateValidityPeriod\": {v}"))
            .unwrap_or_default();
        let config = pki.path("pebble.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble": {{"listenAddress": "127.0.0.1:{port}",
  "managementListenAddress": "127.0.0.1:{management}",
  "certificate": "{crt}", "privateKey": "{key}",
  "httpPort": {http}, "tlsPort": {tlsp},
  "ocspResponderURL": "", "externalAccountBindingRequired": false{validity}}}}}"#,
                crt = tls.with_extension("crt").display(),
                key = tls.with_extension("key").display(),
                http = options.http_port,
                tlsp = options.tls_port,
            ),
        )
        .unwrap();
        let log = pki.path("pebble.log");
        let mut pebble = Pebble {
            child: None,
            pki,
            port,
            management,
            dns,
            log,
        };
        pebble.spawn(&config);
        pebble
    }

    fn spawn(&mut self, config: &Path) {
        let log = std::fs::File::create(&self.log).unwrap();
        let mut child = Command::new("pebble")
            .args(["-config", config.to_str().unwrap()])
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble starts");
        wait_tcp(self.port, &mut child, "pebble");
        self.child = Some(child);
    }

    /// The directory URL.
    pub(crate) fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root Pebble's HTTPS certificate chains to (for `ca_bundle`).
    pub(crate) fn https_root(&self) -> PathBuf {
        self.pki.root()
    }

    /// Pebble's issuing root (it makes a new one at every start), from
    /// its management interface, written to a file.
    pub(crate) fn issuing_root(&self) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sSf", "--max-time", "10", "--cacert"])
            .arg(self.https_root())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .output()
            .unwrap();
        assert!(out.status.success(), "roots/0: {}", out.stderr_text());
        let path = self.pki.path("pebble-issuing-root.pem");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    /// Orders Pebble has created ("Added order … to the db" in its log).
    pub(crate) fn orders(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Added order"))
            .count()
    }

    /// Pebble's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills Pebble (the ACME server is down from now on).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.kill();
    }
}
