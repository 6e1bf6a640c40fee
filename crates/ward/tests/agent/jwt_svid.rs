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

/// py-spiffe's `stream_jwt_bundles`: one JSON line of key ids per update.
const STREAM: &str = r#"
import json, sys, threading
from spiffe import TrustDomain, WorkloadApiClient
client = WorkloadApiClient("unix://" + sys.argv[1], default_timeout=30)
done = threading.Event()
seen = []
def on_success(bundles):
    kids = sorted(bundles.get_bundle_for_trust_domain(TrustDomain("example.org")).jwt_authorities.keys())
    print(json.dumps(kids), flush=True)
    seen.append(kids)
    if len(seen) >= 2:
        done.set()
def on_error(err):
    print(json.dumps("error: " + str(err)), flush=True)
    done.set()
handle = client.stream_jwt_bundles(on_success, on_error, retry_connect=False)
done.wait(90)
handle.cancel()
"#;

#[test]
fn a_new_ca_jwt_key_reaches_jwt_bundle_streams() {
    use std::io::{BufRead, BufReader};
    use ward_pki::jwt::JwtSigner;

    let ca = Ca::new(Backend::Sqlite).unwrap();
    let mut server = CaProcess::start(&ca, "127.0.0.1:0");
    let jwt_key = std::path::Path::new(ca.dir()).join("jwt.key");
    let kid = |path: &std::path::Path| {
        JwtSigner::from_pem(&std::fs::read_to_string(path).unwrap())
            .unwrap()
            .kid()
            .to_owned()
    };
    let first_kid = kid(&jwt_key);
    // A short certificate lifetime: the agent re-reads the bundle at each
    // rotation.
    let token = ca.token("spiffe://example.org/jwt-stream", &["--cert-ttl", "12s"]);
    let dir = AgentDir::new(&ca, "agent");
    let socket = dir.path("api.sock");
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &server.url(),
            "--ca-fingerprint",
            &openssl_fingerprint(&ca.root()),
            "--socket",
            &socket,
        ],
        &[("WARD_TOKEN", &token.secret)],
    );
    agent.wait_deliveries(1, DEADLINE);
    let mut py = Command::new("python3")
        .args(["-c", STREAM, &socket])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first, serde_json::json!([first_kid]));

    // The operator replaces the CA's JWT key: a restart makes a new one.
    let addr = server.addr.to_string();
    server.stop();
    std::fs::remove_file(&jwt_key).unwrap();
    let _server = CaProcess::start(&ca, &addr);
    let second_kid = kid(&jwt_key);
    assert_ne!(first_kid, second_kid);
    let next = lines
        .next()
        .unwrap_or_else(|| panic!("stream ended: {}", agent.output()))
        .unwrap();
    let next: Value = serde_json::from_str(&next).unwrap();
    assert_eq!(next, serde_json::json!([second_kid]), "{}", agent.output());
    let status = py.wait().unwrap();
    assert!(status.success());
    agent.terminate();
}

/// One Workload API or PyJWT operation, so a test can interleave them with
/// a key rotation:
///   fetch SOCKET AUD            -> {"token", "kid"}          (py-spiffe)
///   validate SOCKET TOKEN AUD   -> {"sub"} or {"error"}      (py-spiffe, by the agent)
///   pyjwt CA_URL ROOT TOKEN AUD -> {"sub", "kids"} or {"error", "kids"}
///                                  (PyJWT against GET /v1/bundle)
const OP: &str = r#"
import json, ssl, sys, urllib.request
import jwt
from spiffe import WorkloadApiClient
op = sys.argv[1]
if op == "fetch":
    c = WorkloadApiClient("unix://" + sys.argv[2], default_timeout=20)
    t = c.fetch_jwt_svid(audience={sys.argv[3]}).token
    print(json.dumps({"token": t, "kid": jwt.get_unverified_header(t)["kid"]}))
elif op == "validate":
    c = WorkloadApiClient("unix://" + sys.argv[2], default_timeout=20)
    try:
        print(json.dumps({"sub": str(c.validate_jwt_svid(sys.argv[3], sys.argv[4]).spiffe_id)}))
    except Exception as e:
        print(json.dumps({"error": str(e)}))
else:
    url, root, token, aud = sys.argv[2:6]
    ctx = ssl.create_default_context(cafile=root)
    with urllib.request.urlopen(url + "/v1/bundle", context=ctx, timeout=20) as r:
        doc = json.load(r)
    keys = {k["kid"]: k for k in doc["keys"] if k.get("use") == "jwt-svid"}
    kid = jwt.get_unverified_header(token)["kid"]
    try:
        key = jwt.PyJWK.from_dict(keys[kid]).key
        claims = jwt.decode(token, key, algorithms=["ES256"], audience=aud)
        print(json.dumps({"sub": claims["sub"], "kids": sorted(keys)}))
    except Exception as e:
        print(json.dumps({"error": repr(e), "kids": sorted(keys)}))
