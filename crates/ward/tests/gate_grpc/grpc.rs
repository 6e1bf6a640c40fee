//! gRPC through the gate, both ends Python grpcio: the four call kinds, a
//! 10 MB message, a long-lived stream, deadlines, cancellation, identity
//! as metadata, per-method allow rules, refusals as gRPC statuses, and the
//! metric and audit line of each call.

use std::process::Command;

use serde_json::Value;

use crate::harness::{Gate, OutputText};
use crate::support::{Py, Setup, python_has, script};

const MODULES: &[&str] = &["grpc", "grpc_health.v1.health"];

/// Routes: `Secret` for `ops/*` only, the rest of the service and the
/// health service for `ns/*`.
fn routes(upstream: &str, protocol: &str) -> String {
    format!(
        r#"
[[tenants.routes]]
name = "secret"
path_prefix = "/ward.test.Echo/Secret"
upstream = "{upstream}"
protocol = "{protocol}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ops/*"]

[[tenants.routes]]
name = "echo"
path_prefix = "/ward.test.Echo"
upstream = "{upstream}"
protocol = "{protocol}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*", "spiffe://example.org/ops/*"]

[[tenants.routes]]
name = "health"
path_prefix = "/grpc.health.v1.Health/Check"
upstream = "{upstream}"
protocol = "{protocol}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    )
}

/// Runs `grpc_client.py` against the gate as `who`.
fn client(gate: &Gate, setup: &Setup, who: &std::path::Path, scenario: &str) -> Value {
    let (cert, key) = Setup::creds(who);
    let out = Command::new("python3")
        .arg(script("grpc_client.py"))
        .args([
            &gate.port().to_string(),
            &setup.root(),
            &cert,
            &key,
            scenario,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "grpc client {scenario}: {}\ngate: {}",
        out.stderr_text(),
        gate.stderr()
    );
    serde_json::from_str(&out.stdout_text()).unwrap()
}

fn start(setup: &Setup, upstream: &Py) -> Gate {
    Gate::config(&setup.config(&routes(&upstream.url(), "h2"), ""))
}

#[test]
fn grpcio_calls_of_every_kind_pass_with_the_callers_identity() {
    if !python_has(MODULES) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = start(&setup, &upstream);
    let out = client(&gate, &setup, &setup.app, "calls");
    assert_eq!(out["unary"], "hello", "{out}");
    assert_eq!(
        out["server_stream"],
        serde_json::json!(["0", "1", "2", "3", "4"])
    );
    assert_eq!(out["client_stream"], "3:6");
    assert_eq!(out["bidi"], serde_json::json!(["x", "y", "z"]));
    assert_eq!(out["big"]["sent"], 10 * 1024 * 1024);
    assert_eq!(out["big"]["same"], true, "{}", out["big"]);
    let long: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(out["long_lived"], serde_json::json!(long));
    // The upstream's own status and message pass through unchanged.
    assert_eq!(out["upstream_status"]["code"], "FAILED_PRECONDITION");
    assert_eq!(out["upstream_status"]["details"], "asked to fail");
    assert_eq!(out["health"], "SERVING");
    // The upstream reads the caller's identity from the metadata.
    assert_eq!(out["whoami"]["spiffe_id"], "spiffe://example.org/ns/app");
    let xfcc = out["whoami"]["xfcc"].as_str().unwrap();
    assert!(xfcc.contains("URI=spiffe://example.org/ns/app"), "{xfcc}");
    assert!(xfcc.contains("By=spiffe://example.org/gate"), "{xfcc}");

    // One metric per call with its grpc-status, in the existing family.
    let m = gate.metrics();
    let count = |route: &str, grpc: &str| {
        m.sum(
            "ward_gate_requests_total",
            &[("route", route), ("status", "200"), ("grpc_status", grpc)],
        )
    };
    // unary, whoami, 3 streams, big, long-lived bidi.
    assert_eq!(count("echo", "0"), 7.0, "{}", m.0);
    assert_eq!(count("echo", "9"), 1.0, "{}", m.0);
    assert_eq!(count("health", "0"), 1.0, "{}", m.0);
    let audit = gate.finish();
    let calls: Vec<&Value> = audit
        .iter()
        .filter(|l| l["event"] == "request" && l["grpc_method"] == "ClientStream")
        .collect();
    assert_eq!(calls.len(), 1, "{audit:?}");
    assert_eq!(calls[0]["grpc_service"], "ward.test.Echo");
    assert_eq!(calls[0]["grpc_status"], "0");
    assert_eq!(calls[0]["result"], "forwarded");
}

#[test]
fn a_caller_not_allowed_for_a_method_gets_permission_denied() {
    if !python_has(MODULES) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = start(&setup, &upstream);
    let denied = client(&gate, &setup, &setup.app, "method:Secret");
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");
    assert_eq!(denied["details"], "this identity may not use this route");
    let allowed = client(&gate, &setup, &setup.admin, "method:Secret");
    assert_eq!(allowed["ok"], "hello", "{allowed}");
    // The same caller may use the service's other methods.
    let other = client(&gate, &setup, &setup.app, "method:Unary");
    assert_eq!(other["ok"], "hello", "{other}");
    // No route for the method: UNIMPLEMENTED, not a JSON 404.
    let none = client(&gate, &setup, &setup.app, "path:/other.Service/Nope");
    assert_eq!(none["code"], "UNIMPLEMENTED", "{none}");
    gate.wait_metric(
        "ward_gate_requests_total",
        &[("route", "secret"), ("grpc_status", "7")],
        1.0,
    );
    let audit = gate.finish();
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|l| l["event"] == "request" && l["result"] == "refused")
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l["reason"] == "forbidden" && l["grpc_status"] == "7" && l["status"] == 200),
        "{refused:?}"
    );
}

