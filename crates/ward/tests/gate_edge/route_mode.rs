//! Audit mode per route: one tenant, an audit route and a strict route,
//! judged with curl and `openssl s_client`.

use std::net::SocketAddr;

use serde_json::Value;

use crate::common::Pki;
use crate::harness::{call, curl, http_echo, p, pki_with_gate};
use crate::support::{audit_lines, metric, metrics, s_client, s_client_with};
use crate::{gate_config, start_gate};

/// One tenant (`tenant_mode`), routes `/audit/` and `/strict/` with the
/// given `mode` lines (empty: the tenant's), both allowing `ns/*`.
fn two_routes(
    pki: &Pki,
    gate: &std::path::Path,
    upstream: SocketAddr,
    log: &str,
    modes: [&str; 3],
) -> String {
    let [tenant, audit, strict] = modes;
    format!(
        r#"
audit_log = {audit_log:?}
[listen]
address = "127.0.0.1:0"
admin = "127.0.0.1:0"
[[tenants]]
name = "api"
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}
{tenant}
[[tenants.routes]]
name = "audit"
path_prefix = "/audit/"
upstream = "http://{upstream}"
{audit}
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
[[tenants.routes]]
name = "strict"
path_prefix = "/strict/"
upstream = "http://{upstream}"
{strict}
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#,
        audit_log = p(&pki.path(log)),
        cert = p(&gate.with_extension("crt")),
        key = p(&gate.with_extension("key")),
        ca = p(&pki.root()),
    )
}

