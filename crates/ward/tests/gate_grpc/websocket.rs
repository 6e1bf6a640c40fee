//! WebSocket (HTTP/1.1 Upgrade) through the gate, both ends Python
//! `websockets`: the upstream sees the caller's identity on the upgrade
//! request, messages pass both ways, and a quiet upgraded connection is
//! closed after the idle timeout.

use std::process::Command;

use serde_json::Value;

use crate::harness::{Gate, OutputText, crt, key};
use crate::support::{Py, Setup, python_has, script};

fn route(upstream: &str) -> String {
    format!(
        r#"
[[tenants.routes]]
name = "ws"
path_prefix = "/ws"
upstream = "{upstream}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    )
}

fn client(gate: &Gate, setup: &Setup, quiet: Option<&str>) -> Value {
    let (c, k) = (crt(&setup.app), key(&setup.app));
    let port = gate.port().to_string();
    let mut args = vec![script("ws.py"), "client".into(), port, setup.root(), c, k];
    args.extend(quiet.map(str::to_owned));
    let out = Command::new("python3").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "ws client: {}\ngate: {}",
        out.stderr_text(),
        gate.stderr()
    );
    serde_json::from_str(&out.stdout_text()).unwrap()
}

#[test]
fn a_websocket_echo_passes_with_the_callers_identity() {
    if !python_has(&["websockets"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("ws.py", &["server"]);
    let gate = Gate::config(&setup.config(&route(&upstream.url()), ""));
    let out = client(&gate, &setup, None);
    assert_eq!(
        out["identity"]["spiffe_id"], "spiffe://example.org/ns/app",
        "{out}"
    );
    let xfcc = out["identity"]["xfcc"].as_str().unwrap();
    assert!(xfcc.contains("URI=spiffe://example.org/ns/app"), "{xfcc}");
    assert_eq!(out["identity"]["path"], "/ws");
    assert_eq!(out["text"], "hello");
    assert_eq!(out["binary_same"], true);
    let audit = gate.finish();
    assert!(
        audit
            .iter()
            .any(|l| l["event"] == "request" && l["route"] == "ws" && l["status"] == 101),
        "{audit:?}"
    );
}

#[test]
fn a_quiet_websocket_is_closed_after_the_idle_timeout() {
    if !python_has(&["websockets"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("ws.py", &["server"]);
    let gate = Gate::config(&setup.config(&route(&upstream.url()), "[timeouts]\nidle = \"1s\"\n"));
    let out = client(&gate, &setup, Some("3"));
    assert_eq!(out["text"], "hello", "{out}");
    let after = out["after_quiet"].as_str().unwrap();
    assert!(after.starts_with("closed"), "{out}");
}
