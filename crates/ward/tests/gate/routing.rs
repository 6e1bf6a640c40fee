//! Authorization and forwarding: allowed and disallowed SPIFFE IDs, the
//! identity headers the upstream sees (and the spoofed ones it never sees),
//! HTTP/2 in and HTTP/1.1 out, TCP mode, and an mTLS `https` upstream.

use std::path::PathBuf;

use serde_json::Value;

use crate::clients::{curl_as, s_client};
use crate::harness::{Gate, Pki, crt, key, mint, openssl_fingerprint, s, server_cert};
use crate::upstream::{Echo, LineEcho};

/// A CA with a gate server certificate and two clients:
/// `spiffe://example.org/ns/app` and `spiffe://example.org/other/intruder`.
struct Setup {
    pki: Pki,
    server: PathBuf,
    app: PathBuf,
    intruder: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let pki = Pki::init(&[]);
        let server = server_cert(&pki, "spiffe://example.org/gate", "gate");
        let app = mint(&pki, "client", "spiffe://example.org/ns/app", "app", &[]);
        let intruder = mint(
            &pki,
            "client",
            "spiffe://example.org/other/intruder",
            "intruder",
            &[],
        );
        Setup {
            pki,
            server,
            app,
            intruder,
        }
    }

    fn root(&self) -> String {
        s(&self.pki.root())
    }

    /// A flag-form gate to `upstream` allowing `spiffe://example.org/ns/*`.
    fn gate(&self, upstream: &str, extra: &[&str]) -> Gate {
        let (c, k, r) = (crt(&self.server), key(&self.server), self.root());
        let mut args = vec![
            "--cert",
            &c,
            "--key",
            &k,
            "--client-ca",
            &r,
            "--upstream",
            upstream,
            "--allow-spiffe-id",
            "spiffe://example.org/ns/*",
        ];
        args.extend_from_slice(extra);
        Gate::flags(&args)
    }
}

/// The values of header `name` the upstream saw.
fn seen(echo_body: &Value, name: &str) -> Vec<String> {
    echo_body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap().to_owned())
        .collect()
}

const SPOOFED: [&str; 6] = [
    "-H",
    "X-Forwarded-Client-Cert: Hash=00;URI=spiffe://example.org/ops/admin",
    "-H",
    "x-ward-spiffe-id: spiffe://example.org/ops/admin",
    "-H",
    "X-Ward-Role: admin",
];

