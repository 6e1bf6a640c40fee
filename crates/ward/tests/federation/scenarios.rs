//! The federation scenarios and their small helpers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{OutputText, Pki, ward};
use crate::harness::{Proc, READY, call, http_echo, p, replace};

/// How long a change may take to show: one refresh (1 s floor here) plus
/// the rebuild, with room for a loaded machine.
pub(crate) const ONE_REFRESH: Duration = Duration::from_secs(15);

/// Two CAs: ours (example.org) and the partner's (partner.example), whose
/// bundle says `spiffe_refresh_hint` = 1 s.
pub(crate) fn two_domains() -> (Pki, Pki) {
    let ours = Pki::init(&[]);
    let partner = Pki::empty();
    let out = ward(&[
        "ca",
        "init",
        "--dir",
        partner.ca_dir(),
        "--trust-domain",
        "partner.example",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let toml = partner.path("ca/ca.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("refresh_hint = \"60s\""), "{text}");
    std::fs::write(
        &toml,
        text.replace("refresh_hint = \"60s\"", "refresh_hint = \"1s\""),
    )
    .unwrap();
    (ours, partner)
}

/// `ward ca serve` of `pki` on an ephemeral port, and its address.
pub(crate) fn serve_ca(pki: &Pki) -> (Proc, SocketAddr) {
    serve_ca_at(pki, "127.0.0.1:0")
}

/// `ward ca serve` of `pki` on `listen`, and its address.
pub(crate) fn serve_ca_at(pki: &Pki, listen: &str) -> (Proc, SocketAddr) {
    let proc = Proc::spawn(&["ca", "serve", "--dir", pki.ca_dir(), "--listen", listen]);
    let line = proc.wait_for("ward ca: listening on https://", READY);
    let addr = line
        .rsplit("https://")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (proc, addr)
}

/// The gate of example.org: allows both trust domains' workloads, and
/// federates with partner.example at `endpoint` when given.
pub(crate) fn gate_config(
    ours: &Pki,
    gate: &Path,
    partner_root: &Path,
    endpoint: Option<&str>,
) -> String {
    let echo = http_echo();
    let mut text = format!(
        "audit_log = \"off\"\n[listen]\naddress = \"127.0.0.1:0\"\n[[tenants]]\nname = \"api\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
        p(&gate.with_extension("crt")),
        p(&gate.with_extension("key")),
        p(&ours.root()),
    );
    if let Some(url) = endpoint {
        text.push_str(&format!(
            "[[tenants.federation]]\ntrust_domain = \"partner.example\"\nbundle_endpoint_url = {url:?}\nca_bundle = {:?}\nrefresh_floor = \"1s\"\n",
            p(partner_root)
        ));
    }
    text.push_str(&format!(
        "[[tenants.routes]]\nname = \"all\"\nupstream = \"http://{echo}\"\n[tenants.routes.allow]\nspiffe_ids = [\"spiffe://example.org/*\", \"spiffe://partner.example/*\"]\n"
    ));
    text
}

pub(crate) fn start_gate(path: &Path) -> (Proc, SocketAddr) {
    let proc = Proc::spawn(&["gate", "serve", "--config", &p(path)]);
    let addr = proc.ready("ward gate: listening on ");
    (proc, addr)
}

/// The HTTP status `prefix`'s certificate gets from the gate (0: the
/// handshake was refused).
pub(crate) fn status(ours: &Pki, gate: SocketAddr, prefix: &Path) -> u16 {
    call(ours, gate, prefix, "GET", "/", &[]).0
}

pub(crate) fn wait_status(
    ours: &Pki,
    gate: SocketAddr,
    prefix: &Path,
    want: u16,
    within: Duration,
) {
    let end = Instant::now() + within;
    loop {
        let got = status(ours, gate, prefix);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "{} still gets {got}, not {want}, after {within:?}",
            prefix.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A client certificate for `spiffe_id` signed with `pki`'s intermediate by
/// openssl, whatever the CA's trust domain: what a compromised or rogue
/// issuer could make. Returns the prefix (`.crt` = leaf + intermediate).
pub(crate) fn forge(pki: &Pki, spiffe_id: &str, name: &str) -> PathBuf {
    let prefix = pki.path(&format!("forged-{name}"));
    let key = prefix.with_extension("key");
    let csr = prefix.with_extension("csr");
    let leaf = prefix.with_extension("leaf");
    let ext = prefix.with_extension("ext");
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=URI:{spiffe_id}\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            out.stderr_text()
        );
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&key),
        "-subj",
        "/CN=forged",
        "-out",
        &p(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&pki.path("ca/intermediate.crt")),
        "-CAkey",
        &p(&pki.path("ca/intermediate.key")),
        "-set_serial",
        "0x5eed",
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&leaf),
    ]);
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&leaf).unwrap(),
        std::fs::read_to_string(pki.path("ca/intermediate.crt")).unwrap()
    );
    std::fs::write(prefix.with_extension("crt"), chain).unwrap();
    prefix
}

