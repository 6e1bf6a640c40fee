//! A `ward ca serve` with every listener the console tests use (HTTPS API
//! with the console, plain HTTP for OCSP, a console-only HTTPS listener),
//! curl as the HTTP client, and signing in through a one-time link.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Ca, OutputText};

/// A running CA, killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// The API (and console) listener.
    pub(crate) https: SocketAddr,
    /// The plain-HTTP listener (roots, CRL, OCSP).
    pub(crate) http: SocketAddr,
    /// The console-only listener.
    pub(crate) console: SocketAddr,
    output: Arc<Mutex<String>>,
}

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

impl Server {
    /// Starts the CA on ephemeral ports and waits for its readiness lines.
    pub(crate) fn start(ca: &Ca) -> Server {
        let output = Arc::new(Mutex::new(String::new()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["ca", "serve", "--dir", ca.dir(), "--listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--console-listen", "127.0.0.1:0"])
            .args(["--audit-log", "stderr"])
            .args(ca.db_args())
            .args(ca.init_storage_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward ca serve starts");
        collect(child.stdout.take().unwrap(), output.clone());
        collect(child.stderr.take().unwrap(), output.clone());
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let text = output.lock().unwrap().clone();
            let find = |prefix: &str| {
                text.lines().find_map(|l| {
                    l.strip_prefix(prefix).map(|a| {
                        a.trim_end_matches("/console/")
                            .parse::<SocketAddr>()
                            .unwrap()
                    })
                })
            };
            if let (Some(https), Some(http), Some(console)) = (
                find("ward ca: listening on https://"),
                find("ward ca: listening on http://"),
                find("ward ca: console on https://"),
            ) {
                return Server {
                    child,
                    https,
                    http,
                    console,
                    output,
                };
            }
            if Instant::now() > end || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("ward ca serve never got ready: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `https://ADDR` of the API listener.
    pub(crate) fn url(&self) -> String {
        format!("https://{}", self.https)
    }

    /// Everything it printed.
    pub(crate) fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer as curl saw it.
#[derive(Debug)]
pub(crate) struct Http {
    /// Status code.
    pub(crate) status: u16,
    /// Header lines, names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: String,
}

impl Http {
    /// The first value of a header.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request with curl, trusting the CA's root: `form` is sent as
/// `application/x-www-form-urlencoded` (a POST).
pub(crate) fn curl(
    root: &Path,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
    extra: &[&str],
) -> Http {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "30", "-X", method, "--cacert"])
        .arg(root);
    for (name, value) in headers {
        cmd.args(["-H", &format!("{name}: {value}")]);
    }
    if let Some(form) = form {
        cmd.args(["--data-raw", form]);
    }
    cmd.args(extra).arg(url);
    let out = cmd.output().expect("curl runs");
    assert!(out.status.success(), "curl {url}: {}", out.stderr_text());
    let text = out.stdout_text();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Http {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `ward ca console-login` for this CA: the printed link.
pub(crate) fn login_link(ca: &Ca, url: &str, expires_in: &str) -> String {
    let out = ca.ward(&[
        "ca",
        "console-login",
        "--url",
        url,
        "--expires-in",
        expires_in,
    ]);
    assert!(out.status.success(), "console-login: {}", out.stderr_text());
    let link = out.stdout_text().trim().to_owned();
    assert!(
        link.starts_with(&format!("{url}/console/login?token=wcl_")),
        "{link}"
    );
    link
}

/// A signed-in console session as curl holds it.
pub(crate) struct Session {
    /// `NAME=VALUE` for the Cookie header.
    pub(crate) cookie: String,
    /// The session's CSRF token.
    pub(crate) csrf: String,
}

/// The token part of a login link.
pub(crate) fn link_token(link: &str) -> String {
    link.split_once("token=").unwrap().1.to_owned()
}

/// POSTs a link's token to the sign-in form, as the page's button does.
pub(crate) fn use_link(root: &Path, base: &str, link: &str) -> Http {
    curl(
        root,
        "POST",
        &format!("{base}/console/login"),
        &[],
        Some(&format!("token={}", link_token(link))),
        &[],
    )
}

/// The value of the first `name="csrf"` field of a page.
pub(crate) fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Signs in with a fresh link and reads the session's CSRF token.
pub(crate) fn sign_in(ca: &Ca, root: &Path, base: &str) -> Session {
    let link = login_link(ca, base, "5m");
    let answer = use_link(root, base, &link);
    assert_eq!(answer.status, 303, "{answer:?}");
    assert_eq!(answer.header("location"), Some("/console/"));
    let set = answer.header("set-cookie").expect("a session cookie");
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = curl(
        root,
        "GET",
        &format!("{base}/console/tokens"),
        &[("Cookie", &cookie)],
        None,
        &[],
    );
    assert_eq!(page.status, 200, "{page:?}");
    Session {
        csrf: csrf_of(&page.body),
        cookie,
    }
}
