//! Post-quantum authentication through the gate (issue 23): an ML-DSA-65
//! server chain, ML-DSA-65 client chains and classical (ECDSA P-256)
//! client chains on the same listener, whose client CA bundle holds both
//! roots. The clients are rustls with Ward's provider: Debian's OpenSSL
//! 3.0 (curl, Python `ssl`) cannot check an ML-DSA server signature.

use serde_json::Value;

use crate::clients::RustClient;
use crate::harness::{Gate, Pki, crt, key, mint, s, ward};
use crate::upstream::Echo;

/// `ward cert inspect HOST:PORT --format json` of the gate.
fn inspect(gate: &Gate) -> Value {
    let out = ward(&[
        "cert",
        "inspect",
        &gate.addr.to_string(),
        "--sni",
        "localhost",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "inspect: {}",
        crate::harness::OutputText::stderr_text(&out)
    );
    serde_json::from_str(&crate::harness::OutputText::stdout_text(&out)).unwrap()
}

#[test]
fn ml_dsa_and_classical_client_chains_share_a_tenant_behind_an_ml_dsa_server_chain() {
    let echo = Echo::start();
    let pq = Pki::init(&["--key-type", "ml-dsa-65"]);
    let classical = Pki::init(&[]);
    let stranger = Pki::init(&["--key-type", "ml-dsa-65"]);
    let server = mint(
        &pq,
        "server",
        "spiffe://example.org/gate",
        "server",
        &["--dns", "localhost", "--key-type", "ml-dsa-65"],
    );
    let pq_client = mint(
        &pq,
        "client",
        "spiffe://example.org/ns/pq",
        "pq-client",
        &["--key-type", "ml-dsa-65"],
    );
    let ec_client = mint(
        &classical,
        "client",
        "spiffe://example.org/ns/ec",
        "ec-client",
        &[],
    );
    let foreign = mint(
        &stranger,
        "client",
        "spiffe://example.org/ns/x",
        "x-client",
        &["--key-type", "ml-dsa-65"],
    );
    // One client CA bundle with both roots: both kinds of chain are let in.
    let bundle = pq.path("client-roots.pem");
    let roots = [pq.root(), classical.root()]
        .iter()
        .map(|r| std::fs::read_to_string(r).unwrap())
        .collect::<String>();
    std::fs::write(&bundle, roots).unwrap();
    let gate = Gate::flags(&[
        "--cert",
        &crt(&server),
        "--key",
        &key(&server),
        "--client-ca",
        &s(&bundle),
        "--upstream",
        &echo.url(),
        "--allow-spiffe-id",
        "spiffe://example.org/ns/*",
    ]);

    let pq_rust = RustClient::new(&pq.root(), &crt(&pq_client), &key(&pq_client));
    let r = pq_rust.get(gate.addr, "/pq").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // The classical client trusts the ML-DSA root for the server and
    // presents an ECDSA chain.
    let ec_rust = RustClient::new(&pq.root(), &crt(&ec_client), &key(&ec_client));
    let r = ec_rust.get(gate.addr, "/ec").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // A chain from an ML-DSA CA the tenant does not trust is refused.
    let foreign_rust = RustClient::new(&pq.root(), &crt(&foreign), &key(&foreign));
    assert!(foreign_rust.get(gate.addr, "/x").is_err());
    assert_eq!(echo.hits(), 2);

    // The gate presents the ML-DSA-65 chain (so its CertificateVerify is
    // ML-DSA-65) and `ward cert inspect` of the endpoint says so.
    let json = inspect(&gate);
    let chain = json["certificates"].as_array().unwrap();
    assert_eq!(chain[0]["key"]["type"], "ml-dsa", "{json}");
    assert_eq!(chain[0]["key"]["level"], 65, "{json}");
    assert_eq!(chain[0]["signature_algorithm"], "ML-DSA-65", "{json}");
    assert_eq!(json["tls"]["version"], "TLSv1_3", "{json}");

    // `ward check` of the endpoint with the ML-DSA client: a clean report.
    let out = ward(&[
        "check",
        &gate.addr.to_string(),
        "--sni",
        "localhost",
        "--roots",
        &s(&pq.root()),
        "--cert",
        &crt(&pq_client),
        "--key",
        &key(&pq_client),
        "--format",
        "json",
    ]);
    let text = crate::harness::OutputText::stdout_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["tls"]["version"], "TLSv1_3", "{report:#}");
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] != "error"),
        "{report:#}"
    );

    let audit = gate.finish();
    let accepted: Vec<&str> = audit
        .iter()
        .filter(|v| v["event"] == "handshake" && v["result"] == "accepted")
        .map(|v| v["spiffe_id"].as_str().unwrap_or_default())
        .collect();
    assert!(
        accepted.contains(&"spiffe://example.org/ns/pq"),
        "{audit:?}"
    );
    assert!(
        accepted.contains(&"spiffe://example.org/ns/ec"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|v| v["event"] == "handshake" && v["result"] != "accepted"),
        "{audit:?}"
    );
}
