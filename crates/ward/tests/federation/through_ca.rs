//! The `https_spiffe` profile and the CA following partners (issue 24):
//! example.org's CA follows partner.example's bundle endpoint, which it
//! authenticates by the endpoint's X509-SVID (`spiffe://partner.example/
//! ward/ca`) under partner.example's roots; example.org's gate (with
//! `[identity]`) and agent (no `--federate`) learn partner.example's bundle
//! from their own CA (`GET /v1/federation`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{OutputText, Pki, ward};
use crate::harness::{Proc, READY, http_echo, p, write_private};
use crate::scenarios::{
    ONE_REFRESH, fetch_bundle, forge, relay_serves, serial_of, serve_ca, serve_ca_at, start_gate,
    status, two_domains, wait_status,
};

const ENDPOINT_ID: &str = "spiffe://partner.example/ward/ca";

/// The first line of `proc`'s stderr holding `needle`, seen already or
/// within `within`.
fn logged(proc: &Proc, needle: &str, within: Duration) -> String {
    match proc.stderr().lines().find(|l| l.contains(needle)) {
        Some(line) => line.to_owned(),
        None => proc.wait_for(needle, within),
    }
}

/// ca.toml of `pki` with a 1 s bundle hint and, when given, this
/// `[federation."partner.example"]` table.
fn set_federation(pki: &Pki, partner: Option<String>) {
    let toml = pki.path("ca/ca.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let base = text
        .split("\n[federation.")
        .next()
        .unwrap()
        .replace("refresh_hint = \"60s\"", "refresh_hint = \"1s\"");
    let text = match partner {
        Some(table) => format!("{base}\n[federation.\"partner.example\"]\n{table}"),
        None => base,
    };
    std::fs::write(&toml, text).unwrap();
}

/// The https_spiffe relationship to partner.example's endpoint at `url`,
/// bootstrapped with `bundle`.
fn spiffe_partner(url: &str, bundle: &Path) -> String {
    format!(
        "bundle_endpoint_url = {url:?}\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"{ENDPOINT_ID}\"\nbundle = {:?}\nrefresh_floor = \"1s\"\n",
        p(bundle)
    )
}

/// A token for `id` from `pki`'s CA, written to a private file.
fn token_file(pki: &Pki, id: &str, name: &str) -> PathBuf {
    let out = ward(&[
        "token",
        "create",
        "--dir",
        pki.ca_dir(),
        "--spiffe-id",
        id,
        "--uses",
        "0",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let token: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let file = pki.path(name);
    write_private(&file, token["token"].as_str().unwrap());
    file
}

/// The gate of example.org with `[identity]` from its CA at `ca`: its
/// tenant trusts the identity's bundle (no client_ca, no federation entry)
/// and allows both trust domains.
fn identity_gate(ours: &Pki, ca: SocketAddr) -> (Proc, SocketAddr) {
    let cert = ours.issue(
        "server",
        "spiffe://example.org/gate",
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    );
    let token = token_file(ours, "spiffe://example.org/gate", "gate-token");
    let config = ours.path("gate.toml");
    std::fs::write(
        &config,
        format!(
            "audit_log = \"off\"\n[listen]\naddress = \"127.0.0.1:0\"\n[identity]\nca = \"https://{ca}\"\nca_bundle = {:?}\ntoken_file = {:?}\n[[tenants]]\nname = \"api\"\ncert = {:?}\nkey = {:?}\n[[tenants.routes]]\nname = \"all\"\nupstream = \"http://{}\"\n[tenants.routes.allow]\nspiffe_ids = [\"spiffe://example.org/*\", \"spiffe://partner.example/*\"]\n",
            p(&ours.root()),
            p(&token),
            p(&cert.with_extension("crt")),
            p(&cert.with_extension("key")),
            http_echo(),
        ),
    )
    .unwrap();
    start_gate(&config)
}

#[test]
fn a_partner_followed_by_our_ca_over_https_spiffe_reaches_our_gate_and_agent_until_removed() {
    let (ours, partner) = two_domains();
    let (_ca_a, a) = serve_ca(&partner);
    // The partner's endpoint is authenticated by its SVID: the bootstrap
    // bundle is the partner's root, obtained out of band (here: the file).
    let bootstrap = ours.path("partner-bootstrap.pem");
    std::fs::copy(partner.root(), &bootstrap).unwrap();
    set_federation(
        &ours,
        Some(spiffe_partner(
            &format!("https://{a}/v1/bundle"),
            &bootstrap,
        )),
    );
    let (ca_b, b) = serve_ca(&ours);
    let line = logged(&ca_b, "federated bundle updated", ONE_REFRESH);
    assert!(
        line.contains("partner.example") && line.contains("https_spiffe"),
        "{line}"
    );

    // The CA hands the bundles to identities of its own trust domain only.
    let no_cert = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ours.root())
        .arg(format!("https://{b}/v1/federation"))
        .output()
        .unwrap();
    assert_eq!(no_cert.stdout_text(), "401");

    let (gate, addr) = identity_gate(&ours, b);
    let billing = partner.issue("client", "spiffe://partner.example/billing", &[]);
    let own = ours.issue("client", "spiffe://example.org/app", &[]);
    wait_status(&ours, addr, &billing, 200, ONE_REFRESH);
    assert!(
        gate.stderr()
            .contains("federated bundles from the CA updated"),
        "{}",
        gate.stderr()
    );
    assert_eq!(status(&ours, addr, &own), 200);
    // Trust stays bound to the trust domain.
    let forged_partner = forge(&ours, "spiffe://partner.example/billing", "claims-partner");
    let forged_ours = forge(&partner, "spiffe://example.org/app", "claims-ours");
    assert_eq!(status(&ours, addr, &forged_partner), 0);
    assert_eq!(status(&ours, addr, &forged_ours), 0);

    // An agent with no --federate flag serves the partner bundle it got
    // from the CA; py-spiffe reads it.
    let token = token_file(&ours, "spiffe://example.org/app", "agent-token");
    let socket = ours.path("agent.sock");
    let agent = Proc::spawn(&[
        "agent",
        "run",
        "--ca",
        &format!("https://{b}"),
        "--ca-bundle",
        &p(&ours.root()),
        "--token-file",
        &p(&token),
        "--socket",
        &p(&socket),
        "--federation-refresh-floor",
        "1s",
    ]);
    agent.wait_for("workload API listening", READY);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/federation/pyspiffe_federated.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&socket)
        .arg("partner.example")
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", out.stderr_text());
    let seen: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert!(
        seen.get("timeout").is_none(),
        "{seen}\nagent:\n{}",
        agent.stderr()
    );
    let partner_serial = serial_of(&partner.root());
    for set in ["context", "x509_bundles"] {
        assert_eq!(
            seen[set]["partner.example"],
            serde_json::json!([partner_serial]),
            "{seen}"
        );
        assert_eq!(
            seen[set]["example.org"],
            serde_json::json!([serial_of(&ours.root())]),
            "{seen}"
        );
    }
    let kid = fetch_bundle(a, &partner.root())["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "jwt-svid")
        .unwrap()["kid"]
        .clone();
    assert_eq!(
        seen["jwt_bundles"]["partner.example"],
        serde_json::json!([kid]),
        "{seen}"
    );

    // The relationship removed from ca.toml and the CA restarted (same
    // address): the gate refuses the partner within one refresh, and the
    // agent drops its bundle.
    set_federation(&ours, None);
    drop(ca_b);
    let (_ca_b, _) = serve_ca_at(&ours, &b.to_string());
    let removed_at = Instant::now();
    wait_status(&ours, addr, &billing, 0, ONE_REFRESH);
    eprintln!(
        "partner refused {:?} after the CA restarted without it",
        removed_at.elapsed()
    );
    assert_eq!(status(&ours, addr, &own), 200);
    agent.wait_for("trust_domains=[]", ONE_REFRESH);
}

/// A self-signed web PKI-style certificate (DNS name only, no SPIFFE ID)
/// at `prefix`.crt/.key, made by openssl.
fn web_certificate(prefix: &Path) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(prefix.with_extension("key"))
        .arg("-out")
        .arg(prefix.with_extension("crt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_text());
}

#[test]
fn https_spiffe_endpoints_with_the_wrong_svid_are_refused_with_the_reason() {
    let (ours, partner) = two_domains();
    let (_ca_a, a) = serve_ca(&partner);
    let bundle = fetch_bundle(a, &partner.root());

    // The relay presents, by name: the right SVID, a partner SVID of the
    // wrong ID, our SVID (a root not in the partner's bundle), and a web
    // PKI certificate.
    let dir = partner.path("relay");
    std::fs::create_dir(&dir).unwrap();
    for (name, pki, id) in [
        ("good", &partner, ENDPOINT_ID),
        ("wrong-id", &partner, "spiffe://partner.example/relay"),
        ("wrong-root", &ours, "spiffe://example.org/ward/ca"),
    ] {
        let prefix = pki.issue("server", id, &["--ip", "127.0.0.1", "--allow-reserved"]);
        for ext in ["crt", "key"] {
            std::fs::copy(
                prefix.with_extension(ext),
                dir.join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
    }
    web_certificate(&dir.join("web"));
    relay_serves(&dir, "tls", b"good");
    relay_serves(&dir, "body", bundle.to_string().as_bytes());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/federation/relay.py");
    let mut relay = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let relay_addr: SocketAddr = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(relay.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim()
            .strip_prefix("relay: listening on ")
            .unwrap_or_else(|| panic!("relay said {line:?}"))
            .parse()
            .unwrap()
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _relay = Kill(relay);

    // Our CA follows the relay with the https_spiffe profile.
    set_federation(
        &ours,
        Some(spiffe_partner(
            &format!("https://{relay_addr}/bundle"),
            &partner.root(),
        )),
    );
    let (ca_b, _b) = serve_ca(&ours);
    logged(&ca_b, "federated bundle updated", ONE_REFRESH);
    for (tls, reason) in [
        (
            "wrong-id",
            "SPIFFE ID is spiffe://partner.example/relay, expected endpoint_spiffe_id spiffe://partner.example/ward/ca",
        ),
        (
            "wrong-root",
            "does not chain to a root of partner.example's bundle",
        ),
        ("web", "not an X509-SVID"),
    ] {
        relay_serves(&dir, "tls", tls.as_bytes());
        let line = ca_b.wait_for(reason, ONE_REFRESH);
        assert!(
            line.contains("WARN")
                && line.contains("federated bundle refused")
                && line.contains("partner.example"),
            "{tls}: {line}"
        );
    }
    // And the right SVID is accepted again.
    relay_serves(&dir, "tls", b"good");
    let mut moved = bundle.clone();
    moved["spiffe_sequence"] = serde_json::json!(bundle["spiffe_sequence"].as_u64().unwrap() + 1);
    relay_serves(&dir, "body", moved.to_string().as_bytes());
    ca_b.wait_for("federated bundle updated", ONE_REFRESH);
}

#[test]
fn bad_https_spiffe_settings_stop_the_ca_at_start() {
    let (ours, partner) = two_domains();
    for (table, why) in [
        (
            format!(
                "bundle_endpoint_url = \"https://127.0.0.1:1/v1/bundle\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://example.org/ward/ca\"\nbundle = {:?}\n",
                p(&partner.root())
            ),
            "not in trust domain",
        ),
        (
            "bundle_endpoint_url = \"https://127.0.0.1:1/v1/bundle\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/ward/ca\"\nbundle = \"missing.pem\"\n".to_owned(),
            "missing.pem",
        ),
        (
            "bundle_endpoint_url = \"http://127.0.0.1:1/v1/bundle\"\n".to_owned(),
            "must be an https:// URL",
        ),
    ] {
        set_federation(&ours, Some(table));
        let out = ward(&[
            "ca",
            "serve",
            "--dir",
            ours.ca_dir(),
            "--listen",
            "127.0.0.1:0",
        ]);
        assert!(!out.status.success());
        assert!(out.stderr_text().contains(why), "{why}: {}", out.stderr_text());
    }
}

#[test]
fn an_agent_follows_an_https_spiffe_endpoint_named_on_its_command_line() {
    let (ours, partner) = two_domains();
    let (_ca_a, a) = serve_ca(&partner);
    let (_ca_b, b) = serve_ca(&ours);
    let token = token_file(&ours, "spiffe://example.org/app", "agent-token");
    let socket = ours.path("agent.sock");
    let url = format!("partner.example=https://{a}/v1/bundle");
    let id = format!("partner.example={ENDPOINT_ID}");
    let bundle = format!("partner.example={}", p(&partner.root()));
    let ca = format!("https://{b}");
    let (root, token, socket_arg) = (p(&ours.root()), p(&token), p(&socket));
    let base = [
        "agent",
        "run",
        "--ca",
        &ca,
        "--ca-bundle",
        &root,
        "--token-file",
        &token,
        "--socket",
        &socket_arg,
        "--no-ca-federation",
        "--federation-refresh-floor",
        "1s",
        "--federate",
        &url,
    ];
    // Half of the https_spiffe settings, or a missing bootstrap bundle:
    // refused before anything starts.
    let missing = format!("partner.example={}", p(&ours.path("missing.pem")));
    for (extra, why) in [
        (
            vec!["--federation-spiffe-id", id.as_str()],
            "needs both --federation-spiffe-id and --federation-bundle",
        ),
        (
            vec![
                "--federation-spiffe-id",
                id.as_str(),
                "--federation-bundle",
                missing.as_str(),
            ],
            "missing.pem",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(extra);
        let out = ward(&args);
        assert!(!out.status.success());
        assert!(
            out.stderr_text().contains(why),
            "{why}: {}",
            out.stderr_text()
        );
    }
    let mut args = base.to_vec();
    args.extend([
        "--federation-spiffe-id",
        id.as_str(),
        "--federation-bundle",
        bundle.as_str(),
    ]);
    let agent = Proc::spawn(&args);
    agent.wait_for("workload API listening", READY);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/federation/pyspiffe_federated.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&socket)
        .arg("partner.example")
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", out.stderr_text());
    let seen: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(
        seen["context"]["partner.example"],
        serde_json::json!([serial_of(&partner.root())]),
        "{seen}\nagent:\n{}",
        agent.stderr()
    );
    let line = logged(&agent, "federated bundle updated", READY);
    assert!(line.contains("https_spiffe"), "{line}");
}

#[test]
fn a_gate_tenant_follows_an_https_spiffe_endpoint() {
    let (ours, partner) = two_domains();
    let (_ca_a, a) = serve_ca(&partner);
    let gate_cert = ours.issue(
        "server",
        "spiffe://example.org/gate",
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    );
    let root = p(&partner.root());
    let text = crate::scenarios::gate_config(
        &ours,
        &gate_cert,
        &partner.root(),
        Some(&format!("https://{a}/v1/bundle")),
    );
    let ca_bundle = format!("ca_bundle = {root:?}\n");
    assert!(text.contains(&ca_bundle), "{text}");
    let config = ours.path("gate.toml");
    // ca_bundle belongs to https_web: refused with https_spiffe.
    std::fs::write(
        &config,
        text.replace(
            &ca_bundle,
            &format!("{ca_bundle}profile = \"https_spiffe\"\n"),
        ),
    )
    .unwrap();
    let out = ward(&["gate", "serve", "--config", &p(&config), "--check-config"]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("ca_bundle belongs to profile"),
        "{}",
        out.stderr_text()
    );
    std::fs::write(
        &config,
        text.replace(
            &ca_bundle,
            &format!(
                "profile = \"https_spiffe\"\nendpoint_spiffe_id = \"{ENDPOINT_ID}\"\nbundle = {root:?}\n"
            ),
        ),
    )
    .unwrap();
    let (gate, addr) = start_gate(&config);
    let billing = partner.issue("client", "spiffe://partner.example/billing", &[]);
    wait_status(&ours, addr, &billing, 200, ONE_REFRESH);
    let line = logged(&gate, "federated bundle updated", READY);
    assert!(line.contains("https_spiffe"), "{line}");
}