"#;

fn op(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .args(["-c", OP])
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python: {}", out.stderr_text());
    serde_json::from_str(&out.stdout_text()).unwrap()
}

#[test]
fn a_rotated_jwt_key_keeps_earlier_tokens_valid_and_signs_new_ones() {
    use ward_pki::jwt::JwtSigner;

    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let jwt_key = std::path::Path::new(ca.dir()).join("jwt.key");
    let kid_on_disk = || {
        JwtSigner::from_pem(&std::fs::read_to_string(&jwt_key).unwrap())
            .unwrap()
            .kid()
            .to_owned()
    };
    let first_kid = kid_on_disk();
    // A short certificate lifetime: the agent re-reads the bundle at each
    // rotation of its X.509-SVID.
    let token = ca.token("spiffe://example.org/jwt-rot", &["--cert-ttl", "12s"]);
    let dir = AgentDir::new(&ca, "agent");
    let socket = dir.path("api.sock");
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &server.url(),
            "--ca-fingerprint",
            &openssl_fingerprint(&ca.root()),
            "--socket",
            &socket,
        ],
        &[("WARD_TOKEN", &token.secret)],
    );
    agent.wait_deliveries(1, DEADLINE);
    let url = server.url();
    let root = ca.root();
    let root = root.to_str().unwrap();

    let before = op(&["fetch", &socket, "svc"]);
    assert_eq!(before["kid"], first_kid.as_str(), "{before}");
    let old_token = before["token"].as_str().unwrap().to_owned();

    let rotated = crate::common::ward_env(&["ca", "rotate", "jwt", "--dir", ca.dir()], &[]);
    assert!(rotated.status.success(), "{}", rotated.stderr_text());
    assert!(
        rotated.stdout_text().contains(&first_kid),
        "{}",
        rotated.stdout_text()
    );
    let second_kid = kid_on_disk();
    assert_ne!(first_kid, second_kid);
    let record = std::path::Path::new(ca.dir())
        .join("jwt-previous")
        .join(format!("{first_kid}.json"));
    let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert!(record["jwk"].get("d").is_none(), "no private key kept");

    // The running CA picks the new key up and publishes both.
    let mut kids = Value::Null;
    super::procs::wait_until("the CA to publish both JWT keys", DEADLINE, || {
        let v = op(&["pyjwt", &url, root, &old_token, "svc"]);
        kids = v["kids"].clone();
        v["kids"].as_array().unwrap().len() == 2
    });
    let mut want = vec![first_kid.clone(), second_kid.clone()];
    want.sort();
    assert_eq!(kids, serde_json::json!(want));
    // PyJWT still accepts the token signed before the rotation.
    let old_checked = op(&["pyjwt", &url, root, &old_token, "svc"]);
    assert_eq!(
        old_checked["sub"], "spiffe://example.org/jwt-rot",
        "{old_checked}"
    );

    // A token minted now carries the new kid (another audience: the agent
    // caches per audience set).
    let after = op(&["fetch", &socket, "svc2"]);
    assert_eq!(after["kid"], second_kid.as_str(), "{after}");
    let new_token = after["token"].as_str().unwrap().to_owned();
    let new_checked = op(&["pyjwt", &url, root, &new_token, "svc2"]);
    assert_eq!(
        new_checked["sub"], "spiffe://example.org/jwt-rot",
        "{new_checked}"
    );

    // Once the agent has the new bundle, it validates both.
    super::procs::wait_until("the agent to validate a new-key token", DEADLINE, || {
        op(&["validate", &socket, &new_token, "svc2"])["sub"] == "spiffe://example.org/jwt-rot"
    });
    let old_by_agent = op(&["validate", &socket, &old_token, "svc"]);
    assert_eq!(
        old_by_agent["sub"], "spiffe://example.org/jwt-rot",
        "{old_by_agent}"
    );

    // A restarted CA still publishes the retired key (read from disk).
    let addr = server.addr.to_string();
    let mut server = server;
    server.stop();
    let _server = CaProcess::start(&ca, &addr);
    let restarted = op(&["pyjwt", &url, root, &old_token, "svc"]);
    assert_eq!(
        restarted["sub"], "spiffe://example.org/jwt-rot",
        "{restarted}"
    );
    assert_eq!(restarted["kids"], serde_json::json!(want));
    agent.terminate();
}
