//! Issue 14 item 5: the gate's own `[identity]` renews into the live TLS
//! configuration without reading the configuration file, so a renewal
//! lands even while that file is mid-edit or invalid. openssl s_client
//! reads the served certificate.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::procs::{CaProcess, DEADLINE, openssl_fingerprint, wait_until};
use crate::harness::{Backend, Ca};

/// A `ward gate serve --config FILE`, killed when dropped.
struct GateProcess {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl GateProcess {
    fn start(config: &std::path::Path) -> (GateProcess, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["gate", "serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ward gate serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let into = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut buf = into.lock().unwrap();
                buf.push_str(&line);
                buf.push('\n');
            }
        });
        let gate = GateProcess { child, stderr };
        let mut addr = None;
        wait_until("the gate to listen", DEADLINE, || {
            addr = gate
                .stderr()
                .lines()
                .find_map(|l| l.strip_prefix("ward gate: listening on "))
                .map(str::to_owned);
            addr.is_some()
        });
        (gate, addr.unwrap())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The serial of the certificate the gate serves, as openssl s_client
/// receives it (lowercase hex, no leading zeros); None when no handshake.
fn served_serial(addr: &str) -> Option<String> {
    let script = format!(
        "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null \
         | openssl x509 -noout -serial"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (_, hex) = text.trim().split_once('=')?;
    Some(hex.to_ascii_lowercase().trim_start_matches('0').to_owned())
}

#[test]
fn the_gates_identity_renews_while_its_configuration_file_is_invalid() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let token = ca.token("spiffe://example.org/gate", &["--cert-ttl", "12s"]);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token.secret).unwrap();
    let config = dir.path().join("gate.toml");
    let text = format!(
        "audit_log = \"off\"\n\
         [listen]\naddress = \"127.0.0.1:0\"\n\
         [identity]\nca = \"{ca}\"\nca_fingerprint = \"{fp}\"\ntoken_file = \"{token}\"\n\
         [[tenants]]\nname = \"own\"\ndefault = true\n\
         [[tenants.routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\n\
         [tenants.routes.allow]\nspiffe_ids = [\"spiffe://example.org/client\"]\n",
        ca = server.url(),
        fp = openssl_fingerprint(&ca.root()),
        token = token_file.display(),
    );
    std::fs::write(&config, text).unwrap();
    let (gate, addr) = GateProcess::start(&config);
    let first = served_serial(&addr).expect("the gate serves its identity");

    // Mid-edit: the file no longer parses. The watcher's reload is refused…
    std::fs::write(&config, "[[tenants]\nname = \"own\n").unwrap();
    wait_until("the invalid file to be rejected", DEADLINE, || {
        gate.stderr().contains("reload rejected")
    });
    // …and the renewal (at two thirds of 12 s) is served all the same.
    let until = Instant::now() + Duration::from_secs(30);
    let renewed = loop {
        match served_serial(&addr) {
            Some(s) if s != first => break s,
            _ => {}
        }
        assert!(
            Instant::now() < until,
            "the renewed certificate was never served:\n{}",
            gate.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = gate.stderr();
    assert!(log.contains("renewed identity in service"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("identity renewed") && l.contains(&renewed)),
        "the served serial {renewed} is the renewed one:\n{log}"
    );
    drop(server);
}
