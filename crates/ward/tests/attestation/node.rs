//! Several workloads on one agent socket, told apart by the kernel.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::{Backend, Ca, OutputText};
use crate::procs::{AgentProcess, CaProcess, DEADLINE, openssl_fingerprint, wait_until};

const CLIENT: &str = include_str!("client.py");
const NODE: &str = "spiffe://example.org/node/n1";

/// py-spiffe, connecting as `uid`.
fn fetch_as(socket: &str, uid: u32) -> Value {
    let out = Command::new("python3")
        .args(["-c", CLIENT, socket, &uid.to_string()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python: {}", out.stderr_text());
    let v: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(v["uid"], uid, "{v}");
    v
}

fn entry(ca: &Ca, args: &[&str]) -> std::process::Output {
    let mut all = vec!["entry", "create"];
    all.extend_from_slice(args);
    ca.ward(&all)
}

fn must_entry(ca: &Ca, id: &str, selectors: &[&str], node: &str) -> String {
    let mut args = vec!["--spiffe-id", id, "--node", node];
    for s in selectors {
        args.extend(["--selector", s]);
    }
    let out = entry(ca, &args);
    assert!(out.status.success(), "entry create: {}", out.stderr_text());
    out.stdout_text().trim().to_owned()
}

/// SHA-256 of a file, by coreutils.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    out.stdout_text()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The executable python3 really runs (what /proc/PID/exe names).
fn python_exe() -> std::path::PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os,sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .unwrap();
    out.stdout_text().trim().into()
}

/// How many SVIDs for `id` the agent logged as obtained.
fn obtained(agent: &AgentProcess, id: &str) -> usize {
    let needle = format!("spiffe_id={id} ");
    agent
        .output()
        .lines()
        .filter(|l| l.contains("workload SVID obtained") && l.contains(&needle))
        .count()
}

/// A directory every user may traverse, for the socket.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn start_agent(
    server: &CaProcess,
    ca: &Ca,
    socket: &str,
    out: &str,
    extra: &[&str],
) -> AgentProcess {
    start_agent_ttl(server, ca, socket, out, extra, "1h")
}

fn start_agent_ttl(
    server: &CaProcess,
    ca: &Ca,
    socket: &str,
    out: &str,
    extra: &[&str],
    ttl: &str,
) -> AgentProcess {
    let token = ca.token(NODE, &["--cert-ttl", ttl]);
    let fingerprint = openssl_fingerprint(&ca.root());
    let url = server.url();
    let mut args = vec![
        "--ca",
        &url,
        "--ca-fingerprint",
        &fingerprint,
        "--socket",
        socket,
        "--out-dir",
        out,
    ];
    args.extend_from_slice(extra);
    let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut agent = AgentProcess::start(&refs, &[("WARD_TOKEN", &token.secret)]);
    agent.wait_deliveries(1, DEADLINE);
    agent
}

#[test]
fn workloads_under_different_uids_get_their_own_svids_and_strangers_nothing() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let python = sha256sum(&python_exe());
    let shell = sha256sum(Path::new("/bin/sh"));
    assert_ne!(python, shell);
    must_entry(&ca, "spiffe://example.org/web", &["unix:uid:1001"], NODE);
    must_entry(
        &ca,
        "spiffe://example.org/db",
        &["unix:uid:1002", "unix:gid:1002"],
        NODE,
    );
    let sha_python = format!("unix:sha256:{python}");
    let sha_shell = format!("unix:sha256:{shell}");
    must_entry(
        &ca,
        "spiffe://example.org/hashed",
        &["unix:uid:1003", &sha_python],
        NODE,
    );
    must_entry(
        &ca,
        "spiffe://example.org/not-python",
        &["unix:uid:1004", &sha_shell],
        NODE,
    );
    // Registered for another node: this agent never serves it.
    must_entry(
        &ca,
        "spiffe://example.org/elsewhere",
        &["unix:uid:1005"],
        "spiffe://example.org/node/n2",
    );

    let dir = open_dir();
    let socket = dir.path().join("api.sock").to_str().unwrap().to_owned();
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut agent = start_agent(&server, &ca, &socket, &out, &["--entries-from-ca"]);
    wait_until("the workload SVIDs", DEADLINE, || {
        agent.count("workload SVID obtained") >= 4
    });
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "an attested socket is open to every user");

    let web = fetch_as(&socket, 1001);
    assert_eq!(
        web["ids"],
        serde_json::json!(["spiffe://example.org/web"]),
        "{web}"
    );
    let db = fetch_as(&socket, 1002);
    assert_eq!(
        db["ids"],
        serde_json::json!(["spiffe://example.org/db"]),
        "{db}"
    );
    assert_ne!(web["serials"], db["serials"]);
    let hashed = fetch_as(&socket, 1003);
    assert_eq!(
        hashed["ids"],
        serde_json::json!(["spiffe://example.org/hashed"]),
        "{hashed}"
    );
    for stranger in [1004, 1005, 1006] {
        let v = fetch_as(&socket, stranger);
        assert!(v["ids"].is_null(), "uid {stranger} got {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("no registration entry matches")
                || v["code"] == "PERMISSION_DENIED",
            "uid {stranger}: {v}"
        );
    }
    // The node's own identity is not handed out on an attested socket.
    let root = fetch_as(&socket, 0);
    assert!(root["ids"].is_null(), "{root}");
    assert!(
        agent.count("workload API caller matches no entry") >= 4,
        "{}",
        agent.output()
    );
    agent.terminate();
}

