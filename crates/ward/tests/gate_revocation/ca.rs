//! A running `ward ca serve` (HTTPS and plain-HTTP listeners on
//! 127.0.0.1:0) that issues client certificates through tokens
//! (`POST /v1/issue`, by curl) and revokes them (`ward revoke`, `ward token
//! revoke --with-certificates`), killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use crate::common::{OutputText, Pki, ward};

/// A client certificate issued online.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    /// Chain file (leaf + intermediate).
    pub(crate) crt: PathBuf,
    /// Key file.
    pub(crate) key: PathBuf,
    /// Serial as the CA printed it (hex).
    pub(crate) serial: String,
}

/// The CA directory and its server.
pub(crate) struct CaServer {
    pub(crate) pki: Pki,
    child: Option<Child>,
    /// HTTPS listener.
    pub(crate) https: SocketAddr,
    /// Plain-HTTP listener (CRL, OCSP).
    pub(crate) http: SocketAddr,
    stderr: Arc<Mutex<String>>,
    files: AtomicUsize,
    /// `--database` for every process on this CA (PostgreSQL), if any.
    database: Option<String>,
}

/// Another `ward ca serve` on the same directory and database: a replica.
pub(crate) struct Replica {
    child: Child,
    /// HTTPS listener.
    pub(crate) https: SocketAddr,
    /// Plain-HTTP listener (CRL, OCSP).
    pub(crate) http: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Replica {
    /// `http://HTTP-LISTENER/v1/crl`.
    pub(crate) fn crl_url(&self) -> String {
        format!("http://{}/v1/crl", self.http)
    }

    /// Everything the replica logged.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ward ca serve --dir DIR [--database URL]` on two ephemeral
/// listeners and waits for both readiness lines.
fn spawn_server(
    dir: &str,
    database: Option<&str>,
    stderr: Arc<Mutex<String>>,
) -> (Child, SocketAddr, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ward"));
    cmd.args(["ca", "serve", "--dir", dir]).args([
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]);
    if let Some(url) = database {
        // A fresh PostgreSQL database holds no store until one is created
        // explicitly; on an existing store the flag changes nothing.
        cmd.args(["--database", url, "--init-storage"]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ward ca serve starts");
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let buf = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.strip_prefix("ward ca: listening on https://") {
                let _ = tx.send((true, a.to_owned()));
            } else if let Some(a) = line.strip_prefix("ward ca: listening on http://") {
                let _ = tx.send((false, a.to_owned()));
            }
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
    let (mut https, mut http) = (None, None);
    while https.is_none() || http.is_none() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((true, a)) => https = Some(a.parse().unwrap()),
            Ok((false, a)) => http = Some(a.parse().unwrap()),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ward ca serve never got ready ({e}): {}",
                    stderr.lock().unwrap()
                );
            }
        }
    }
    (child, https.unwrap(), http.unwrap())
}

impl CaServer {
    /// A fresh CA whose ca.toml lines `key = …` are replaced by `edits`
    /// (keys missing from ca.toml are an error), then served.
    pub(crate) fn start(edits: &[(&str, &str)]) -> CaServer {
        CaServer::start_on(edits, None)
    }

