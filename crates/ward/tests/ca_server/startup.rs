//! What `ward ca serve` checks before it serves (issue 25 items 4 and 5)
//! and the API served with an operator's certificate (issue 14 item 7):
//!
//! - a swapped `root.crt`, an intermediate key that is not the
//!   intermediate's, keys readable by others and a world-writable CA
//!   directory are refused with an error naming the file (unless
//!   `--allow-insecure-permissions`, for the last two);
//! - `--tls-cert/--tls-key` with a certificate from a separate CA made by
//!   openssl: curl and the seed's Node.js function code, trusting only that
//!   CA, get certificates from the seed route; admin mTLS still works; a
//!   Kubernetes-style `..data` swap of the files is served by the next
//!   handshake (openssl s_client) without a restart.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Backend, Ca, OutputText, Server, curl, openssl, x509};

on_both_backends!(the_api_is_served_with_an_external_certificate_reloaded_on_a_data_swap);

/// Runs `ward ca serve` on `ca` with `extra` flags, expecting it to refuse
/// to start; returns what it said.
fn refused(ca: &Ca, extra: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["ca", "serve", "--dir", ca.dir(), "--listen", "127.0.0.1:0"])
        .args(ca.db_args())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ward ca serve starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("ward ca serve started anyway: {}", out.stderr_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    out.stderr_text()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A Ward CA's server answers `/healthz`.
fn healthy(ca: &Ca, extra: &[&str]) {
    let server = Server::start_with(ca, extra);
    let (status, _) = curl(&ca.root(), &[&server.url("/healthz")]);
    assert_eq!(status, 200);
}

#[test]
fn a_swapped_root_or_a_foreign_key_is_refused_naming_the_file() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let other = Ca::new(Backend::Sqlite).unwrap();
    let shown = |name: &str| ca.file(name).display().to_string();
    let not_issued = |c: &str, i: &str| format!("{} is not issued by {}", shown(c), shown(i));
    let not_key = |k: &str, c: &str| format!("{} is not the private key of {}", shown(k), shown(c));
    // Each file of ours replaced by the other CA's, and what the error says.
    let cases = [
        ("root.crt", not_issued("intermediate.crt", "root.crt")),
        ("intermediate.key", shown("intermediate.key")),
        ("root.key", not_key("root.key", "root.crt")),
        ("admin.key", not_key("admin.key", "admin.crt")),
        ("root-ocsp.crt", not_issued("root-ocsp.crt", "root.crt")),
    ];
    for (name, want) in cases {
        let ours = std::fs::read(ca.file(name)).unwrap();
        std::fs::write(ca.file(name), std::fs::read(other.file(name)).unwrap()).unwrap();
        let err = refused(&ca, &[]);
        assert!(
            err.contains(&want),
            "{name} swapped: want {want:?} in {err}"
        );
        std::fs::write(ca.file(name), ours).unwrap();
    }
    healthy(&ca, &[]);
}

#[test]
fn keys_readable_by_others_and_a_writable_directory_are_refused_unless_allowed() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    // What `ward ca init` wrote passes as is.
    healthy(&ca, &[]);

    chmod(&ca.file("intermediate.key"), 0o644);
    let err = refused(&ca, &[]);
    assert!(
        err.contains(&ca.file("intermediate.key").display().to_string())
            && err.contains("mode 0644")
            && err.contains("--allow-insecure-permissions"),
        "{err}"
    );
    healthy(&ca, &["--allow-insecure-permissions"]);
    chmod(&ca.file("intermediate.key"), 0o600);

    chmod(&ca.file("root-ocsp.key"), 0o666);
    let err = refused(&ca, &[]);
    assert!(
        err.contains(&ca.file("root-ocsp.key").display().to_string()),
        "{err}"
    );
    chmod(&ca.file("root-ocsp.key"), 0o600);

    chmod(Path::new(ca.dir()), 0o777);
    let err = refused(&ca, &[]);
    assert!(
        err.contains(&format!("the directory {} is writable", ca.dir())) && err.contains("0777"),
        "{err}"
    );
    healthy(&ca, &["--allow-insecure-permissions"]);
    chmod(Path::new(ca.dir()), 0o700);
    healthy(&ca, &[]);
}

/// A separate test CA (openssl), and server certificates it signs.
struct ExternalPki {
    dir: PathBuf,
    ca_crt: PathBuf,
    ca_key: PathBuf,
}

impl ExternalPki {
    fn new(dir: PathBuf) -> ExternalPki {
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_crt, ca_key) = (dir.join("ext-ca.crt"), dir.join("ext-ca.key"));
        let (ok, _, err) = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=External Test CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            ca_key.to_str().unwrap(),
            "-out",
            ca_crt.to_str().unwrap(),
        ]);
        assert!(ok, "openssl req -x509: {err}");
        ExternalPki {
            dir,
            ca_crt,
            ca_key,
        }
    }

    /// A server certificate for localhost/127.0.0.1 in `into` as
    /// `tls.crt`/`tls.key` (key 0600); returns its serial as openssl prints it.
    fn server(&self, into: &Path) -> String {
        std::fs::create_dir_all(into).unwrap();
        let (crt, key, csr) = (
            into.join("tls.crt"),
            into.join("tls.key"),
            into.join("tls.csr"),
        );
        let ext = self.dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
             basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        let (ok, _, err) = openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]);
        assert!(ok, "openssl req: {err}");
        chmod(&key, 0o600);
        let (ok, _, err) = openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.ca_crt.to_str().unwrap(),
            "-CAkey",
            self.ca_key.to_str().unwrap(),
            "-days",
            "1",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ]);
        assert!(ok, "openssl x509 -req: {err}");
        x509(&crt, &["-serial"]).trim().to_owned()
    }
}