/// SIGHUP to the gate, then waits for its reload line.
pub(crate) fn reload(gate: &Proc) {
    let out = Command::new("kill")
        .args(["-HUP", &gate.pid().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    gate.wait_for("configuration reloaded", READY);
}

#[test]
fn partner_clients_pass_against_partner_roots_only_until_the_relationship_is_removed() {
    let (ours, partner) = two_domains();
    let (_ca_b, b) = serve_ca(&partner);
    let gate_cert = ours.issue(
        "server",
        "spiffe://example.org/gate",
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    );
    let url = format!("https://{b}/v1/bundle");
    let config = ours.path("gate.toml");
    std::fs::write(
        &config,
        gate_config(&ours, &gate_cert, &partner.root(), Some(&url)),
    )
    .unwrap();
    let (gate, addr) = start_gate(&config);

    let own = ours.issue("client", "spiffe://example.org/app", &[]);
    let billing = partner.issue("client", "spiffe://partner.example/billing", &[]);
    // A certificate claiming partner.example under OUR root, and one
    // claiming example.org under the PARTNER's root: both chain to a root
    // the gate now trusts, and both must be refused.
    let forged_partner = forge(&ours, "spiffe://partner.example/billing", "claims-partner");
    let forged_ours = forge(&partner, "spiffe://example.org/app", "claims-ours");

    wait_status(&ours, addr, &billing, 200, ONE_REFRESH);
    assert!(gate.stderr().contains("federated bundle updated"));
    assert_eq!(status(&ours, addr, &own), 200);
    assert_eq!(
        status(&ours, addr, &forged_partner),
        0,
        "partner ID under our root"
    );
    assert_eq!(
        status(&ours, addr, &forged_ours),
        0,
        "our ID under the partner's root"
    );
    // The partner's identity reaches the upstream.
    let (code, body) = call(&ours, addr, &billing, "GET", "/x", &[]);
    assert_eq!(code, 200);
    assert!(body.contains("spiffe://partner.example/billing"), "{body}");

    // The relationship removed (config edited, SIGHUP): refused at once.
    replace(
        &config,
        &gate_config(&ours, &gate_cert, &partner.root(), None),
    );
    reload(&gate);
    assert_eq!(status(&ours, addr, &billing), 0);
    assert_eq!(status(&ours, addr, &own), 200);
}

/// `GET /v1/bundle` of a CA, fetched by curl trusting `root`.
pub(crate) fn fetch_bundle(addr: SocketAddr, root: &Path) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "--cacert", &p(root)])
        .arg(format!("https://{addr}/v1/bundle"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_text());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes `bytes` as the relay's next answer, atomically.
pub(crate) fn relay_serves(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn hostile_bundle_answers_are_refused_and_a_dropped_root_refuses_the_partner() {
    let (ours, partner) = two_domains();
    let (_ca_b, b) = serve_ca(&partner);

    // The bundle endpoint per the SPIFFE Trust Domain and Bundle spec.
    let bundle = fetch_bundle(b, &partner.root());
    let keys = bundle["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["use"] == "x509-svid" && k["x5c"].is_array())
    );
    assert!(
        keys.iter()
            .any(|k| k["use"] == "jwt-svid" && k["kid"].is_string())
    );
    assert_eq!(bundle["spiffe_refresh_hint"], 1);
    assert!(bundle["spiffe_sequence"].as_u64().unwrap() > 0);

    // The relay answers with B's bundle over a certificate of B.
    let dir = partner.path("relay");
    std::fs::create_dir(&dir).unwrap();
    for (name, pki, id) in [
        ("a", &ours, "spiffe://example.org/relay"),
        ("b", &partner, "spiffe://partner.example/relay"),
    ] {
        let prefix = pki.issue("server", id, &["--ip", "127.0.0.1"]);
        std::fs::copy(
            prefix.with_extension("crt"),
            dir.join(format!("{name}.crt")),
        )
        .unwrap();
        std::fs::copy(
            prefix.with_extension("key"),
            dir.join(format!("{name}.key")),
        )
        .unwrap();
    }
    relay_serves(&dir, "tls", b"b");
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

    let gate_cert = ours.issue(
        "server",
        "spiffe://example.org/gate",
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    );
    let url = format!("https://{relay_addr}/bundle");
    let config = ours.path("gate.toml");
    std::fs::write(
        &config,
        gate_config(&ours, &gate_cert, &partner.root(), Some(&url)),
    )
    .unwrap();
    let (gate, addr) = start_gate(&config);
    let billing = partner.issue("client", "spiffe://partner.example/billing", &[]);
    wait_status(&ours, addr, &billing, 200, ONE_REFRESH);

    // Each bad answer is refused with a log line saying why; the last good
    // bundle stays in force.
    let mut wrong_root = bundle.clone();
    for k in wrong_root["keys"].as_array_mut().unwrap() {
        if k["use"] == "x509-svid" {
            k["x5c"] = serde_json::json!(["bm90IGEgY2VydGlmaWNhdGU="]);
        }
    }
    let oversized = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    for (what, body, tls, reason) in [
        ("malformed", b"{\"keys\": [".to_vec(), "b", "bad JWK set"),
        ("oversized", oversized.into_bytes(), "b", "more than"),
        (
            "unusable root",
            wrong_root.to_string().into_bytes(),
            "b",
            "x509-svid root",
        ),
        (
            "endpoint under a wrong root",
            bundle.to_string().into_bytes(),
            "a",
            "invalid peer certificate",
        ),
    ] {
        relay_serves(&dir, "tls", tls.as_bytes());
        relay_serves(&dir, "body", &body);
        let line = gate.wait_for(reason, ONE_REFRESH);
        assert!(
            line.contains("federated bundle refused") && line.contains("partner.example"),
            "{what}: {line}"
        );
        assert_eq!(
            status(&ours, addr, &billing),
            200,
            "{what}: last good bundle kept"
        );
    }

    // The partner drops its root: refused within one refresh.
    relay_serves(&dir, "tls", b"b");
    let mut dropped = bundle.clone();
    dropped["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["use"] != "x509-svid");
    relay_serves(&dir, "body", dropped.to_string().as_bytes());
    let dropped_at = Instant::now();
    wait_status(&ours, addr, &billing, 0, ONE_REFRESH);
    let took = dropped_at.elapsed();
    eprintln!("partner refused {took:?} after its endpoint dropped the root");
    // And admitted again when the root comes back.
    relay_serves(&dir, "body", bundle.to_string().as_bytes());
    wait_status(&ours, addr, &billing, 200, ONE_REFRESH);
}

/// The serial of a PEM certificate, as openssl prints it (lowercase hex).
pub(crate) fn serial_of(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", &p(cert)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = out.stdout_text();
    text.trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_ascii_lowercase()
}

#[test]
fn pyspiffe_sees_the_partner_bundle_in_the_x509_context_from_the_agent() {
    let (ours, partner) = two_domains();
    let (_ca_a, a) = serve_ca(&ours);
    let (_ca_b, b) = serve_ca(&partner);
    let out = ward(&[
        "token",
        "create",
        "--dir",
        ours.ca_dir(),
        "--spiffe-id",
        "spiffe://example.org/app",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let token: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let token_file = ours.path("token");
    crate::harness::write_private(&token_file, token["token"].as_str().unwrap());
    let socket = ours.path("agent.sock");
    let agent = Proc::spawn(&[
        "agent",
        "run",
        "--ca",
        &format!("https://{a}"),
        "--ca-bundle",
        &p(&ours.root()),
        "--token-file",
        &p(&token_file),
        "--socket",
        &p(&socket),
        "--federate",
        &format!("partner.example=https://{b}/v1/bundle"),
        "--federation-ca-bundle",
        &p(&partner.root()),
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
    assert_eq!(seen["spiffe_id"], "spiffe://example.org/app");
    let ours_serial = serial_of(&ours.root());
    let partner_serial = serial_of(&partner.root());
    for set in ["context", "x509_bundles"] {
        assert_eq!(
            seen[set]["example.org"],
            serde_json::json!([ours_serial]),
            "{seen}"
        );
        assert_eq!(
            seen[set]["partner.example"],
            serde_json::json!([partner_serial]),
            "{seen}"
        );
    }
    // The partner's JWT key (its kid) is in the JWT bundle set too.
    let bundle = fetch_bundle(b, &partner.root());
    let kid = bundle["keys"]
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
}

#[test]
fn bad_federation_settings_are_refused_at_start_and_on_reload() {
    let (ours, partner) = two_domains();
    // spiffe_sequence grows across restarts of the CA (its bundle can only
    // change then), even quick ones.
    let (first, b) = serve_ca(&partner);
    let before = fetch_bundle(b, &partner.root())["spiffe_sequence"]
        .as_u64()
        .unwrap();
    drop(first);
    let (_ca_b, b) = serve_ca(&partner);
    let after = fetch_bundle(b, &partner.root())["spiffe_sequence"]
        .as_u64()
        .unwrap();
    assert!(after > before, "{after} after {before}");
    let gate_cert = ours.issue(
        "server",
        "spiffe://example.org/gate",
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    );
    let config = ours.path("gate.toml");

    // A plain-HTTP endpoint: the configuration is refused.
    std::fs::write(
        &config,
        gate_config(
            &ours,
            &gate_cert,
            &partner.root(),
            Some(&format!("http://{b}/v1/bundle")),
        ),
    )
    .unwrap();
    let out = ward(&["gate", "serve", "--config", &p(&config), "--check-config"]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("must be an https:// URL"),
        "{}",
        out.stderr_text()
    );

    // A good start, then a reload naming a missing ca_bundle: rejected,
    // the partner keeps passing.
    let url = format!("https://{b}/v1/bundle");
    std::fs::write(
        &config,
        gate_config(&ours, &gate_cert, &partner.root(), Some(&url)),
    )
    .unwrap();
    let (gate, addr) = start_gate(&config);
    let billing = partner.issue("client", "spiffe://partner.example/billing", &[]);
    wait_status(&ours, addr, &billing, 200, ONE_REFRESH);
    replace(
        &config,
        &gate_config(&ours, &gate_cert, &ours.path("missing.crt"), Some(&url)),
    );
    Command::new("kill")
        .args(["-HUP", &gate.pid().to_string()])
        .status()
        .unwrap();
    let line = gate.wait_for("reload rejected", READY);
    assert!(line.contains("missing.crt"), "{line}");
    assert_eq!(status(&ours, addr, &billing), 200);
}