    /// Like [`CaServer::start`], with every process of this CA (servers,
    /// `ward token create`, `ward revoke --dir`) on `database`.
    pub(crate) fn start_on(edits: &[(&str, &str)], database: Option<String>) -> CaServer {
        let pki = Pki::init(&[]);
        let path = PathBuf::from(pki.ca_dir()).join("ca.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (key, value) in edits {
            let commented = format!("# {key} = ");
            let plain = format!("{key} = ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&plain) || l.starts_with(&commented))
                .unwrap_or_else(|| panic!("ca.toml has no {key}"))
                .to_owned();
            text = text.replace(&line, &format!("{key} = {value}"));
        }
        std::fs::write(&path, text).unwrap();
        let mut server = CaServer {
            pki,
            child: None,
            https: "127.0.0.1:1".parse().unwrap(),
            http: "127.0.0.1:1".parse().unwrap(),
            stderr: Arc::new(Mutex::new(String::new())),
            files: AtomicUsize::new(0),
            database,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let (child, https, http) = spawn_server(
            self.pki.ca_dir(),
            self.database.as_deref(),
            self.stderr.clone(),
        );
        self.https = https;
        self.http = http;
        self.child = Some(child);
    }

    /// A second server on this CA's directory and database.
    pub(crate) fn replica(&self) -> Replica {
        let stderr = Arc::new(Mutex::new(String::new()));
        let (child, https, http) =
            spawn_server(self.pki.ca_dir(), self.database.as_deref(), stderr.clone());
        Replica {
            child,
            https,
            http,
            stderr,
        }
    }

    /// `ward ARGS --dir DIR [--database URL]` (a separate process working on
    /// the store directly); its stdout.
    pub(crate) fn local(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--dir", self.pki.ca_dir()]);
        if let Some(url) = &self.database {
            all.extend(["--database", url.as_str()]);
        }
        let out = ward(&all);
        assert!(out.status.success(), "ward {args:?}: {}", out.stderr_text());
        out.stdout_text()
    }

    /// Everything the server logged.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stops the server (the CRL and OCSP answers become unreachable).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `http://HTTP-LISTENER/v1/crl`.
    pub(crate) fn crl_url(&self) -> String {
        format!("http://{}/v1/crl", self.http)
    }

    /// `https://HTTPS-LISTENER`.
    pub(crate) fn https_url(&self) -> String {
        format!("https://{}", self.https)
    }

    /// The root certificate.
    pub(crate) fn root(&self) -> String {
        self.pki.root().to_str().unwrap().to_owned()
    }

    /// A file in the CA directory.
    pub(crate) fn file(&self, name: &str) -> String {
        PathBuf::from(self.pki.ca_dir())
            .join(name)
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// A fresh path in the test's directory.
    pub(crate) fn scratch(&self, stem: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        self.pki.path(&format!("{n:03}-{stem}"))
    }

    /// `ward token create --dir … --spiffe-id ID EXTRA… --format json`:
    /// (secret, id).
    pub(crate) fn token(&self, spiffe_id: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec![
            "token",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let json: Value = serde_json::from_str(&self.local(&args)).unwrap();
        (
            json["token"].as_str().unwrap().to_owned(),
            json["id"].as_str().unwrap().to_owned(),
        )
    }

    /// `POST /v1/issue` with `token` (curl); writes the chain and key.
    pub(crate) fn issue_with(&self, token: &str, name: &str) -> Issued {
        let body = serde_json::json!({ "token": token }).to_string();
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--max-time", "20", "--cacert"])
            .arg(self.root())
            .args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body,
            ])
            .arg(format!("{}/v1/issue", self.https_url()))
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "issue: {}{}",
            out.stdout_text(),
            out.stderr_text()
        );
        let json: Value = serde_json::from_str(&out.stdout_text()).unwrap();
        let crt = self.scratch(&format!("{name}.crt"));
        let key = self.scratch(&format!("{name}.key"));
        std::fs::write(&crt, json["chain"].as_str().unwrap()).unwrap();
        // Private from the first byte: a gate refuses a key others can read.
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)
                .and_then(|mut f| f.write_all(json["private_key"].as_str().unwrap().as_bytes()))
                .unwrap();
        }
        Issued {
            crt,
            key,
            serial: json["serial"].as_str().unwrap().to_owned(),
        }
    }

    /// A client certificate for `spiffe://example.org/NAME` from a one-use token.
    pub(crate) fn issue(&self, name: &str) -> Issued {
        let (token, _) = self.token(&format!("spiffe://example.org/{name}"), &[]);
        self.issue_with(&token, name)
    }

    fn admin_args(&self) -> Vec<String> {
        vec![
            "--ca".into(),
            self.https_url(),
            "--admin-cert".into(),
            self.file("admin.crt"),
            "--admin-key".into(),
            self.file("admin.key"),
        ]
    }

    /// `ward revoke SERIAL --ca URL --admin-cert … --admin-key …` (the CA
    /// re-signs its CRL at once).
    pub(crate) fn revoke(&self, serial: &str) {
        let mut args: Vec<String> = vec!["revoke".into(), serial.into()];
        args.extend(self.admin_args());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ward(&refs);
        assert!(out.status.success(), "ward revoke: {}", out.stderr_text());
    }

    /// `ward token revoke ID --with-certificates --ca URL …`.
    pub(crate) fn revoke_token_with_certificates(&self, id: &str) {
        let mut args: Vec<String> = vec![
            "token".into(),
            "revoke".into(),
            id.into(),
            "--with-certificates".into(),
        ];
        args.extend(self.admin_args());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ward(&refs);
        assert!(out.status.success(), "token revoke: {}", out.stderr_text());
    }

    /// The current CRL (DER) from the plain-HTTP listener, by curl.
    pub(crate) fn fetch_crl(&self) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "20"])
            .arg(self.crl_url())
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "GET /v1/crl: {}", out.stderr_text());
        out.stdout
    }
}

impl Drop for CaServer {
    fn drop(&mut self) {
        self.kill();
    }
}