/// The echoed request's header `name`, if the upstream got it.
fn echoed(body: &str, name: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"]
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A 403 body's `error`.
fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn an_audit_route_lets_failures_through_while_a_strict_route_refuses_them() {
    let (pki, gate) = pki_with_gate();
    let upstream = http_echo();
    let allowed = pki.issue("client", "spiffe://example.org/ns/a", &[]);
    let other = pki.issue("client", "spiffe://example.org/other/b", &[]);
    let foreign_ca = Pki::init(&[]);
    let foreign = foreign_ca.issue("client", "spiffe://example.org/ns/a", &[]);
    let root = p(&pki.root());
    // A strict tenant with an audit route, and an audit tenant with a
    // strict route: the same behaviour.
    let shapes = [
        ("strict-tenant", ["", "mode = \"audit\"", ""]),
        (
            "audit-tenant",
            ["mode = \"audit\"", "", "mode = \"strict\""],
        ),
    ];
    for (name, modes) in shapes {
        let log = format!("{name}.log");
        let config = two_routes(&pki, &gate, upstream, &log, modes);
        let (_gate, addr, admin) = start_gate(&pki, &config, &format!("{name}.toml"));
        let url = |path: &str| format!("https://{addr}{path}");

        // No certificate (and a forged identity field): the audit route
        // answers with no identity upstream, the strict route refuses, and
        // so does a path no route takes.
        let forged = "x-ward-spiffe-id: spiffe://example.org/ns/admin";
        let (status, body) = curl(&["--cacert", &root, "-H", forged, &url("/audit/x")]);
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(echoed(&body, "x-ward-spiffe-id"), None, "{name}: {body}");
        assert_eq!(echoed(&body, "x-forwarded-client-cert"), None, "{body}");
        let (status, body) = curl(&["--cacert", &root, &url("/strict/x")]);
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(error_of(&body), "no_certificate", "{name}: {body}");
        let (status, body) = curl(&["--cacert", &root, &url("/elsewhere")]);
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(error_of(&body), "no_certificate", "{name}: {body}");
        let m = metrics(admin);
        let would =
            |reason: &str| metric(&m, "ward_gate_would_refuse_total", &[("reason", reason)]);
        assert_eq!(would("no_certificate"), 1.0, "{name}: {m}");
        assert_eq!(would("unknown_ca"), 0.0, "{name}: {m}");

        // A certificate from another CA: the same, with its reason.
        let foreign_call = |path: &str| {
            call(
                &foreign_ca,
                addr,
                &foreign,
                "GET",
                path,
                &["--cacert", &root],
            )
        };
        let (status, body) = foreign_call("/audit/x");
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(echoed(&body, "x-ward-spiffe-id"), None, "{name}: {body}");
        assert_eq!(echoed(&body, "x-forwarded-client-cert"), None, "{body}");
        let (status, body) = foreign_call("/strict/x");
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(error_of(&body), "unknown_ca", "{name}: {body}");

        // A verified certificate: both routes, with its identity.
        for path in ["/audit/x", "/strict/x"] {
            let (status, body) = call(&pki, addr, &allowed, "GET", path, &[]);
            assert_eq!(status, 200, "{name} {path}: {body}");
            assert_eq!(
                echoed(&body, "x-ward-spiffe-id").as_deref(),
                Some("spiffe://example.org/ns/a"),
                "{name} {path}: {body}"
            );
            assert!(
                echoed(&body, "x-forwarded-client-cert").is_some(),
                "{name} {path}: {body}"
            );
        }
        // A verified identity the rules do not admit: through and counted
        // on the audit route, refused on the strict one.
        let (status, body) = call(&pki, addr, &other, "GET", "/audit/x", &[]);
        assert_eq!(status, 200, "{name}: {body}");
        let (status, body) = call(&pki, addr, &other, "GET", "/strict/x", &[]);
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(error_of(&body), "forbidden", "{name}: {body}");

        // openssl s_client with no certificate: the handshake completes
        // (no alert) and the strict route answers 403 on the connection.
        let request = "GET /strict/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r";
        let (_, out) = s_client(addr, "localhost", &pki.root(), request);
        assert!(!out.contains("alert"), "{name}: {out}");
        assert!(out.contains("HTTP/1.1 403"), "{name}: {out}");
        assert!(out.contains("no_certificate"), "{name}: {out}");

        let m = metrics(admin);
        let would =
            |reason: &str| metric(&m, "ward_gate_would_refuse_total", &[("reason", reason)]);
        assert_eq!(would("no_certificate"), 1.0, "{name}: {m}");
        assert_eq!(would("unknown_ca"), 1.0, "{name}: {m}");
        assert_eq!(would("policy_denied"), 3.0, "{name}: {m}");
        // no certificate, unknown CA, disallowed identity, s_client.
        assert_eq!(
            metric(
                &m,
                "ward_gate_denied_total",
                &[("tenant", "api"), ("route", "strict")]
            ),
            4.0,
            "{name}: {m}"
        );
        assert_eq!(
            metric(&m, "ward_gate_denied_total", &[("route", "-")]),
            1.0,
            "{name}: {m}"
        );
        assert_eq!(
            metric(
                &m,
                "ward_gate_handshakes_total",
                &[("result", "failure"), ("tenant", "api")]
            ),
            0.0,
            "{name}: {m}"
        );

        // The audit lines name the route of each would-be refusal, and the
        // strict route's refusals carry their reason.
        let lines = audit_lines(&pki.path(&log));
        let would_refuse: Vec<(&str, &str)> = lines
            .iter()
            .filter(|l| l["event"] == "would_refuse")
            .map(|l| {
                (
                    l["route"].as_str().unwrap_or("-"),
                    l["reason"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            would_refuse,
            [
                ("audit", "no_certificate"),
                ("audit", "policy_denied"),
                ("audit", "unknown_ca"),
                ("audit", "policy_denied"),
                ("audit", "policy_denied"),
            ],
            "{name}: {lines:?}"
        );
        let refused: Vec<(&str, &str, u64)> = lines
            .iter()
            .filter(|l| l["event"] == "request" && l["result"] == "refused")
            .map(|l| {
                (
                    l["route"].as_str().unwrap_or("?"),
                    l["reason"].as_str().unwrap_or("?"),
                    l["status"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            refused,
            [
                ("strict", "no_certificate", 403),
                ("-", "no_certificate", 403),
                ("strict", "unknown_ca", 403),
                ("strict", "forbidden", 403),
                ("strict", "no_certificate", 403),
            ],
            "{name}: {lines:?}"
        );
    }
}

#[test]
fn a_tenant_without_an_audit_route_still_refuses_in_the_handshake() {
    let (pki, gate) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/a", &[]);
    let config = gate_config(&pki, &gate, http_echo(), "", "#passthrough\n");
    let (_gate, addr, admin) = start_gate(&pki, &config, "strict.toml");
    let request = "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r";

    // No certificate: TLS 1.3's certificate_required alert, no HTTP.
    let (_, out) = s_client(addr, "localhost", &pki.root(), request);
    assert!(out.contains("alert certificate required"), "{out}");
    assert!(!out.contains("HTTP/1.1"), "{out}");

    // A certificate: the request is answered.
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
    let (_, out) = s_client_with(addr, "localhost", &pki.root(), request, &id);
    assert!(out.contains("HTTP/1.1 200"), "{out}");

    let m = metrics(admin);
    assert_eq!(
        metric(
            &m,
            "ward_gate_handshakes_total",
            &[("result", "failure"), ("reason", "no_certificate")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "ward_gate_would_refuse_total", &[]), 0.0, "{m}");
}

/// A DER CRL signed by `issuer` (`.crt`/`.key` PEM) with Python's
/// `cryptography`, listing the serial of the certificate in `revoked`.
const SIGN_CRL: &str = r#"
import sys, datetime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
issuer = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
leaf = x509.load_pem_x509_certificate(open(sys.argv[3], "rb").read())
now = datetime.datetime.now(datetime.timezone.utc)
crl = (x509.CertificateRevocationListBuilder()
       .issuer_name(issuer.subject)
       .last_update(now - datetime.timedelta(seconds=60))
       .next_update(now + datetime.timedelta(hours=1))
       .add_extension(x509.CRLNumber(1), critical=False)
       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
       .add_revoked_certificate(x509.RevokedCertificateBuilder()
           .serial_number(leaf.serial_number).revocation_date(now).build())
       .sign(key, hashes.SHA256()))
sys.stdout.buffer.write(crl.public_bytes(serialization.Encoding.DER))
"#;

#[test]
fn a_revoked_certificate_is_refused_by_the_strict_route_and_counted_by_the_audit_route() {
    let (pki, gate) = pki_with_gate();
    let upstream = http_echo();
    let good = pki.issue("client", "spiffe://example.org/ns/good", &[]);
    let revoked = pki.issue("client", "spiffe://example.org/ns/revoked", &[]);
    // The intermediate (the CRL's signer) is in the client CA bundle.
    let intermediate = pki.path("ca/intermediate.crt");
    let bundle = pki.path("clients-ca.pem");
    let pem = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    std::fs::write(&bundle, pem(&pki.root()) + &pem(&intermediate)).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", SIGN_CRL])
        .arg(&intermediate)
        .arg(pki.path("ca/intermediate.key"))
        .arg(revoked.with_extension("crt"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crl = pki.path("clients.crl");
    std::fs::write(&crl, &out.stdout).unwrap();

    let modes = ["", "mode = \"audit\"", ""];
    let config = two_routes(&pki, &gate, upstream, "revoked.log", modes).replace(
        &format!("client_ca = {:?}", p(&pki.root())),
        &format!("client_ca = {:?}", p(&bundle)),
    ) + &format!("[revocation]\ncrl = [{:?}]\n", p(&crl));
    let (_gate, addr, admin) = start_gate(&pki, &config, "revoked.toml");

    for path in ["/audit/x", "/strict/x"] {
        let (status, body) = call(&pki, addr, &good, "GET", path, &[]);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            echoed(&body, "x-ward-spiffe-id").is_some(),
            "{path}: {body}"
        );
    }
    let (status, body) = call(&pki, addr, &revoked, "GET", "/audit/x", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body, "x-ward-spiffe-id"), None, "{body}");
    assert_eq!(echoed(&body, "x-forwarded-client-cert"), None, "{body}");
    let (status, body) = call(&pki, addr, &revoked, "GET", "/strict/x", &[]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_of(&body), "revoked", "{body}");

    let m = metrics(admin);
    assert_eq!(
        metric(&m, "ward_gate_would_refuse_total", &[("reason", "revoked")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ward_gate_denied_total",
            &[("tenant", "api"), ("route", "strict")]
        ),
        1.0,
        "{m}"
    );
}
