//! End-to-end tests of the gate at the edge (issue 19): SNI passthrough
//! next to terminating tenants, the PROXY protocol from HAProxy, audit
//! mode (per tenant and per route), and the shipped Prometheus rules and
//! Grafana dashboard.
//!
//! Judges nobody here wrote: `openssl s_client`, curl, Python's ssl
//! module (the TLS backend), HAProxy (`send-proxy`, `send-proxy-v2`) and
//! promtool.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

#[path = "gate_edge/assets.rs"]
mod assets;
mod common;
#[allow(dead_code)] // shared with gate_extra; this binary uses a part
#[path = "gate_extra/harness.rs"]
mod harness;
#[path = "gate_edge/linger.rs"]
mod linger;
#[path = "gate_edge/route_mode.rs"]
mod route_mode;
#[path = "gate_edge/support.rs"]
mod support;

use std::path::Path;

use common::Pki;
use harness::{Proc, call, curl, http_echo, p, pki_with_gate};
use serde_json::Value;
use support::{Haproxy, audit_lines, backend, dead_port, metric, metrics, s_client, s_client_with};

/// The gate's TOML: one terminating tenant (`extra_tenant` appended to
/// it), then `rest`.
fn gate_config(
    pki: &Pki,
    gate: &Path,
    upstream: std::net::SocketAddr,
    tenant: &str,
    rest: &str,
) -> String {
    format!(
        r#"
audit_log = {audit:?}
{rest_top}
[listen]
address = "127.0.0.1:0"
admin = "127.0.0.1:0"
{listen}
[[tenants]]
name = "api"
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}
{tenant}
[[tenants.routes]]
name = "all"
upstream = "http://{upstream}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
{passthrough}
"#,
        audit = p(&pki.path("audit.log")),
        cert = p(&gate.with_extension("crt")),
        key = p(&gate.with_extension("key")),
        ca = p(&pki.root()),
        rest_top = "",
        listen = rest.split("#passthrough").next().unwrap_or(""),
        passthrough = rest.split("#passthrough").nth(1).unwrap_or(""),
    )
}

fn start_gate(
    pki: &Pki,
    config: &str,
    name: &str,
) -> (Proc, std::net::SocketAddr, std::net::SocketAddr) {
    let path = pki.path(name);
    std::fs::write(&path, config).unwrap();
    let proc = Proc::spawn(&["gate", "serve", "--config", &p(&path)]);
    let listen = proc.ready("ward gate: listening on ");
    let admin = proc.ready("ward gate: admin on ");
    (proc, listen, admin)
}

/// The first PEM certificate in `text`.
fn first_pem(text: &str) -> String {
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    text[start..end].split_whitespace().collect()
}