/// The serial of the certificate a fresh handshake gets (openssl s_client,
/// verifying against the external CA).
fn served_serial(server: &Server, ca_crt: &Path) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &server.addr.to_string()])
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca_crt)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let pem = out.stdout_text();
    assert!(
        pem.contains("BEGIN CERTIFICATE"),
        "s_client: {}{}",
        pem,
        out.stderr_text()
    );
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    child
        .wait_with_output()
        .unwrap()
        .stdout_text()
        .trim()
        .to_owned()
}

/// The seed's function code, reduced to the issuance: Node's built-in
/// `https` (system store plus NODE_EXTRA_CA_CERTS) posts the bootstrap token.
const NODE_ISSUE: &str = r#"
const https = require('https');
const payload = JSON.stringify({ bootstrap_token: process.env.BOOTSTRAP_TOKEN });
const req = https.request(`${process.env.PHOENIX_CA_URL}/internal/pki/issue-certificate`, {
  method: 'POST',
  headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
  timeout: 10000,
}, (res) => {
  let data = '';
  res.setEncoding('utf8');
  res.on('data', (c) => { data += c; });
  res.on('end', () => {
    const { certificate, private_key, ca_chain } = JSON.parse(data);
    const agent = new https.Agent({ cert: certificate, key: private_key, ca: ca_chain });
    console.log(JSON.stringify({ status: res.statusCode, certificate, agent: !!agent }));
  });
});
req.on('error', (e) => { console.error(e.message); process.exit(3); });
req.write(payload);
req.end();
"#;

/// Runs [`NODE_ISSUE`] against `url` with `token`, trusting `extra_ca`.
fn node_issue(url: &str, token: &str, extra_ca: &Path) -> Result<Value, String> {
    let out = Command::new("node")
        .args(["-e", NODE_ISSUE])
        .env("PHOENIX_CA_URL", url)
        .env("BOOTSTRAP_TOKEN", token)
        .env("NODE_EXTRA_CA_CERTS", extra_ca)
        .output()
        .expect("node runs");
    if !out.status.success() {
        return Err(out.stderr_text());
    }
    Ok(serde_json::from_str(&out.stdout_text()).unwrap())
}

async fn the_api_is_served_with_an_external_certificate_reloaded_on_a_data_swap(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let ext = ExternalPki::new(ca.scratch("external"));
    // A Kubernetes Secret volume: ..TIMESTAMP/ with the files, ..data
    // pointing at it, tls.crt and tls.key as symlinks through ..data.
    let mount = ca.scratch("secret");
    std::fs::create_dir(&mount).unwrap();
    let first = ext.server(&mount.join("..2026_12_07_01"));
    symlink("..2026_12_07_01", mount.join("..data")).unwrap();
    symlink("..data/tls.crt", mount.join("tls.crt")).unwrap();
    symlink("..data/tls.key", mount.join("tls.key")).unwrap();
    let (crt, key) = (mount.join("tls.crt"), mount.join("tls.key"));
    let server = Server::start_with(
        &ca,
        &[
            "--tls-cert",
            crt.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    assert_eq!(served_serial(&server, &ext.ca_crt), first);

    // curl, trusting only the external CA, gets a certificate from the
    // seed route; trusting only Ward's root it cannot connect at all.
    let token = ca.token("spiffe://example.org/fn/curl", &[]);
    let body = format!("{{\"bootstrap_token\":\"{}\"}}", token.secret);
    let (status, answer) = curl(
        &ext.ca_crt,
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            &format!("{url}/internal/pki/issue-certificate"),
        ],
    );
    assert_eq!(status, 200, "{answer}");
    let json: Value = serde_json::from_str(&answer).unwrap();
    assert!(
        json["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let ward_only = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca.root())
        .arg(format!("{url}/healthz"))
        .output()
        .unwrap();
    assert!(
        !ward_only.status.success(),
        "Ward's root verified the external certificate"
    );

    // The seed's Node.js code, with NODE_EXTRA_CA_CERTS = the external CA.
    let token = ca.token("spiffe://example.org/fn/node", &[]);
    let answer = node_issue(&url, &token.secret, &ext.ca_crt).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert!(
        answer["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    // Client certificates are verified as before: admin mTLS.
    let out = crate::harness::ward(&[
        "token",
        "list",
        "--ca",
        &url,
        "--admin-cert",
        ca.file("admin.crt").to_str().unwrap(),
        "--admin-key",
        ca.file("admin.key").to_str().unwrap(),
        "--ca-bundle",
        ext.ca_crt.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "admin over the external certificate: {}",
        out.stderr_text()
    );

    // kubelet's update: a new timestamped directory, ..data swapped by rename.
    let second = ext.server(&mount.join("..2026_12_07_02"));
    assert_ne!(first, second);
    symlink("..2026_12_07_02", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    let start = Instant::now();
    loop {
        let serial = served_serial(&server, &ext.ca_crt);
        if serial == second {
            break;
        }
        assert_eq!(serial, first);
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "still serving {first} after a ..data swap: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("..data swap served after {:?}", start.elapsed());
    let token = ca.token("spiffe://example.org/fn/node2", &[]);
    let answer = node_issue(&url, &token.secret, &ext.ca_crt).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
}
