//! nginx as a judge: find the binary, run it on a free port with a given
//! configuration (stopped by its PID, SIGTERM then SIGKILL, when dropped), and a `ssl_verify_client
//! on; ssl_ocsp on;` server configuration; curl through it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::OutputText;

/// How long nginx may take to accept connections.
const NGINX_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", "command -v nginx"])
                .output()
                .ok()?;
            let path = out.stdout_text().trim().to_owned();
            (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
}

/// A running nginx, stopped (by its PID) when dropped.
pub(crate) struct Nginx {
    child: Child,
    /// Where it accepts TLS.
    pub(crate) addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Nginx {
    /// SIGTERM first: the master stops its workers. A SIGKILL would leave
    /// the worker orphaned and running after the test.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Its error log so far.
    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Starts nginx on a free port; retries on the rare port collision.
    pub(crate) fn start(bin: &Path, dir: &Path, conf_for: impl Fn(u16) -> String) -> Nginx {
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, conf_for(port)).unwrap();
            let _ = std::fs::remove_file(dir.join("error.log"));
            let mut child = Command::new(bin)
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nginx starts");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + NGINX_DEADLINE;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    if let Some(pipe) = child.stderr.take() {
                        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                            err.push_str(&line);
                            err.push('\n');
                        }
                    }
                    if err.contains("Address already in use") && attempt < 4 {
                        break; // another process took the port: pick another
                    }
                    panic!("nginx exited ({status}): {err}");
                }
                if TcpStream::connect(addr).is_ok() {
                    return Nginx {
                        child,
                        addr,
                        dir: dir.to_owned(),
                    };
                }
                assert!(Instant::now() < deadline, "nginx never accepted on {addr}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("the loop returns or panics")
    }
}

/// A server on `port` with `server`.crt/.key, requiring client certificates
/// from `root` checked by OCSP at `responder`.
pub(crate) fn config(dir: &Path, port: u16, server: &Path, root: &Path, responder: &str) -> String {
    let d = dir.display();
    let crt = server.with_extension("crt");
    let key = server.with_extension("key");
    format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_client_certificate {root};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_ocsp on;
        ssl_ocsp_responder {responder};
        location / {{
            return 200 "hello $ssl_client_verify\n";
        }}
    }}
}}
"#,
        crt = crt.display(),
        key = key.display(),
        root = root.display(),
    )
}

/// `curl` through nginx with a client certificate: (status, body).
pub(crate) fn get_through(nginx: &Nginx, root: &Path, chain: &Path, key: &Path) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(root)
        .arg("--cert")
        .arg(chain)
        .arg("--key")
        .arg(key)
        .arg(format!("https://{}/", nginx.addr))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl: {}", out.stderr_text());
    let text = out.stdout_text();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}
