//! Pebble and `pebble-challtestsrv` as child processes. Pebble dials fixed
//! validation ports (`httpPort`, `tlsPort` in its JSON config), so the
//! ports are chosen up front: the kernel picks a free one and it is
//! released just before the process that needs it binds it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{OutputText, Pki, ward};

/// Upper bound for a tool to start.
const START: Duration = Duration::from_secs(30);

/// A port nobody listens on now.
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A free UDP+TCP port pair (same number) for a DNS server.
pub(crate) fn free_dns_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether `tool` is installed; without it the test is skipped with a
/// notice (and fails under `CI`).
pub(crate) fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required under CI"
        );
        println!("skipped: {tool} is not installed");
    }
    found
}

fn wait_tcp(port: u16, child: &mut Child, what: &str) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + START;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pebble-challtestsrv` with DNS (every name → 127.0.0.1) and its
/// management API only.
pub(crate) struct ChallTestSrv {
    child: Child,
    /// DNS port (UDP and TCP).
    pub(crate) dns: u16,
    /// Management API port.
    pub(crate) management: u16,
}

impl ChallTestSrv {
    /// Starts it; ready once the management API accepts connections.
    pub(crate) fn start() -> ChallTestSrv {
        let dns = free_dns_port();
        let management = free_port();
        let mut child = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        wait_tcp(management, &mut child, "pebble-challtestsrv");
        ChallTestSrv {
            child,
            dns,
            management,
        }
    }

    /// A dns-01 hook (`present|cleanup FQDN VALUE`) that sets and clears
    /// TXT records through the management API.
    pub(crate) fn hook(&self, dir: &Path) -> PathBuf {
        let path = dir.join("dns-hook.sh");
        let script = format!(
            r#"#!/bin/sh
set -e
case "$1" in
  present) curl -sf -X POST -d "{{\"host\":\"$2\",\"value\":\"$3\"}}" http://127.0.0.1:{m}/set-txt ;;
  cleanup) curl -sf -X POST -d "{{\"host\":\"$2\"}}" http://127.0.0.1:{m}/clear-txt ;;
  *) exit 2 ;;
esac
echo "$1 $2" >> "{log}"
"#,
            m = self.management,
            log = dir.join("dns-hook.log").display(),
        );
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
