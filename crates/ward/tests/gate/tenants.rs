//! Tenants by SNI (config file form): each has its own server certificate,
//! client CA and routes; a client of one tenant is refused on the other's
//! name; an unknown name is refused when `unknown_sni = "reject"`.

use std::path::PathBuf;

use crate::clients::{curl_as, python};
use crate::harness::{Gate, Pki, crt, key, mint, s};
use crate::upstream::Echo;

struct Tenant {
    pki: Pki,
    server: PathBuf,
    client: PathBuf,
}

fn tenant(name: &str) -> Tenant {
    let pki = Pki::init(&[]);
    let server = mint(
        &pki,
        "server",
        &format!("spiffe://example.org/{name}-gate"),
        "server",
        &["--dns", &format!("{name}.test")],
    );
    let client = mint(
        &pki,
        "client",
        &format!("spiffe://example.org/ns/{name}-client"),
        "client",
        &[],
    );
    Tenant {
        pki,
        server,
        client,
    }
}

fn tenant_toml(name: &str, t: &Tenant, upstream: &str) -> String {
    format!(
        r#"
[[tenants]]
name = "{name}"
sni = ["{name}.test"]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[[tenants.routes]]
name = "{name}-ops"
path_prefix = "/ops"
upstream = "{upstream}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ops"]

[[tenants.routes]]
name = "{name}-all"
upstream = "{upstream}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#,
        cert = crt(&t.server),
        key = key(&t.server),
        ca = s(&t.pki.root()),
    )
}

#[test]
fn a_client_of_one_tenant_is_refused_on_the_other_tenants_name() {
    let echo = Echo::start();
    let (a, b) = (tenant("a"), tenant("b"));
    let config = a.pki.path("gate.toml");
    let text = format!(
        "unknown_sni = \"reject\"\n[listen]\naddress = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{}{}",
        tenant_toml("a", &a, &echo.url()),
        tenant_toml("b", &b, &echo.url()),
    );
    std::fs::write(&config, text).unwrap();
    let check = crate::harness::ward(&["gate", "serve", "--config", &s(&config), "--check-config"]);
    assert!(check.status.success(), "{check:?}");
    let gate = Gate::config(&config);
    let port = gate.port();
    let on = |name: &str, who: &Tenant, ca: &Tenant, path: &str| {
        let resolve = format!("{name}.test:{port}:127.0.0.1");
        let url = format!("https://{name}.test:{port}{path}");
        curl_as(
            &s(&ca.pki.root()),
            &crt(&who.client),
            &key(&who.client),
            &["--resolve", &resolve, &url],
        )
    };

    // Each client on its own tenant's name: 200 (and each name served its
    // own certificate, since curl trusted only that tenant's root).
    let r = on("a", &a, &a, "/x");
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    let r = on("b", &b, &b, "/x");
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    // Routes are per tenant: /ops admits another identity.
    let r = on("a", &a, &a, "/ops/x");
    assert_eq!((r.code, r.status), (0, 403), "{r:?}");

    // A's client on B's name (trusting B's server): refused in the handshake.
    let r = on("b", &a, &b, "/x");
    assert!(r.code != 0 && r.status == 0, "{r:?}");
    let r = on("a", &b, &a, "/x");
    assert!(r.code != 0 && r.status == 0, "{r:?}");
    gate.wait_metric(
        "ward_gate_handshakes_total",
        &[("result", "failure"), ("reason", "unknown_ca")],
        2.0,
    );

    // Python: A's client on its own name works; an unknown name is refused.
    let a_cert = (crt(&a.client), key(&a.client));
    let py = python(
        gate.addr,
        "a.test",
        &s(&a.pki.root()),
        Some((&a_cert.0, &a_cert.1)),
        "get",
    );
    assert_eq!(py["ok"], true, "{py}");
    assert!(
        py["data"].as_str().unwrap().starts_with("HTTP/1.1 200"),
        "{py}"
    );
    let py = python(
        gate.addr,
        "c.test",
        &s(&a.pki.root()),
        Some((&a_cert.0, &a_cert.1)),
        "get",
    );
    assert_eq!(py["ok"], false, "{py}");
    gate.wait_metric(
        "ward_gate_handshakes_total",
        &[("result", "failure"), ("reason", "unknown_sni")],
        1.0,
    );
    assert_eq!(echo.hits(), 3);

    let audit = gate.finish();
    let tenants: Vec<(&str, &str)> = audit
        .iter()
        .filter(|v| v["event"] == "request")
        .map(|v| (v["tenant"].as_str().unwrap(), v["route"].as_str().unwrap()))
        .collect();
    assert_eq!(
        tenants,
        [
            ("a", "a-all"),
            ("b", "b-all"),
            ("a", "a-ops"),
            ("a", "a-all")
        ]
    );
    let refused_on_b = audit
        .iter()
        .find(|v| v["event"] == "handshake" && v["sni"] == "b.test" && v["result"] == "refused")
        .expect("a refused handshake on b.test");
    assert_eq!(refused_on_b["tenant"], "b");
    assert_eq!(refused_on_b["reason"], "unknown_ca");
}