/// curl POSTing `body` to the CA with the agent's own certificate.
fn curl_as_node(
    server: &CaProcess,
    ca: &Ca,
    out: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(["--cacert", ca.root().to_str().unwrap()])
        .args([
            "--cert",
            &format!("{out}/svid.pem"),
            "--key",
            &format!("{out}/svid_key.pem"),
        ]);
    if let Some(body) = body {
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let done = cmd.arg(format!("{}{path}", server.url())).output().unwrap();
    assert!(done.status.success(), "curl: {}", done.stderr_text());
    let text = done.stdout_text();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(json).unwrap_or(Value::Null),
    )
}

/// A CSR made by openssl for a fresh P-256 key.
fn openssl_csr(dir: &Path) -> String {
    let key = dir.join("w.key");
    let csr = dir.join("w.csr");
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-subj",
            "/",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {}", out.stderr_text());
    std::fs::read_to_string(csr).unwrap()
}

#[test]
fn the_ca_signs_only_ids_registered_for_the_asking_node() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    must_entry(&ca, "spiffe://example.org/web", &["unix:uid:1001"], NODE);
    must_entry(
        &ca,
        "spiffe://example.org/other",
        &["unix:uid:1001"],
        "spiffe://example.org/node/n2",
    );
    let dir = open_dir();
    // A local registrations file naming an ID the CA never registered for
    // this node: the agent asks, the CA refuses, the caller gets nothing.
    let file = dir.path().join("registrations.toml");
    std::fs::write(
        &file,
        "[[entry]]\nspiffe_id = \"spiffe://example.org/web\"\nselectors = [\"unix:uid:1001\"]\n\n\
         [[entry]]\nspiffe_id = \"spiffe://example.org/other\"\nselectors = [\"unix:uid:1002\"]\n",
    )
    .unwrap();
    let socket = dir.path().join("api.sock").to_str().unwrap().to_owned();
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut agent = start_agent(
        &server,
        &ca,
        &socket,
        &out,
        &["--registrations", file.to_str().unwrap()],
    );
    wait_until("the refusal", DEADLINE, || {
        agent.count("cannot obtain the workload SVID") >= 1
            && agent.count("workload SVID obtained") >= 1
    });
    assert!(
        agent.output().contains("not registered for node"),
        "{}",
        agent.output()
    );
    let web = fetch_as(&socket, 1001);
    assert_eq!(
        web["ids"],
        serde_json::json!(["spiffe://example.org/web"]),
        "{web}"
    );
    let other = fetch_as(&socket, 1002);
    assert!(other["ids"].is_null(), "{other}");
    assert_eq!(other["code"], "UNAVAILABLE", "{other}");

    // The same, asked directly with the agent's certificate.
    let csr = openssl_csr(dir.path());
    let ask = |id: &str| {
        let body = serde_json::json!({ "spiffe_id": id, "csr": csr }).to_string();
        curl_as_node(&server, &ca, &out, "/v1/node/sign", Some(&body))
    };
    let (status, body) = ask("spiffe://example.org/other");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden", "{body}");
    let (status, body) = ask("spiffe://example.org/never");
    assert_eq!(status, 403, "{body}");
    let (status, body) = ask("spiffe://other.org/web");
    assert_eq!(status, 403, "{body}");
    let (status, body) = ask("not an id");
    assert_eq!(status, 400, "{body}");
    let (status, body) = ask("spiffe://example.org/web");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["spiffe_id"], "spiffe://example.org/web");
    // openssl reads the SVID: the URI SAN is the entry's ID.
    let pem = dir.path().join("issued.pem");
    std::fs::write(&pem, body["certificate"].as_str().unwrap()).unwrap();
    let text = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            pem.to_str().unwrap(),
        ])
        .output()
        .unwrap()
        .stdout_text();
    assert!(text.contains("URI:spiffe://example.org/web"), "{text}");
    // The admin list records it as issued to a holder of a certificate.
    let listed = ca.ward(&["entry", "list", "--format", "json"]);
    assert!(listed.status.success(), "{}", listed.stderr_text());
    let (status, entries) = curl_as_node(&server, &ca, &out, "/v1/node/entries", None);
    assert_eq!(status, 200);
    let ids: Vec<&str> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["spiffe_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["spiffe://example.org/web"],
        "the node sees its entries only"
    );
    // Without a client certificate: 401.
    let anon = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca.root().to_str().unwrap(),
        ])
        .arg(format!("{}/v1/node/entries", server.url()))
        .output()
        .unwrap();
    assert_eq!(anon.stdout_text(), "401");
    agent.terminate();
}