#[test]
fn an_unreachable_upstream_is_unavailable() {
    if !python_has(MODULES) {
        return;
    }
    let setup = Setup::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gate = Gate::config(&setup.config(&routes(&url, "h2"), ""));
    let out = client(&gate, &setup, &setup.app, "method:Unary");
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
}

#[test]
fn deadlines_pass_on_and_expire() {
    if !python_has(MODULES) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = start(&setup, &upstream);
    let out = client(&gate, &setup, &setup.app, "deadline");
    // grpc-timeout reached the upstream: it saw what was left of 5 s.
    let remaining = out["remaining"].as_f64().unwrap();
    assert!(remaining > 1.0 && remaining <= 5.0, "{out}");
    assert_eq!(out["expired"]["code"], "DEADLINE_EXCEEDED", "{out}");
    assert!(out["elapsed"].as_f64().unwrap() < 2.5, "{out}");
}

#[test]
fn a_cancelled_call_is_cancelled_at_the_upstream() {
    if !python_has(MODULES) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = start(&setup, &upstream);
    let out = client(&gate, &setup, &setup.app, "cancel");
    assert_eq!(out["first"], "started", "{out}");
    assert_eq!(out["after"], "CANCELLED", "{out}");
    // The client's RST_STREAM became one to the upstream: its call ended.
    upstream.wait_event("ended cancel-me");
    gate.wait_metric(
        "ward_gate_requests_total",
        &[("route", "echo"), ("grpc_status", "-")],
        1.0,
    );
}

#[test]
fn oversized_metadata_is_refused_precisely() {
    if !python_has(MODULES) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = start(&setup, &upstream);
    let out = client(&gate, &setup, &setup.app, "big_metadata");
    assert!(out.get("ok").is_none(), "{out}");
    // The gate's HTTP/2 server refuses a header block over its limit; the
    // gate itself keeps serving.
    let ok = client(&gate, &setup, &setup.app, "method:Unary");
    assert_eq!(ok["ok"], "hello", "{ok}");
    assert!(!gate.stderr().contains("panicked"), "{}", gate.stderr());
}

