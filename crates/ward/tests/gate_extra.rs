//! End-to-end tests of the gate's Rego policies, outbound mode
//! (`ward gate client`) and TCP idle timeout, against real `ward`
//! processes and small upstreams written here. Processes are awaited by
//! their readiness lines on stderr and killed through their `Child`.
//! This file holds the policy tests; `gate_extra/` the harness and the
//! outbound and TCP tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

mod common;
#[path = "gate_extra/hardening.rs"]
mod hardening;
#[path = "gate_extra/harness.rs"]
mod harness;
#[path = "gate_extra/outbound.rs"]
mod outbound;

use std::net::SocketAddr;
use std::path::Path;

use common::{OutputText, Pki, ward};
use harness::{Proc, READY, call, curl, http_echo, p, pki_with_gate, replace};
use serde_json::Value;

const POLICY: &str = r#"
package ward.gate

reader := "spiffe://example.org/ns/reader"

default allow := false

# Everyone the route's rules admit, except the reader...
allow if input.identity.spiffe_id != reader

# ...who may only read /public.
allow if {
    input.identity.spiffe_id == reader
    input.request.method == "GET"
    input.request.path == "/public"
}

deny contains "blocked by the x-block header" if input.request.headers["x-block"] == "1"

# Identity headers are stripped before the policy sees the request.
deny contains "spoofed identity header visible" if input.request.headers["x-ward-spiffe-id"]
deny contains "spoofed identity header visible" if input.request.headers["x-forwarded-client-cert"]
"#;

/// Only `spiffe://example.org/other/solo`, and no allow rules on its route.
const SOLO: &str = r#"
package ward.gate
allow if input.identity.spiffe_id == "spiffe://example.org/other/solo"
"#;

/// Starts a gate whose `/solo` route has only a policy and whose catch-all
/// route has allow rules (`ns/*`) and a policy.
fn policy_gate(
    pki: &Pki,
    gate: &Path,
    upstream: SocketAddr,
    policy: &str,
) -> (Proc, SocketAddr, SocketAddr) {
    std::fs::write(pki.path("policy.rego"), policy).unwrap();
    std::fs::write(pki.path("solo.rego"), SOLO).unwrap();
    let config = format!(
        r#"
audit_log = "off"
[listen]
address = "127.0.0.1:0"
admin = "127.0.0.1:0"
[[tenants]]
name = "api"
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}
[[tenants.routes]]
name = "solo"
path_prefix = "/solo"
upstream = "http://{upstream}"
policy = "solo.rego"
[[tenants.routes]]
name = "api"
upstream = "http://{upstream}"
policy = "policy.rego"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#,
        cert = p(&gate.with_extension("crt")),
        key = p(&gate.with_extension("key")),
        ca = p(&pki.root()),
    );
    let path = pki.path("gate.toml");
    std::fs::write(&path, config).unwrap();
    let proc = Proc::spawn(&["gate", "serve", "--config", &p(&path)]);
    let listen = proc.ready("ward gate: listening on ");
    let admin = proc.ready("ward gate: admin on ");
    (proc, listen, admin)
}

fn error_body(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["error"], "forbidden", "{body}");
    v
}

