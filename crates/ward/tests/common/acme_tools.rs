//! What the ACME suites (the CA's ACME server in `tests/acme`, the ACME
//! client in `tests/acme_client`) share: presence checks for third-party
//! tools, free ports, and `pebble-challtestsrv` as the DNS server that
//! answers every name with 127.0.0.1 and serves TXT records set over HTTP.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `tool` is on PATH. Under CI a missing tool is a failure (`.ci/run`
/// installs it with `install`); elsewhere the caller skips its test.
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

/// A port nobody listens on now (for a tool that must be told its port).
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

/// Waits until `port` accepts TCP connections; panics if `child` exits or
/// after 30 s.
pub(crate) fn wait_tcp(port: u16, child: &mut Child, what: &str) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    /// Starts it; ready once the management API accepts connections (it
    /// binds DNS first).
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

    /// A DNS hook script (`present|cleanup FQDN VALUE`, the form of lego's
    /// `exec` provider and of Ward's dns-01 hook) that sets and clears TXT
    /// records through the management API and appends `ACTION FQDN` to
    /// `DIR/dns-hook.log`. Other actions exit with `other_exit`.
    pub(crate) fn txt_script(&self, dir: &Path, other_exit: u8) -> PathBuf {
        let path = dir.join("dns-hook.sh");
        let script = format!(
            r#"#!/bin/sh
set -e
case "$1" in
  present) curl -sf -X POST -d "{{\"host\":\"$2\",\"value\":\"$3\"}}" http://127.0.0.1:{m}/set-txt ;;
  cleanup) curl -sf -X POST -d "{{\"host\":\"$2\"}}" http://127.0.0.1:{m}/clear-txt ;;
  *) exit {other_exit} ;;
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