#[test]
fn an_upstream_reset_reaches_the_client_as_a_reset() {
    if !python_has(&["grpc", "grpc_health.v1.health", "h2"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("h2_reset.py", &[]);
    let gate = start(&setup, &upstream);
    let out = client(&gate, &setup, &setup.app, "reset");
    upstream.wait_event("reset");
    // The message before the reset arrived; then the upstream's
    // RST_STREAM(CANCEL) reached grpcio as one (CANCELLED), not as a
    // clean end of the call.
    assert_eq!(out["first"], "started", "{out}");
    assert_eq!(out["after"], "CANCELLED", "{out}");
    assert!(!gate.stderr().contains("panicked"), "{}", gate.stderr());
}

/// Runs `h2_client.py` (raw HTTP/2, no deadline of its own) as `app`.
pub(crate) fn raw(gate: &Gate, setup: &Setup, args: &[&str]) -> Value {
    let (cert, key) = Setup::creds(&setup.app);
    let out = Command::new("python3")
        .arg(script("h2_client.py"))
        .args([&gate.port().to_string(), &setup.root(), &cert, &key])
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "h2 client {args:?}: {}\ngate: {}",
        out.stderr_text(),
        gate.stderr()
    );
    serde_json::from_str(&out.stdout_text()).unwrap()
}

#[test]
fn the_gate_enforces_grpc_timeout_on_an_upstream_that_ignores_it() {
    if !python_has(&["h2"]) {
        return;
    }
    let setup = Setup::new();
    for mode in ["stall", "stall-body"] {
        // A raw HTTP/2 upstream that never finishes the call, and a raw
        // client that never gives up: only the gate can end it.
        let upstream = Py::start("h2_reset.py", &[mode]);
        let gate = start(&setup, &upstream);
        let args = ["grpc", "/ward.test.Echo/Unary", "x", "500m"];
        let out = raw(&gate, &setup, &args);
        upstream.wait_event("request");
        assert_eq!(out["grpc_status"], "4", "{mode}: {out}");
        let message = out["grpc_message"].as_str().unwrap();
        assert!(message.contains("grpc-timeout"), "{mode}: {out}");
        assert_eq!(out["headers"][":status"], "200", "{mode}: {out}");
        assert!(out["reset"].is_null(), "a clean end, not a reset: {out}");
        let elapsed = out["elapsed"].as_f64().unwrap();
        assert!((0.45..5.0).contains(&elapsed), "{mode}: {out}");
        if mode == "stall-body" {
            // What the upstream sent before the deadline was delivered.
            assert_eq!(out["data"], 12, "{out}");
        }
        // The upstream's stream was reset, so it stops working on it.
        upstream.wait_event("reset-by-peer");
        let audit = gate.finish();
        assert!(
            audit
                .iter()
                .any(|l| l["event"] == "request" && l["grpc_status"] == "4"),
            "{mode}: {audit:?}"
        );
    }
}

#[test]
fn a_grpcio_upstream_sleeping_past_the_deadline_gives_deadline_exceeded() {
    if !python_has(&["grpc", "grpc_health.v1.health", "h2"]) {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("grpc_upstream.py", &[]);
    let gate = start(&setup, &upstream);
    let out = raw(
        &gate,
        &setup,
        &["grpc", "/ward.test.Echo/Unary", "sleep:3", "500m"],
    );
    assert_eq!(out["grpc_status"], "4", "{out}");
    let elapsed = out["elapsed"].as_f64().unwrap();
    assert!((0.45..2.5).contains(&elapsed), "{out}");
    // Without a deadline the same call completes.
    let out = raw(
        &gate,
        &setup,
        &["grpc", "/ward.test.Echo/Unary", "sleep:0.1", "-"],
    );
    assert_eq!(out["grpc_status"], "0", "{out}");
    assert_eq!(out["data"], 10, "{out}");
}

#[test]
fn a_reload_moves_http2_upstream_connections_to_the_new_credentials() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    if !python_has(MODULES) {
        return;
    }
    let setup = Setup::new();
    let pki = &setup.pki;
    let upstream_cert = crate::harness::server_cert(pki, "spiffe://example.org/upstream", "up");
    let gate_a = crate::harness::mint(pki, "client", "spiffe://example.org/gate-a", "gate-a", &[]);
    let gate_b = crate::harness::mint(pki, "client", "spiffe://example.org/gate-b", "gate-b", &[]);
    let (up_crt, up_key) = Setup::creds(&upstream_cert);
    let upstream = Py::start("grpc_upstream.py", &["0", &up_crt, &up_key, &setup.root()]);
    let url = format!("https://127.0.0.1:{}", upstream.port);
    let config = |who: &std::path::Path| {
        let (c, k) = Setup::creds(who);
        let extra = format!(
            "[upstream_tls]\nca = \"{}\"\ncert = \"{c}\"\nkey = \"{k}\"\n",
            setup.root()
        );
        setup.config(&routes(&url, "h2"), &extra)
    };
    let file = config(&gate_a);
    let gate = Gate::config(&file);

    let (cert, key) = Setup::creds(&setup.app);
    let mut child = Command::new("python3")
        .arg("-u")
        .arg(script("grpc_client.py"))
        .args([
            &gate.port().to_string(),
            &setup.root(),
            &cert,
            &key,
            "reload",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert_eq!(ready, "EVENT ready", "gate: {}", gate.stderr());

    // New upstream credentials, picked up by SIGHUP.
    let same = config(&gate_b);
    assert_eq!(same, file);
    gate.signal("HUP");
    gate.wait_metric("ward_gate_reloads_total", &[("result", "success")], 1.0);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    drop(stdin);
    let out: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(child.wait().unwrap().success());

    let before = out["before"].to_string();
    let after = out["after"].to_string();
    assert!(before.contains("spiffe://example.org/gate-a"), "{out}");
    // The same client connection's next call went out on a new upstream
    // connection with the new certificate...
    assert!(after.contains("spiffe://example.org/gate-b"), "{out}");
    assert!(!after.contains("gate-a"), "{out}");
    // ...while the stream open across the reload kept its old connection
    // until it ended.
    assert_eq!(out["stream_before"], "m0", "{out}");
    assert_eq!(out["stream_after"], "m1", "{out}");
    assert_eq!(out["stream_end"], serde_json::json!([]), "{out}");
}
