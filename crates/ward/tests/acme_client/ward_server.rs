//! The gate's ACME client against Ward's own ACME server (`ward ca serve`
//! with `[acme]`, docs/acme.md): external account binding and the
//! `shortlived` profile, renewal information (RFC 9773) polled, and a
//! tenant without EAB refused, counted and retried.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::acme_client::gate::{
    AcmeServer, AcmeTenant, curl, orders, stop, wait_for, wait_orders, write_config_for,
};
use crate::acme_client::pebble::{ChallTestSrv, free_port, have};
use crate::common::{OutputText, Pki, ward};
use crate::harness::Gate;
use crate::pki::mint;
use crate::upstream::Echo;

/// `ward ca serve` on 127.0.0.1:0, killed when dropped.
struct CaServer {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl CaServer {
    fn start(pki: &Pki) -> CaServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args([
                "ca",
                "serve",
                "--dir",
                pki.ca_dir(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward ca serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let buf = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("ward ca: listening on https://") {
                    let _ = tx.send(a.trim().to_owned());
                }
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ward ca serve never got ready: {}", stderr.lock().unwrap());
        };
        CaServer {
            child,
            addr: addr.parse().unwrap(),
            stderr,
        }
    }
}

impl Drop for CaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ward acme eab create`: (key id, HMAC key).
fn eab(pki: &Pki, provisioner: &str) -> (String, String) {
    let out = ward(&[
        "acme",
        "eab",
        "create",
        "--dir",
        pki.ca_dir(),
        "--provisioner",
        provisioner,
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    (field("key_id"), field("hmac_key"))
}

/// The leaf's lifetime in seconds, as openssl reads it from `pem`.
fn lifetime(pem: &std::path::Path) -> i64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-startdate", "-enddate", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    let text = out.stdout_text();
    let date = |key: &str| {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .to_owned();
        let out = Command::new("date")
            .args(["-u", "-d", &v, "+%s"])
            .output()
            .unwrap();
        out.stdout_text().trim().parse::<i64>().unwrap()
    };
    date("notAfter=") - date("notBefore=")
}

#[test]
fn ward_acme_server_with_eab_and_the_shortlived_profile() {
    if !have("pebble-challtestsrv") || !have("curl") || !have("openssl") {
        return;
    }
    let dns = ChallTestSrv::start();
    let gate_port = free_port();
    let pki = Pki::init(&[]);
    let ca_toml = pki.path("ca/ca.toml");
    let mut text = std::fs::read_to_string(&ca_toml).unwrap();
    text.push_str(&format!(
        r#"
[acme]
http01_port = {http}
tlsalpn01_port = {gate_port}
dns_resolver = "127.0.0.1:{dns}"

[acme.provisioners.eab]
allow_dns = ["*.acme.test"]
eab_required = true
profiles = {{ default = "24h", shortlived = "6h" }}
"#,
        http = free_port(),
        dns = dns.dns,
    ));
    std::fs::write(&ca_toml, text).unwrap();
    let (kid, hmac) = eab(&pki, "eab");
    let hmac_file = pki.path("eab.hmac");
    std::fs::write(&hmac_file, format!("{hmac}\n")).unwrap();
    let server = CaServer::start(&pki);
    let echo = Echo::start();
    let work = tempfile::tempdir().unwrap();
    let endpoints = AcmeServer {
        directory: format!("https://{}/acme/eab/directory", server.addr),
        ca_bundle: pki.root(),
        client_ca: pki.root(),
    };
    let tenants = [
        AcmeTenant {
            name: "api",
            domain: "api.acme.test",
            challenge: "tls-alpn-01",
            extra: format!(
                "eab_kid = \"{kid}\"\neab_hmac_file = \"{}\"\nprofile = \"shortlived\"",
                hmac_file.display()
            ),
        },
        AcmeTenant {
            name: "noeab",
            domain: "noeab.acme.test",
            challenge: "tls-alpn-01",
            extra: String::new(),
        },
    ];
    let config = write_config_for(work.path(), gate_port, &endpoints, &echo, &tenants);
    let gate = Gate::config(&config);
    wait_orders(&gate, "api", "success", 1.0);
    let client = mint(&pki, "client", "spiffe://example.org/ns/app", "client", &[]);
    let (code, status, body, err) =
        curl(&pki.root(), Some(&client), "api.acme.test", gate_port, "/w");
    assert_eq!(
        (code, status),
        (0, 200),
        "{err}\n{}\n{}",
        gate.stderr(),
        server.stderr.lock().unwrap()
    );
    assert!(body.contains("/w"), "{body}");
    // The shortlived profile: 6 h, not the default 24 h.
    let life = lifetime(&work.path().join("state-api/cert.pem"));
    assert!(
        (6 * 3600 - 120..=6 * 3600 + 120).contains(&life),
        "lifetime {life} s"
    );
    // The tenant without EAB is refused by the server, counted, retried.
    wait_orders(&gate, "noeab", "failure", 2.0);
    assert_eq!(orders(&gate.metrics(), "noeab", "success"), 0.0);
    assert!(
        gate.stderr().to_ascii_lowercase().contains("external"),
        "{}",
        gate.stderr()
    );
    // The renewal is planned inside the certificate's life (the ARI
    // window or two thirds of 6 h), not past it.
    let next = gate.metrics().sum(
        "ward_gate_acme_next_renewal_timestamp_seconds",
        &[("tenant", "api")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(
        next > now && next < now + 6.0 * 3600.0,
        "next renewal {next}, now {now}"
    );
    stop(gate);
}
