//! JWT-SVIDs through the agent's Workload API (issue 24): py-spiffe fetches
//! and validates them and the JWT bundles, PyJWT verifies them against the
//! JWKS the CA publishes, and tokens that are expired, for another audience
//! or signed by another key are refused.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;

use super::procs::{AgentDir, AgentProcess, CaProcess, DEADLINE, openssl_fingerprint};
use crate::harness::{Backend, Ca, OutputText};

const CLIENT: &str = include_str!("jwt_svid.py");

#[test]
fn py_spiffe_and_pyjwt_fetch_validate_and_refuse_jwt_svids() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let jwt_key = std::path::Path::new(ca.dir()).join("jwt.key");
    let mode = std::fs::metadata(&jwt_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the JWT signing key is private");
    let token = ca.token("spiffe://example.org/py-jwt", &["--cert-ttl", "1h"]);
    let dir = AgentDir::new(&ca, "agent");
    let socket = dir.path("api.sock");
    let fingerprint = openssl_fingerprint(&ca.root());
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &server.url(),
            "--ca-fingerprint",
            &fingerprint,
            "--socket",
            &socket,
        ],
        &[("WARD_TOKEN", &token.secret)],
    );
    agent.wait_deliveries(1, DEADLINE);
    let root = ca.root();
    let out = Command::new("python3")
        .args(["-c", CLIENT, &socket, &server.url()])
        .arg(&root)
        .arg(&jwt_key)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python: {}\nagent: {}",
        out.stderr_text(),
        agent.output()
    );
    let py: Value = serde_json::from_str(&out.stdout_text()).unwrap();

    let fetch = &py["fetch"];
    assert_eq!(fetch["spiffe_id"], "spiffe://example.org/py-jwt", "{py}");
    assert_eq!(
        fetch["audience"],
        serde_json::json!(["svc-a", "svc-b"]),
        "{py}"
    );
    let ttl = fetch["ttl"].as_i64().unwrap();
    assert!((250..=300).contains(&ttl), "default lifetime 5 min: {ttl}");
    assert_eq!(
        fetch["cached"], true,
        "the agent hands out its cached token"
    );
    assert_eq!(py["header"]["alg"], "ES256", "{py}");
    let kid = py["header"]["kid"].as_str().unwrap();
    assert_eq!(py["bundle_kids"], serde_json::json!([kid]), "{py}");
    assert_eq!(py["offline_valid"], "spiffe://example.org/py-jwt", "{py}");
    assert_eq!(py["api_valid"], "spiffe://example.org/py-jwt", "{py}");
    assert_eq!(py["control"], Value::Null, "{py}");
    let refused = &py["refused"];
    for (case, why) in [
        ("wrong_aud_api", "audience"),
        ("expired", "expired"),
        ("wrong_key", "bad signature"),
        ("garbage", "invalid JWT-SVID"),
    ] {
        let text = refused[case]
            .as_str()
            .unwrap_or_else(|| panic!("{case} accepted: {py}"));
        assert!(text.contains(why), "{case}: {text}");
    }
    assert_eq!(
        py["bundle_doc"]["uses"],
        serde_json::json!(["jwt-svid", "x509-svid"]),
        "{py}"
    );
    assert!(py["bundle_doc"]["sequence"].as_u64().unwrap() > 0, "{py}");
    assert_eq!(py["pyjwt"]["sub"], "spiffe://example.org/py-jwt", "{py}");
    assert!(py["pyjwt_wrong_aud"].is_string(), "{py}");
    assert_eq!(py["x5c_is_root"], serde_json::json!([true]), "{py}");
    assert_eq!(py["stream"], serde_json::json!([[kid]]), "{py}");
    agent.terminate();
}