#[test]
fn entries_are_validated_listed_and_deleted_sqlite() {
    entries_are_validated_listed_and_deleted(Backend::Sqlite);
}

#[test]
fn entries_are_validated_listed_and_deleted_postgres() {
    entries_are_validated_listed_and_deleted(Backend::Postgres);
}

fn entries_are_validated_listed_and_deleted(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    // Creates the PostgreSQL store (as an operator's first start does).
    let _server = ca.serve();
    let refused = |args: &[&str], needle: &str| {
        let out = entry(&ca, args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            out.stderr_text().contains(needle),
            "{args:?}: {}",
            out.stderr_text()
        );
    };
    let base = ["--spiffe-id", "spiffe://example.org/w", "--node", NODE];
    for (sel, needle) in [
        ("unix:uid:-1", "decimal"),
        ("unix:uid:4294967295", "out of range"),
        ("unix:sha256:abc", "64 hex"),
        ("unix:path:bin/python", "absolute"),
        ("k8s:ns:default", "only unix"),
    ] {
        let mut args = base.to_vec();
        args.extend(["--selector", sel]);
        refused(&args, needle);
    }
    refused(
        &[
            "--spiffe-id",
            "spiffe://example.org/ward/admin",
            "--node",
            NODE,
            "--selector",
            "unix:uid:1",
        ],
        "reserved",
    );
    refused(
        &[
            "--spiffe-id",
            "spiffe://elsewhere.org/w",
            "--node",
            NODE,
            "--selector",
            "unix:uid:1",
        ],
        "trust domain",
    );
    refused(
        &[
            "--spiffe-id",
            "spiffe://example.org/w",
            "--node",
            NODE,
            "--selector",
            "unix:uid:1",
            "--selector",
            "unix:uid:2",
        ],
        "one selector of each kind",
    );
    let many: Vec<String> = (0..17).map(|i| format!("unix:path:/bin/p{i}")).collect();
    let mut args = base.to_vec();
    for s in &many {
        args.extend(["--selector", s]);
    }
    refused(&args, "at most 16");
    let id = must_entry(
        &ca,
        "spiffe://example.org/w",
        &[
            "unix:uid:1000",
            "unix:sha256:ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789",
        ],
        NODE,
    );
    assert!(id.starts_with("ent_") && id.len() == 20, "{id}");
    let ok = entry(
        &ca,
        &[
            "--spiffe-id",
            "spiffe://example.org/ward/x",
            "--node",
            NODE,
            "--selector",
            "unix:uid:1",
            "--allow-reserved",
        ],
    );
    assert!(ok.status.success(), "{}", ok.stderr_text());
    let listed = ca.ward(&["entry", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(&listed.stdout_text()).unwrap();
    let first = &v["entries"][0];
    assert_eq!(first["id"], id.as_str());
    assert_eq!(
        first["selectors"],
        serde_json::json!([
            "unix:uid:1000",
            "unix:sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
        ]),
        "canonical: sorted by kind, digest lowercased"
    );
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    let del = ca.ward(&["entry", "delete", &id]);
    assert!(del.status.success(), "{}", del.stderr_text());
    let again = ca.ward(&["entry", "delete", &id]);
    assert!(!again.status.success());
    assert!(
        again.stderr_text().contains("no registration entry"),
        "{}",
        again.stderr_text()
    );
    let listed = ca.ward(&["entry", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(&listed.stdout_text()).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
}

#[test]
fn workload_svids_rotate_and_entries_come_through_the_admin_api() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    // Remote mode: the admin API with the admin certificate.
    let remote = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--ca".into(),
            server.url(),
            "--admin-cert".into(),
            ca.file("admin.crt").to_str().unwrap().into(),
            "--admin-key".into(),
            ca.file("admin.key").to_str().unwrap().into(),
        ]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::common::ward_env(&refs, ca.envs())
    };
    let created = remote(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--node",
        NODE,
        "--selector",
        "unix:uid:1001",
        "--format",
        "json",
    ]);
    assert!(created.status.success(), "{}", created.stderr_text());
    let view: Value = serde_json::from_str(&created.stdout_text()).unwrap();
    let bad = remote(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--node",
        NODE,
        "--selector",
        "unix:uid:x",
    ]);
    assert!(!bad.status.success());
    assert!(
        bad.stderr_text().contains("decimal"),
        "{}",
        bad.stderr_text()
    );
    let listed = remote(&["entry", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(&listed.stdout_text()).unwrap();
    assert_eq!(v["entries"][0]["id"], view["id"]);

    // Root's jobs too: the stream test below runs as uid 0.
    must_entry(&ca, "spiffe://example.org/root-job", &["unix:uid:0"], NODE);

    let dir = open_dir();
    let socket = dir.path().join("api.sock").to_str().unwrap().to_owned();
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut agent = start_agent_ttl(&server, &ca, &socket, &out, &["--entries-from-ca"], "10s");
    wait_until("the workload SVID", DEADLINE, || {
        obtained(&agent, "spiffe://example.org/web") >= 1
    });
    let first = fetch_as(&socket, 1001);
    assert_eq!(
        first["ids"],
        serde_json::json!(["spiffe://example.org/web"]),
        "{first}"
    );
    // Lifetime 10 s, renewed at two thirds: a new SVID within seconds.
    wait_until("a rotated workload SVID", DEADLINE, || {
        obtained(&agent, "spiffe://example.org/web") >= 2
    });
    let second = fetch_as(&socket, 1001);
    assert_eq!(second["ids"], first["ids"]);
    assert_ne!(second["serials"], first["serials"], "{first} {second}");

    // One open py-spiffe stream sees the rotation without reconnecting
    // (the agent tests' client: retry_connect=False).
    let stream = Command::new("python3")
        .args([
            "-c",
            include_str!("../agent/pyspiffe.py"),
            &socket,
            "spiffe",
        ])
        .output()
        .unwrap();
    assert!(stream.status.success(), "{}", stream.stderr_text());
    let py: Value = serde_json::from_str(&stream.stdout_text()).unwrap();
    assert_eq!(
        py["context"]["spiffe_id"], "spiffe://example.org/root-job",
        "{py}"
    );
    assert_eq!(py["stream"]["errors"], serde_json::json!([]), "{py}");
    let seen = py["stream"]["serials"].as_array().unwrap();
    assert!(seen.len() >= 2 && seen[0] != seen[seen.len() - 1], "{py}");

    // Deleting the entry: the agent stops serving it at its next refresh
    // (every minute), so here only the CA side is checked: no more SVIDs.
    let id = view["id"].as_str().unwrap();
    let del = remote(&["entry", "delete", id]);
    assert!(del.status.success(), "{}", del.stderr_text());
    let csr = openssl_csr(dir.path());
    let body =
        serde_json::json!({ "spiffe_id": "spiffe://example.org/web", "csr": csr }).to_string();
    let (status, answer) = curl_as_node(&server, &ca, &out, "/v1/node/sign", Some(&body));
    assert_eq!(status, 403, "{answer}");
    agent.terminate();
}

/// PyJWT verifies `token` for `audience` against the JWKS the CA serves at
/// `/v1/bundle` (fetched with Python's ssl, trusting `root`). Prints
/// `{"sub", "kid"}` or `{"error"}`.
const PYJWT_VERIFY: &str = r#"
import json, ssl, sys, urllib.request
import jwt
url, root, token, aud = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=root)
with urllib.request.urlopen(url + "/v1/bundle", context=ctx, timeout=30) as r:
    doc = json.load(r)
