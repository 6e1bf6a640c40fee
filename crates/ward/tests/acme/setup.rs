//! What every ACME scenario needs: ca.toml with `[acme]`, a DNS server
//! that answers every name with 127.0.0.1 and serves TXT records set over
//! HTTP (`pebble-challtestsrv`), free ports for the clients' challenge
//! servers, and the tools' presence checks.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Ca;

/// The OCSP URL written into issued certificates (tests pass the real
/// listener to `openssl ocsp -url`).
pub(crate) const OCSP_URL: &str = "http://127.0.0.1:9/ocsp";

/// Whether `tool` is on PATH; without it the test is skipped with a notice,
/// or fails under `CI`.
pub(crate) fn have(tool: &str, install: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required under CI ({install})"
        );
        println!("skipped: {tool} is not installed ({install})");
    }
    found
}

/// A port nobody listens on now, for a client's challenge server: the
/// client must be told a port before it binds, so the kernel picks one
/// and it is released just before the client takes it.
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

/// Validation ports the CA dials and the DNS server it asks.
pub(crate) struct Ports {
    /// http-01.
    pub(crate) http01: u16,
    /// tls-alpn-01.
    pub(crate) tlsalpn01: u16,
    /// DNS (pebble-challtestsrv).
    pub(crate) dns: u16,
}

/// Writes `[revocation] ocsp_url` and an `[acme]` section with provisioners
/// `web` (any name under acme.test, every challenge, profiles `default`
/// 24h and `shortlived` 6h) and `eab` (the same, external account binding
/// required), plus `extra` TOML.
pub(crate) fn configure(ca: &Ca, ports: &Ports, extra: &str) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut new = text.replace(
        "# ocsp_url = \"http://ca.example.org/ocsp\"",
        &format!("ocsp_url = \"{OCSP_URL}\""),
    );
    assert_ne!(new, text, "ca.toml has no ocsp_url to set");
    new.push_str(&format!(
        r#"
[acme]
http01_port = {http}
tlsalpn01_port = {tls}
dns_resolver = "127.0.0.1:{dns}"

[acme.provisioners.web]
allow_dns = ["*.acme.test"]
allow_ip = ["127.0.0.0/8"]
profiles = {{ default = "24h", shortlived = "6h" }}

[acme.provisioners.eab]
allow_dns = ["*.acme.test"]
eab_required = true
{extra}
"#,
        http = ports.http01,
        tls = ports.tlsalpn01,
        dns = ports.dns,
    ));
    std::fs::write(&path, new).unwrap();
}

/// A running `pebble-challtestsrv` (DNS and its management API only),
/// killed when dropped.
pub(crate) struct ChallTestSrv {
    child: Child,
    /// Its DNS port (UDP and TCP).
    pub(crate) dns: u16,
    /// Its management API, `http://127.0.0.1:PORT`.
    pub(crate) management: u16,
}

impl ChallTestSrv {
    /// Starts it and waits until the management API accepts connections.
    pub(crate) fn start() -> ChallTestSrv {
        let dns = free_dns_port();
        let management = free_port();
        let child = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let mut srv = ChallTestSrv {
            child,
            dns,
            management,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr: SocketAddr = ([127, 0, 0, 1], management).into();
        // Readiness: its management listener accepts (it binds DNS first).
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble-challtestsrv did not start"
            );
            if let Ok(Some(status)) = srv.child.try_wait() {
                panic!("pebble-challtestsrv exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        srv
    }

    /// A script for lego's `exec` DNS provider that sets and clears TXT
    /// records through the management API.
    pub(crate) fn exec_script(&self, dir: &Path) -> PathBuf {
        let path = dir.join("dns-exec.sh");
        let script = format!(
            r#"#!/bin/sh
# lego exec provider: $1 = present|cleanup, $2 = FQDN, $3 = TXT value
set -e
case "$1" in
  present) curl -sf -X POST -d "{{\"host\":\"$2\",\"value\":\"$3\"}}" http://127.0.0.1:{m}/set-txt ;;
  cleanup) curl -sf -X POST -d "{{\"host\":\"$2\"}}" http://127.0.0.1:{m}/clear-txt ;;
  *) exit 0 ;;
esac
"#,
            m = self.management
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