#[test]
fn an_allowed_identity_gets_through_with_xfcc_and_spoofed_headers_are_dropped() {
    let setup = Setup::new();
    let echo = Echo::start();
    let gate = setup.gate(&echo.url(), &[]);
    let root = setup.root();
    let hash = openssl_fingerprint(&crt(&setup.app));
    for http in ["--http1.1", "--http2"] {
        let url = format!("{}/api/items?x=1", gate.url());
        let r = curl_as(
            &root,
            &crt(&setup.app),
            &key(&setup.app),
            &[&SPOOFED[..], &[http, url.as_str()]].concat(),
        );
        assert_eq!((r.code, r.status), (0, 200), "{r:?}");
        let up = r.json();
        assert_eq!(up["path"], "/api/items", "{up}");
        let xfcc = seen(&up, "x-forwarded-client-cert");
        assert_eq!(xfcc.len(), 1, "{up}");
        let parts: Vec<&str> = xfcc[0].split(';').collect();
        assert!(
            parts.contains(&format!("Hash={hash}").as_str()),
            "{xfcc:?} vs {hash}"
        );
        assert!(
            parts.contains(&"URI=spiffe://example.org/ns/app"),
            "{xfcc:?}"
        );
        assert!(parts.contains(&"By=spiffe://example.org/gate"), "{xfcc:?}");
        assert!(!xfcc[0].contains("ops/admin"), "{xfcc:?}");
        assert_eq!(
            seen(&up, "x-ward-spiffe-id"),
            ["spiffe://example.org/ns/app"],
            "{up}"
        );
        let ward_headers: Vec<String> = up["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_str().unwrap().to_owned())
            .filter(|h| h.starts_with("x-ward-"))
            .collect();
        assert_eq!(ward_headers, ["x-ward-spiffe-id"], "{up}");
        assert_eq!(seen(&up, "x-forwarded-proto"), ["https"]);
        assert_eq!(seen(&up, "x-forwarded-for"), ["127.0.0.1"]);
    }
    assert_eq!(echo.hits(), 2);

    // A valid certificate whose SPIFFE ID no rule admits: 403, JSON, no upstream.
    let r = curl_as(
        &root,
        &crt(&setup.intruder),
        &key(&setup.intruder),
        &["-i", &gate.url()],
    );
    assert_eq!((r.code, r.status), (0, 403), "{r:?}");
    let (head, body) = r.body.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let err: Value = serde_json::from_str(body).unwrap();
    assert_eq!(err["error"], "forbidden", "{err}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{err}"
    );
    assert_eq!(echo.hits(), 2, "a denied request reached the upstream");
    gate.wait_metric("ward_gate_requests_total", &[("status", "403")], 1.0);

    let audit = gate.finish();
    let denied = audit
        .iter()
        .find(|v| v["event"] == "request" && v["status"] == 403)
        .expect("an audit line for the 403");
    assert_eq!(denied["spiffe_id"], "spiffe://example.org/other/intruder");
    assert_eq!(denied["reason"], "forbidden");
    assert_eq!(denied["result"], "refused");
}

#[test]
fn an_h2_client_reaches_an_h1_upstream() {
    let setup = Setup::new();
    let echo = Echo::start();
    let gate = setup.gate(&echo.url(), &[]);
    let r = curl_as(
        &setup.root(),
        &crt(&setup.app),
        &key(&setup.app),
        &[
            "--http2",
            "-X",
            "POST",
            "-d",
            "hello",
            &format!("{}/h2", gate.url()),
        ],
    );
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert_eq!(
        r.http_version, "2",
        "the client did not speak HTTP/2: {r:?}"
    );
    let up = r.json();
    assert_eq!(up["version"], "HTTP/1.1", "{up}");
    assert_eq!(up["method"], "POST", "{up}");
    assert_eq!(seen(&up, "content-length"), ["5"], "{up}");
    gate.wait_metric(
        "ward_gate_handshakes_total",
        &[("result", "success"), ("alpn", "h2")],
        1.0,
    );
    gate.finish();
}

#[test]
fn tcp_mode_proxies_a_line_protocol_and_closes_on_a_disallowed_identity() {
    let setup = Setup::new();
    let lines = LineEcho::start();
    let gate = setup.gate(&format!("tcp://{}", lines.addr), &[]);
    let root = setup.root();
    let (out, err) = s_client(
        gate.addr,
        &root,
        Some(&crt(&setup.app)),
        Some(&key(&setup.app)),
        &[],
        "hello\nworld\nbye\n",
    );
    assert_eq!(out, "echo: hello\necho: world\n", "{err}");
    assert_eq!(lines.connections(), 1);

    let (out, err) = s_client(
        gate.addr,
        &root,
        Some(&crt(&setup.intruder)),
        Some(&key(&setup.intruder)),
        &[],
        "hello\nbye\n",
    );
    assert_eq!(out, "", "a disallowed identity got data back: {err}");
    let audit = gate.finish();
    assert_eq!(
        lines.connections(),
        1,
        "a disallowed identity reached the upstream"
    );
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|v| v["event"] == "connection" && v["result"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{audit:?}");
    assert_eq!(
        refused[0]["spiffe_id"],
        "spiffe://example.org/other/intruder"
    );
}

#[test]
fn an_https_upstream_that_requires_client_certificates_sees_the_gates_identity() {
    let setup = Setup::new();
    let echo = Echo::start();
    // The upstream is a second gate: it wants a client certificate from the
    // same CA and admits only the first gate's identity.
    let inner_server = server_cert(&setup.pki, "spiffe://example.org/inner", "inner");
    let outer_id = mint(
        &setup.pki,
        "client",
        "spiffe://example.org/gate/outer",
        "outer",
        &[],
    );
    let root = setup.root();
    let (ic, ik, up) = (crt(&inner_server), key(&inner_server), echo.url());
    let inner = Gate::flags(&[
        "--cert",
        &ic,
        "--key",
        &ik,
        "--client-ca",
        &root,
        "--upstream",
        &up,
        "--allow-spiffe-id",
        "spiffe://example.org/gate/outer",
    ]);
    let inner_url = format!("https://127.0.0.1:{}", inner.port());
    let (oc, ok) = (crt(&outer_id), key(&outer_id));
    let outer = setup.gate(
        &inner_url,
        &[
            "--upstream-ca",
            &root,
            "--upstream-cert",
            &oc,
            "--upstream-key",
            &ok,
        ],
    );

    let r = curl_as(
        &root,
        &crt(&setup.app),
        &key(&setup.app),
        &[&format!("{}/through", outer.url())],
    );
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    let seen_up = r.json();
    assert_eq!(seen_up["path"], "/through");
    assert_eq!(
        seen(&seen_up, "x-ward-spiffe-id"),
        ["spiffe://example.org/gate/outer"],
        "{seen_up}"
    );
    let xfcc = seen(&seen_up, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "{seen_up}");
    assert!(
        xfcc[0].contains(&format!("Hash={}", openssl_fingerprint(&oc))),
        "{xfcc:?}"
    );
    assert!(
        xfcc[0].starts_with("By=spiffe://example.org/inner;"),
        "{xfcc:?}"
    );

    // Without the gate's client certificate the upstream refuses: 502.
    let bare = setup.gate(&inner_url, &["--upstream-ca", &root]);
    let r = curl_as(&root, &crt(&setup.app), &key(&setup.app), &[&bare.url()]);
    assert_eq!((r.code, r.status), (0, 502), "{r:?}");
    assert_eq!(r.json()["error"], "bad_gateway");
    inner.wait_metric(
        "ward_gate_handshakes_total",
        &[("result", "failure"), ("reason", "no_certificate")],
        1.0,
    );
    assert_eq!(echo.hits(), 1);
    bare.finish();
    outer.finish();
    inner.finish();
}

/// Issue 14 item 8: an `https://` upstream refused for its certificate is
/// logged with the reason rustls gave (hyper alone says "client error
/// (Connect)"): unknown CA, name mismatch, expired.
#[test]
fn an_https_upstream_refused_for_its_certificate_is_logged_with_the_reason() {
    use ward_testkit::fixture;

    let setup = Setup::new();
    let echo = Echo::start();
    let other = Pki::init(&[]);
    let root = setup.root();
    let up = echo.url();
    let upstream_gate = |cert: &str, key: &str, client_ca: &str| {
        Gate::flags(&[
            "--cert",
            cert,
            "--key",
            key,
            "--client-ca",
            client_ca,
            "--upstream",
            &up,
            "--allow-spiffe-id",
            "spiffe://example.org/*",
        ])
    };
    let inner = server_cert(&setup.pki, "spiffe://example.org/inner", "inner");
    let misnamed = mint(
        &setup.pki,
        "server",
        "spiffe://example.org/misnamed",
        "misnamed",
        &["--dns", "other.example"],
    );
    let fx = |n: &str| s(&fixture(n));
    // The committed key is 0644 in a checkout; the gate serves only 0600 keys.
    let expired_key = ward_testkit::temp_copy(&["expired.key"]);
    let good = upstream_gate(&crt(&inner), &key(&inner), &root);
    let wrong_name = upstream_gate(&crt(&misnamed), &key(&misnamed), &root);
    let expired = upstream_gate(
        &fx("expired.crt"),
        &s(&expired_key.path().join("expired.key")),
        &fx("root.crt"),
    );
    // Another CA with the same names reads as a bad signature to webpki.
    let cases: [(&Gate, String, &[&str]); 3] = [
        (&good, s(&other.root()), &["UnknownIssuer", "BadSignature"]),
        (
            &wrong_name,
            root.clone(),
            &["certificate not valid for name \"127.0.0.1\""],
        ),
        (&expired, fx("root.crt"), &["certificate expired"]),
    ];
    for (upstream, trusted, reasons) in cases {
        let url = format!("https://127.0.0.1:{}", upstream.port());
        let outer = setup.gate(&url, &["--upstream-ca", &trusted]);
        let r = curl_as(&root, &crt(&setup.app), &key(&setup.app), &[&outer.url()]);
        assert_eq!((r.code, r.status), (0, 502), "{reasons:?}: {r:?}");
        let failure = || {
            outer
                .stderr()
                .lines()
                .find(|l| l.contains("upstream request failed"))
                .map(str::to_owned)
        };
        crate::harness::wait_until("the upstream failure to be logged", || failure().is_some());
        let line = failure().unwrap();
        assert!(
            reasons.iter().any(|r| line.contains(r)),
            "expected one of {reasons:?} in {line}"
        );
        assert!(line.contains("invalid peer certificate"), "{line}");
    }
    assert_eq!(echo.hits(), 0);
}