keys = {k["kid"]: k for k in doc["keys"] if k.get("use") == "jwt-svid"}
kid = jwt.get_unverified_header(token)["kid"]
try:
    key = jwt.PyJWK.from_dict(keys[kid]).key
    claims = jwt.decode(token, key, algorithms=["ES256"], audience=aud)
    print(json.dumps({"sub": claims["sub"], "kid": kid, "kids": sorted(keys)}))
except Exception as e:
    print(json.dumps({"error": repr(e), "kid": kid, "kids": sorted(keys)}))
"#;

fn pyjwt_verify(server: &CaProcess, ca: &Ca, token: &str, audience: &str) -> Value {
    let root = ca.root();
    let out = Command::new("python3")
        .args([
            "-c",
            PYJWT_VERIFY,
            &server.url(),
            root.to_str().unwrap(),
            token,
            audience,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pyjwt: {}", out.stderr_text());
    serde_json::from_str(&out.stdout_text()).unwrap()
}

/// py-spiffe as `uid` asks the agent for a JWT-SVID for `audience`.
fn fetch_jwt_as(socket: &str, uid: u32, audience: &str) -> Value {
    let out = Command::new("python3")
        .args(["-c", CLIENT, socket, &uid.to_string(), audience])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python: {}", out.stderr_text());
    let v: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(v["uid"], uid, "{v}");
    v
}

#[test]
fn attested_workloads_get_jwt_svids_for_their_own_entries_only() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    must_entry(&ca, "spiffe://example.org/web", &["unix:uid:1001"], NODE);
    must_entry(&ca, "spiffe://example.org/db", &["unix:uid:1002"], NODE);
    must_entry(
        &ca,
        "spiffe://example.org/elsewhere",
        &["unix:uid:1005"],
        "spiffe://example.org/node/n2",
    );
    let dir = open_dir();
    let socket = dir.path().join("api.sock").to_str().unwrap().to_owned();
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut agent = start_agent(&server, &ca, &socket, &out, &["--entries-from-ca"]);
    wait_until("the workload SVIDs", DEADLINE, || {
        agent.count("workload SVID obtained") >= 2
    });

    let web = fetch_jwt_as(&socket, 1001, "billing");
    assert_eq!(web["sub"], "spiffe://example.org/web", "{web}");
    assert_eq!(web["aud"], serde_json::json!(["billing"]), "{web}");
    assert_eq!(web["cached"], true, "the agent caches per (ID, audience)");
    assert_eq!(web["validated"], "spiffe://example.org/web", "{web}");
    let checked = pyjwt_verify(&server, &ca, web["token"].as_str().unwrap(), "billing");
    assert_eq!(checked["sub"], "spiffe://example.org/web", "{checked}");
    let wrong_aud = pyjwt_verify(&server, &ca, web["token"].as_str().unwrap(), "other");
    assert!(
        wrong_aud["error"].as_str().unwrap().contains("Audience"),
        "{wrong_aud}"
    );

    let db = fetch_jwt_as(&socket, 1002, "billing");
    assert_eq!(db["sub"], "spiffe://example.org/db", "{db}");
    assert_ne!(db["token"], web["token"]);

    // No entry (1006), and an entry of another node (1005): nothing.
    for stranger in [1005, 1006] {
        let v = fetch_jwt_as(&socket, stranger, "billing");
        assert!(v["sub"].is_null(), "uid {stranger} got {v}");
        assert_eq!(v["code"], "PERMISSION_DENIED", "uid {stranger}: {v}");
    }
    agent.terminate();
}

#[test]
fn the_ca_mints_node_jwt_svids_only_for_ids_registered_for_the_asking_node() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    must_entry(&ca, "spiffe://example.org/web", &["unix:uid:1001"], NODE);
    must_entry(
        &ca,
        "spiffe://example.org/elsewhere",
        &["unix:uid:1005"],
        "spiffe://example.org/node/n2",
    );
    let dir = open_dir();
    let socket = dir.path().join("api.sock").to_str().unwrap().to_owned();
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut agent = start_agent(&server, &ca, &socket, &out, &["--entries-from-ca"]);
    let ok = r#"{"spiffe_id":"spiffe://example.org/web","audience":["svc"]}"#;
    let (status, answer) = curl_as_node(&server, &ca, &out, "/v1/node/jwt-svid", Some(ok));
    assert_eq!(status, 201, "{answer}");
    let token = answer["token"].as_str().unwrap();
    let checked = pyjwt_verify(&server, &ca, token, "svc");
    assert_eq!(checked["sub"], "spiffe://example.org/web", "{checked}");
    for (body, want) in [
        (
            r#"{"spiffe_id":"spiffe://example.org/elsewhere","audience":["svc"]}"#,
            403,
        ),
        (
            r#"{"spiffe_id":"spiffe://example.org/node/n1","audience":["svc"]}"#,
            403,
        ),
        (
            r#"{"spiffe_id":"spiffe://other.org/web","audience":["svc"]}"#,
            403,
        ),
        (
            r#"{"spiffe_id":"spiffe://example.org/web","audience":[]}"#,
            400,
        ),
        (r#"{"spiffe_id":"spiffe://example.org/web"}"#, 400),
    ] {
        let (status, answer) = curl_as_node(&server, &ca, &out, "/v1/node/jwt-svid", Some(body));
        assert_eq!(status, want, "{body}: {answer}");
        assert!(answer.get("token").is_none(), "{answer}");
    }
    agent.terminate();
}