#[test]
fn rego_policy_lets_one_identity_only_get_public() {
    let (pki, gate) = pki_with_gate();
    let reader = pki.issue("client", "spiffe://example.org/ns/reader", &[]);
    let writer = pki.issue("client", "spiffe://example.org/ns/writer", &[]);
    let solo = pki.issue("client", "spiffe://example.org/other/solo", &[]);
    let (_gate, addr, _) = policy_gate(&pki, &gate, http_echo(), POLICY);

    // The reader: GET /public only.
    let (status, body) = call(&pki, addr, &reader, "GET", "/public", &[]);
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["path"], "/public");
    assert_eq!(
        echoed["headers"]["x-ward-spiffe-id"],
        "spiffe://example.org/ns/reader"
    );
    for (method, path) in [
        ("POST", "/public"),
        ("GET", "/private"),
        ("GET", "/public/x"),
    ] {
        let (status, body) = call(&pki, addr, &reader, method, path, &[]);
        assert_eq!(status, 403, "{method} {path}: {body}");
        let v = error_body(&body);
        assert_eq!(v["message"], "denied by policy", "{body}");
        assert!(
            !body.contains("package") && !body.contains("reader"),
            "{body}"
        );
    }

    // Another identity the route's rules admit: anything, and spoofed
    // identity headers are gone before the policy (and the upstream) see them.
    for (method, path) in [("POST", "/public"), ("GET", "/private"), ("DELETE", "/x")] {
        let (status, body) = call(
            &pki,
            addr,
            &writer,
            method,
            path,
            &[
                "-H",
                "x-ward-spiffe-id: spiffe://example.org/ns/reader",
                "-H",
                "x-forwarded-client-cert: Hash=00",
            ],
        );
        assert_eq!(status, 200, "{method} {path}: {body}");
        let echoed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            echoed["headers"]["x-ward-spiffe-id"],
            "spiffe://example.org/ns/writer"
        );
    }
    // deny messages reach the client.
    let (status, body) = call(&pki, addr, &writer, "GET", "/", &["-H", "x-block: 1"]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        error_body(&body)["message"],
        "denied by policy: blocked by the x-block header"
    );

    // Rules AND policy: the policy would admit other/solo, the rules do not.
    let (status, body) = call(&pki, addr, &solo, "GET", "/public", &[]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        error_body(&body)["message"],
        "this identity may not use this route"
    );
    // A route with only a policy: the policy alone decides.
    assert_eq!(call(&pki, addr, &solo, "GET", "/solo", &[]).0, 200);
    assert_eq!(call(&pki, addr, &writer, "GET", "/solo", &[]).0, 403);
}

#[test]
fn bad_policy_at_startup_is_a_config_error() {
    let (pki, gate) = pki_with_gate();
    std::fs::write(pki.path("policy.rego"), "package ward.gate\nallow if {\n").unwrap();
    std::fs::write(pki.path("solo.rego"), SOLO).unwrap();
    let config = format!(
        "audit_log = \"off\"\n[listen]\naddress = \"127.0.0.1:0\"\n[[tenants]]\nname = \"api\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n[[tenants.routes]]\nname = \"api\"\nupstream = \"http://127.0.0.1:9\"\npolicy = \"policy.rego\"\n",
        p(&gate.with_extension("crt")),
        p(&gate.with_extension("key")),
        p(&pki.root()),
    );
    let path = pki.path("gate.toml");
    std::fs::write(&path, config).unwrap();
    for extra in [&[][..], &["--check-config"][..]] {
        let mut args = vec!["gate", "serve", "--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = ward(&args);
        let err = out.stderr_text();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("route \"api\"") && err.contains("policy.rego"),
            "{err}"
        );
        assert!(!err.contains("listening on"), "{err}");
    }
}

#[test]
fn bad_policy_at_reload_is_rejected_and_the_old_one_stays() {
    let (pki, gate) = pki_with_gate();
    let reader = pki.issue("client", "spiffe://example.org/ns/reader", &[]);
    let (proc, addr, admin) = policy_gate(&pki, &gate, http_echo(), POLICY);
    assert_eq!(call(&pki, addr, &reader, "GET", "/public", &[]).0, 200);
    assert_eq!(call(&pki, addr, &reader, "POST", "/public", &[]).0, 403);

    // A policy that does not parse: rejected, counted, old policy in force.
    replace(
        &pki.path("policy.rego"),
        "package ward.gate\nallow if {{{\n",
    );
    let line = proc.wait_for("reload rejected", READY);
    assert!(line.contains("policy.rego"), "{line}");
    assert_eq!(call(&pki, addr, &reader, "GET", "/public", &[]).0, 200);
    assert_eq!(call(&pki, addr, &reader, "POST", "/public", &[]).0, 403);
    assert_eq!(call(&pki, addr, &reader, "GET", "/private", &[]).0, 403);
    let (status, metrics) = curl(&[&format!("http://{admin}/metrics")]);
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(
            |l| l.starts_with("ward_gate_reloads_total{result=\"failure\"}") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );

    // A good new policy takes over: the reader may now POST too.
    replace(
        &pki.path("policy.rego"),
        &POLICY.replace(
            "input.request.method == \"GET\"",
            "input.request.method in {\"GET\", \"POST\"}",
        ),
    );
    proc.wait_for("configuration reloaded", READY);
    assert_eq!(call(&pki, addr, &reader, "POST", "/public", &[]).0, 200);
    assert_eq!(call(&pki, addr, &reader, "GET", "/private", &[]).0, 403);
}
