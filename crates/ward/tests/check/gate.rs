//! `ward check` against a real `ward gate serve` (mTLS mandatory) with
//! certificates from `ward cert create`: exit 0, and the gate accepted the
//! client certificate `ward check` presented.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::Pki;
use crate::{check, path_str};

/// The gate process, killed and reaped on drop.
struct Gate(Child);

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correctly_configured_ward_gate_passes() {
    let pki = Pki::init(&[]);
    let server = pki.issue(
        "server",
        "spiffe://example.org/gate",
        &["--dns", "localhost"],
    );
    let client = pki.issue("client", "spiffe://example.org/ci", &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["gate", "serve", "--listen", "127.0.0.1:0", "--cert"])
        .arg(server.with_extension("crt"))
        .arg("--key")
        .arg(server.with_extension("key"))
        .arg("--client-ca")
        .arg(pki.root())
        .args([
            "--upstream",
            "http://127.0.0.1:9",
            "--allow-spiffe-id",
            "spiffe://example.org/*",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let gate = Gate(child);
    // Ready when it prints the address it bound.
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("the gate prints its address").unwrap();
        if let Some((_, addr)) = line.split_once("listening on ") {
            break addr.trim().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let root = pki.root();
    let (code, report) = check(&[
        &addr,
        "--sni",
        "localhost",
        "--roots",
        path_str(&root),
        "--cert",
        path_str(&client.with_extension("crt")),
        "--key",
        path_str(&client.with_extension("key")),
        "--spiffe-id",
        "spiffe://example.org/gate",
    ])
    .await;
    assert_eq!(code, 0, "{report:#}");
    let noisy: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "notice")
        .collect();
    assert!(noisy.is_empty(), "{report:#}");
    assert_eq!(report["tls"]["version"], "TLSv1_3");
    assert!(report["tls"]["handshake_error"].is_null(), "{report:#}");
    drop(gate);
}