#[test]
fn passthrough_reaches_the_tls_backend_and_terminating_tenants_keep_mtls() {
    let (pki, gate) = pki_with_gate();
    let backend_cert = pki.issue(
        "server",
        "spiffe://example.org/backend",
        &["--dns", "b.example.test", "--dns", "x.pp.example.test"],
    );
    let (_plain, plain_port) = backend(&backend_cert, false);
    let (_pp, pp_port) = backend(&backend_cert, true);
    let down = dead_port();
    let client = pki.issue("client", "spiffe://example.org/ns/client", &[]);
    let config = gate_config(
        &pki,
        &gate,
        http_echo(),
        "",
        &format!(
            r#"#passthrough
[[passthrough]]
sni = "b.example.test"
upstream = "127.0.0.1:{plain_port}"
[[passthrough]]
name = "proxied"
sni = "*.pp.example.test"
upstream = "127.0.0.1:{pp_port}"
send_proxy_v2 = true
[[passthrough]]
name = "down"
sni = "down.example.test"
upstream = "127.0.0.1:{down}"
"#
        ),
    );
    let (_gate, addr, admin) = start_gate(&pki, &config, "gate.toml");

    // openssl s_client sees the backend's certificate (verified against
    // the CA for the name it asked) and talks to the backend.
    let (ok, out) = s_client(addr, "b.example.test", &pki.root(), "ping");
    assert!(ok, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("hello from backend"), "{out}");
    assert!(out.contains("echo:ping"), "{out}");
    let backend_pem = std::fs::read_to_string(backend_cert.with_extension("crt")).unwrap();
    assert_eq!(
        first_pem(&out),
        first_pem(&backend_pem),
        "the leaf is the backend's"
    );

    // A suffix route with PROXY v2 to the backend: it learns the client.
    let (ok, out) = s_client(addr, "x.pp.example.test", &pki.root(), "pong");
    assert!(ok, "{out}");
    assert!(out.contains("client=127.0.0.1:"), "{out}");
    assert!(out.contains("echo:pong"), "{out}");

    // An unreachable passthrough upstream: refused, counted.
    let (ok, out) = s_client(addr, "down.example.test", &pki.root(), "x");
    assert!(!ok || !out.contains("hello from backend"), "{out}");

    // The terminating tenant on the same listener (no SNI: an IP address)
    // still demands a client certificate.
    let root = pki.root();
    let url = format!("https://{addr}/");
    let (status, body) = curl(&["--cacert", root.to_str().unwrap(), &url]);
    assert_eq!(status, 0, "no certificate, no response: {body}");
    let (status, body) = call(&pki, addr, &client, "GET", "/x", &[]);
    assert_eq!(status, 200, "{body}");

    let m = metrics(admin);
    assert_eq!(
        metric(
            &m,
            "ward_gate_passthrough_total",
            &[("route", "b.example.test"), ("result", "forwarded")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ward_gate_passthrough_total",
            &[("route", "proxied"), ("result", "forwarded")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ward_gate_passthrough_total",
            &[("route", "down"), ("result", "refused")]
        ),
        1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "ward_gate_handshakes_total",
            &[
                ("result", "failure"),
                ("reason", "no_certificate"),
                ("tenant", "api")
            ]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "ward_gate_handshake_seconds_count",
            &[("tenant", "api"), ("result", "success")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "ward_gate_handshake_seconds_count",
            &[("tenant", "api"), ("result", "failure")]
        ) >= 1.0,
        "{m}"
    );

    let lines = audit_lines(&pki.path("audit.log"));
    let forwarded: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "passthrough" && l["result"] == "forwarded")
        .collect();
    assert_eq!(forwarded.len(), 2, "{lines:?}");
    assert!(
        forwarded
            .iter()
            .any(|l| l["sni"] == "b.example.test" && l["route"] == "b.example.test"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["event"] == "passthrough"
            && l["route"] == "down"
            && l["reason"] == "upstream_unreachable"),
        "{lines:?}"
    );
}

#[test]
fn proxy_protocol_from_haproxy_carries_the_real_client_and_unlisted_senders_are_refused() {
    let Some(haproxy) = support::haproxy_binary() else {
        return;
    };
    let (pki, gate) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/client", &[]);
    let config = gate_config(
        &pki,
        &gate,
        http_echo(),
        "",
        "proxy_protocol_from = [\"127.0.0.1/32\"]\n#passthrough\n",
    );
    let (_gate, addr, admin) = start_gate(&pki, &config, "gate.toml");
    let lb = Haproxy::start(&haproxy, &pki.path("haproxy"), addr);

    let root = p(&pki.root());
    let cert = p(&client.with_extension("crt"));
    let key = p(&client.with_extension("key"));
    let get = |port: u16, from: &str| {
        curl(&[
            "--interface",
            from,
            "--cacert",
            &root,
            "--cert",
            &cert,
            "--key",
            &key,
            &format!("https://127.0.0.1:{port}/who"),
        ])
    };
    // The client at 127.0.0.5 goes through HAProxy (which connects from
    // 127.0.0.1, a listed load balancer), with v2 and with v1.
    for (port, version) in [(lb.v2, "v2"), (lb.v1, "v1")] {
        let (status, body) = get(port, "127.0.0.5");
        assert_eq!(status, 200, "{version}: {body}\n{}", lb.log());
        let echoed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            echoed["headers"]["x-forwarded-for"], "127.0.0.5",
            "{version}: {body}"
        );
        assert!(
            echoed["headers"]["x-forwarded-client-cert"]
                .as_str()
                .unwrap()
                .contains("spiffe://example.org/ns/client"),
            "{body}"
        );
    }
    // HAProxy connecting from 127.0.0.3 (not listed) with a header: refused.
    let (status, body) = get(lb.unlisted, "127.0.0.5");
    assert_eq!(status, 0, "{body}");
    // A direct client from an unlisted address sends no header: served.
    let (status, body) = get(addr.port(), "127.0.0.4");
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.4", "{body}");
    // A listed address must send the header.
    let (status, body) = get(addr.port(), "127.0.0.1");
    assert_eq!(status, 0, "{body}");

    let m = metrics(admin);
    // (HAProxy's readiness probes may add headers of their own.)
    assert!(
        metric(
            &m,
            "ward_gate_proxy_protocol_total",
            &[("version", "v2"), ("result", "accepted")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "ward_gate_proxy_protocol_total",
            &[("version", "v1"), ("result", "accepted")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "ward_gate_handshakes_total",
            &[("reason", "proxy_protocol_untrusted")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "ward_gate_handshakes_total",
            &[("reason", "proxy_protocol_missing")]
        ) >= 1.0,
        "{m}"
    );

    let lines = audit_lines(&pki.path("audit.log"));
    let accepted: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "handshake" && l["result"] == "accepted")
        .collect();
    assert_eq!(
        accepted
            .iter()
            .filter(|l| l["remote"].as_str().unwrap().starts_with("127.0.0.5:"))
            .count(),
        2,
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["reason"] == "proxy_protocol_untrusted"
                && l["remote"].as_str().unwrap().starts_with("127.0.0.3:")),
        "{lines:?}"
    );
}

#[test]
fn audit_mode_lets_failures_through_counts_them_and_strict_refuses() {
    let (pki, gate) = pki_with_gate();
    let upstream = http_echo();
    let allowed = pki.issue("client", "spiffe://example.org/ns/a", &[]);
    let other = pki.issue("client", "spiffe://example.org/other/b", &[]);
    let foreign_ca = Pki::init(&[]);
    let foreign = foreign_ca.issue("client", "spiffe://example.org/ns/a", &[]);
    let config = gate_config(&pki, &gate, upstream, "mode = \"audit\"", "#passthrough\n");
    let (_gate, addr, admin) = start_gate(&pki, &config, "audit.toml");
    let root = p(&pki.root());
    let url = format!("https://{addr}/x");

    // No certificate (and a forged identity header): through, and the
    // upstream sees no identity at all.
    let (status, body) = curl(&[
        "--cacert",
        &root,
        "-H",
        "x-ward-spiffe-id: spiffe://example.org/ns/admin",
        &url,
    ]);
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert!(
        echoed["headers"].get("x-ward-spiffe-id").is_none(),
        "{body}"
    );
    assert!(
        echoed["headers"].get("x-forwarded-client-cert").is_none(),
        "{body}"
    );

    // A certificate from another CA: through, unverified, no identity.
    let (status, body) = call(
        &foreign_ca,
        addr,
        &foreign,
        "GET",
        "/x",
        &["--cacert", &root],
    );
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert!(
        echoed["headers"].get("x-ward-spiffe-id").is_none(),
        "{body}"
    );
    assert!(
        echoed["headers"].get("x-forwarded-client-cert").is_none(),
        "{body}"
    );

    // A verified identity the route does not allow: through, with its
    // (verified) identity.
    let (status, body) = call(&pki, addr, &other, "GET", "/x", &[]);
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echoed["headers"]["x-ward-spiffe-id"], "spiffe://example.org/other/b",
        "{body}"
    );

    // An allowed identity: nothing to report.
    let (status, body) = call(&pki, addr, &allowed, "GET", "/x", &[]);
    assert_eq!(status, 200, "{body}");

    let m = metrics(admin);
    assert_eq!(
        metric(
            &m,
            "ward_gate_would_refuse_total",
            &[("reason", "no_certificate")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ward_gate_would_refuse_total",
            &[("reason", "unknown_ca")]
        ),
        1.0,
        "{m}"
    );
    // The two unverified clients and the disallowed one.
    assert_eq!(
        metric(
            &m,
            "ward_gate_would_refuse_total",
            &[("reason", "policy_denied")]
        ),
        3.0,
        "{m}"
    );
    let lines = audit_lines(&pki.path("audit.log"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["event"] == "would_refuse")
            .count(),
        5,
        "{lines:?}"
    );

    // The same tenant in strict mode refuses the client without a certificate.
    let strict = gate_config(&pki, &gate, upstream, "", "#passthrough\n");
    let (_strict, addr, _) = start_gate(&pki, &strict, "strict.toml");
    let (status, body) = curl(&["--cacert", &root, &format!("https://{addr}/x")]);
    assert_eq!(status, 0, "{body}");
    let (status, body) = call(&pki, addr, &other, "GET", "/x", &[]);
    assert_eq!(status, 403, "{body}");
}

#[test]
fn a_tenant_accepts_only_its_configured_suites_and_groups() {
    let (pki, gate) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/client", &[]);
    let tenant = "cipher_suites = [\"TLS_AES_256_GCM_SHA384\"]\ngroups = [\"secp384r1\"]";
    let config = gate_config(&pki, &gate, http_echo(), tenant, "#passthrough\n");
    let (_gate, addr, admin) = start_gate(&pki, &config, "gate.toml");
    let cert = p(&client.with_extension("crt"));
    let key = p(&client.with_extension("key"));
    let id = [
        "-cert",
        cert.as_str(),
        "-cert_chain",
        cert.as_str(),
        "-key",
        key.as_str(),
    ];
    let (_, out) = s_client_with(addr, "localhost", &pki.root(), "", &id);
    assert!(out.contains("TLS_AES_256_GCM_SHA384"), "{out}");
    assert!(out.contains("secp384r1"), "{out}");
    let with = |more: &[&str]| {
        let args: Vec<&str> = id.iter().chain(more).copied().collect();
        s_client_with(addr, "localhost", &pki.root(), "", &args)
    };
    let (ok, out) = with(&["-ciphersuites", "TLS_AES_128_GCM_SHA256"]);
    assert!(!ok && !out.contains("Cipher is TLS_AES_128"), "{out}");
    let (ok, out) = with(&["-groups", "X25519"]);
    assert!(!ok && !out.contains("Server Temp Key"), "{out}");
    let m = metrics(admin);
    assert!(
        metric(
            &m,
            "ward_gate_handshakes_total",
            &[
                ("result", "success"),
                ("tenant", "api"),
                ("cipher", "TLS13_AES_256_GCM_SHA384"),
                ("group", "secp384r1")
            ]
        ) >= 1.0,
        "{m}"
    );

    // An unknown suite is a configuration error, named.
    let bad = gate_config(
        &pki,
        &gate,
        http_echo(),
        "cipher_suites = [\"TLS_RC4\"]",
        "#passthrough\n",
    );
    let path = pki.path("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = common::ward(&["gate", "serve", "--config", &p(&path), "--check-config"]);
    assert!(!out.status.success());
    let text = common::OutputText::stderr_text(&out);
    assert!(
        text.contains("unknown or unavailable cipher suite \"TLS_RC4\""),
        "{text}"
    );
}

#[test]
fn promtool_checks_and_tests_the_shipped_alert_rules() {
    assets::promtool_rules();
}

#[test]
fn alerts_and_dashboard_name_only_metrics_ward_exports() {
    assets::every_metric_exists();
}
