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
    let token = ca.token(NODE, &["--cert-ttl", "1h"]);
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
