//! The gate's `[tenants.acme]` against Pebble: tls-alpn-01 on the gate's
//! own listener while the tenant requires client certificates, http-01
//! on the plain challenge listener, dns-01 through the exec hook, and a
//! restart that serves the stored certificate without a new order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::acme_client::pebble::{Pebble, PebbleOptions, free_port, have};
use crate::common::OutputText;
use crate::harness::{Gate, Metrics};
use crate::pki::{crt, key, mint};
use crate::upstream::Echo;

/// Longest an order may take (Pebble validates at once with
/// PEBBLE_VA_NOSLEEP).
pub(crate) const ORDER_DEADLINE: Duration = Duration::from_secs(60);

/// One `[[tenants]]` entry with `[tenants.acme]`.
pub(crate) struct AcmeTenant<'a> {
    pub(crate) name: &'a str,
    pub(crate) domain: &'a str,
    pub(crate) challenge: &'a str,
    /// More `[tenants.acme]` lines.
    pub(crate) extra: String,
}

/// Writes `gate.toml` in `dir`: listener on `port` (0: any), the tenants,
/// each requiring client certificates from Pebble's Ward CA and routing
/// everything to `echo` for `spiffe://example.org/ns/*`.
pub(crate) fn write_config(
    dir: &Path,
    port: u16,
    pebble: &Pebble,
    echo: &Echo,
    tenants: &[AcmeTenant<'_>],
) -> PathBuf {
    let server = AcmeServer {
        directory: pebble.directory(),
        ca_bundle: pebble.https_root(),
        client_ca: pebble.pki.root(),
    };
    write_config_for(dir, port, &server, echo, tenants)
}

/// Where the tenants' certificates come from and who their clients are.
pub(crate) struct AcmeServer {
    /// Directory URL.
    pub(crate) directory: String,
    /// Roots of the ACME server's HTTPS certificate.
    pub(crate) ca_bundle: PathBuf,
    /// Roots client certificates must chain to.
    pub(crate) client_ca: PathBuf,
}

/// [`write_config`] for any ACME server.
pub(crate) fn write_config_for(
    dir: &Path,
    port: u16,
    server: &AcmeServer,
    echo: &Echo,
    tenants: &[AcmeTenant<'_>],
) -> PathBuf {
    let mut text = format!(
        "unknown_sni = \"reject\"\n[listen]\naddress = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:0\"\n"
    );
    for t in tenants {
        text.push_str(&format!(
            r#"
[[tenants]]
name = "{name}"
sni = ["{domain}"]
client_ca = "{client_ca}"

[tenants.acme]
directory = "{directory}"
domains = ["{domain}"]
contact = "mailto:ops@acme.test"
challenge = "{challenge}"
ca_bundle = "{ca_bundle}"
state_dir = "state-{name}"
{extra}

[[tenants.routes]]
name = "{name}-all"
upstream = "{upstream}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#,
            name = t.name,
            domain = t.domain,
            challenge = t.challenge,
            extra = t.extra,
            client_ca = server.client_ca.display(),
            directory = server.directory,
            ca_bundle = server.ca_bundle.display(),
            upstream = echo.url(),
        ));
    }
    let path = dir.join("gate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Polls `cond` every 50 ms until it holds or `deadline` passes.
pub(crate) fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the tenant's successful orders reach `n`.
pub(crate) fn wait_orders(gate: &Gate, tenant: &str, result: &str, n: f64) {
    wait_for(
        &format!("{n} {result} order(s) of {tenant}: {}", gate.stderr()),
        ORDER_DEADLINE,
        || orders(&gate.metrics(), tenant, result) >= n,
    );
}

/// `ward_gate_acme_orders_total{tenant,result}`.
pub(crate) fn orders(m: &Metrics, tenant: &str, result: &str) -> f64 {
    m.sum(
        "ward_gate_acme_orders_total",
        &[("tenant", tenant), ("result", result)],
    )
}

/// A client certificate from the CA the tenants trust.
pub(crate) fn client_cert(pebble: &Pebble) -> PathBuf {
    mint(
        &pebble.pki,
        "client",
        "spiffe://example.org/ns/app",
        "client",
        &[],
    )
}

/// `curl https://DOMAIN:PORT/PATH` resolved to 127.0.0.1, verifying the
/// gate against `root`, with the client certificate `client` (if any).
/// Returns (exit code, HTTP status, body, stderr).
pub(crate) fn curl(
    root: &Path,
    client: Option<&Path>,
    domain: &str,
    port: u16,
    path: &str,
) -> (i32, u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(root)
        .args(["--resolve", &format!("{domain}:{port}:127.0.0.1")]);
    if let Some(c) = client {
        cmd.args(["--cert", &crt(c), "--key", &key(c)]);
    }
    let out = cmd
        .arg(format!("https://{domain}:{port}{path}"))
        .output()
        .unwrap();
    let text = out.stdout_text();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
        out.stderr_text(),
    )
}

/// The serial of the leaf the gate serves for `domain`, as openssl reads it.
pub(crate) fn served_serial(port: u16, domain: &str) -> String {
    let script = format!(
        "echo | timeout 10 openssl s_client -connect 127.0.0.1:{port} -servername {domain} 2>/dev/null \
         | openssl x509 -noout -serial"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let text = out.stdout_text();
    text.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("no serial from openssl: {text} {}", out.stderr_text()))
        .to_ascii_lowercase()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn tools() -> bool {
    have("pebble") && have("pebble-challtestsrv") && have("curl") && have("openssl")
}

/// Stops a gate with SIGTERM; it must exit 0.
pub(crate) fn stop(mut gate: Gate) {
    gate.signal("TERM");
    let status = gate.wait_exit();
    assert!(status.success(), "gate exit: {status}\n{}", gate.stderr());
}

#[test]
fn tls_alpn_01_while_the_tenant_requires_client_certificates_then_a_restart_orders_nothing() {
    if !tools() {
        return;
    }
    // Pebble validates tls-alpn-01 on the gate's own listener: its port is
    // chosen before either starts.
    let gate_port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        http_port: free_port(),
        tls_port: gate_port,
        validity: None,
    });
    let echo = Echo::start();
    let work = tempfile::tempdir().unwrap();
    let tenants = [AcmeTenant {
        name: "api",
        domain: "api.acme.test",
        challenge: "tls-alpn-01",
        extra: String::new(),
    }];
    let config = write_config(work.path(), gate_port, &pebble, &echo, &tenants);
    let gate = Gate::config(&config);
    wait_orders(&gate, "api", "success", 1.0);
    let root = pebble.issuing_root();
    let client = client_cert(&pebble);

    let (code, status, body, err) =
        curl(&root, Some(&client), "api.acme.test", gate_port, "/hello");
    assert_eq!((code, status), (0, 200), "{err}\n{}", gate.stderr());
    assert!(body.contains("/hello"), "{body}");
    assert!(echo.hits() >= 1);
    // The tenant still requires a client certificate.
    let (code, _, _, _) = curl(&root, None, "api.acme.test", gate_port, "/hello");
    assert_ne!(
        code, 0,
        "a request without a client certificate went through"
    );
    // Pebble's validation was answered on this listener with no client
    // certificate asked, and counted.
    let m = gate.metrics();
    assert!(
        m.sum(
            "ward_gate_handshakes_total",
            &[("result", "success"), ("alpn", "acme-tls/1")]
        ) >= 1.0,
        "{}",
        m.0
    );
    // A tls-alpn-01 probe with no challenge pending gets nothing.
    let probe = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo | timeout 10 openssl s_client -connect 127.0.0.1:{gate_port} \
                 -servername api.acme.test -alpn acme-tls/1"
            ),
        ])
        .output()
        .unwrap();
    assert!(!probe.stdout_text().contains("BEGIN CERTIFICATE") || !probe.status.success());
    wait_for(
        "the refused probe to be counted",
        Duration::from_secs(10),
        || {
            gate.metrics().sum(
                "ward_gate_handshakes_total",
                &[("reason", "no_challenge"), ("alpn", "acme-tls/1")],
            ) >= 1.0
        },
    );

    let state = work.path().join("state-api");
    assert_eq!(mode(&state.join("key.pem")), 0o600);
    assert_eq!(mode(&state.join("account.json")), 0o600);
    assert_eq!(mode(&state), 0o700);
    let serial = served_serial(gate_port, "api.acme.test");
    let stored = std::fs::read(state.join("cert.pem")).unwrap();
    let orders_before = pebble.orders();
    assert_eq!(orders_before, 1, "{}", pebble.log());
    stop(gate);

    // A restart serves the stored certificate at once and orders nothing.
    let gate = Gate::config(&config);
    let (code, status, _, err) = curl(&root, Some(&client), "api.acme.test", gate_port, "/again");
    assert_eq!((code, status), (0, 200), "{err}\n{}", gate.stderr());
    assert_eq!(served_serial(gate_port, "api.acme.test"), serial);
    // The renewal loop schedules (and publishes) its next renewal once it
    // has looked at the stored certificate, shortly after start.
    wait_for(
        "the next renewal to be scheduled",
        Duration::from_secs(10),
        || {
            gate.metrics().sum(
                "ward_gate_acme_next_renewal_timestamp_seconds",
                &[("tenant", "api")],
            ) > 0.0
        },
    );
    let m = gate.metrics();
    assert_eq!(
        orders(&m, "api", "success") + orders(&m, "api", "failure"),
        0.0
    );
    assert_eq!(pebble.orders(), orders_before);
    assert_eq!(std::fs::read(state.join("cert.pem")).unwrap(), stored);
    stop(gate);
}

#[test]
fn http_01_and_dns_01_tenants_obtain_their_certificates() {
    if !tools() {
        return;
    }
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        http_port,
        tls_port: free_port(),
        validity: None,
    });
    let echo = Echo::start();
    let work = tempfile::tempdir().unwrap();
    let hook = pebble.dns.txt_script(work.path(), 2);
    let tenants = [
        AcmeTenant {
            name: "web",
            domain: "web.acme.test",
            challenge: "http-01",
            extra: format!("http01_listen = \"127.0.0.1:{http_port}\""),
        },
        AcmeTenant {
            name: "dns",
            domain: "dns.acme.test",
            challenge: "dns-01",
            extra: format!("dns_hook = \"{}\"", hook.display()),
        },
    ];
    let config = write_config(work.path(), 0, &pebble, &echo, &tenants);
    let gate = Gate::config(&config);
    wait_orders(&gate, "web", "success", 1.0);
    wait_orders(&gate, "dns", "success", 1.0);
    let root = pebble.issuing_root();
    let client = client_cert(&pebble);
    for domain in ["web.acme.test", "dns.acme.test"] {
        let (code, status, body, err) = curl(&root, Some(&client), domain, gate.port(), "/x");
        assert_eq!(
            (code, status),
            (0, 200),
            "{domain}: {err}\n{}",
            gate.stderr()
        );
        assert!(body.contains("/x"), "{body}");
    }
    // The hook was run to present and to clean up the record.
    let log = std::fs::read_to_string(work.path().join("dns-hook.log")).unwrap();
    assert!(
        log.contains("present _acme-challenge.dns.acme.test."),
        "{log}"
    );
    assert!(
        log.contains("cleanup _acme-challenge.dns.acme.test."),
        "{log}"
    );
    // The plain listener serves challenges only: the rest goes to HTTPS.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10"])
        .args(["-w", "%{http_code} %{redirect_url}"])
        .args(["-H", "Host: web.acme.test"])
        .arg(format!("http://127.0.0.1:{http_port}/app?q=1"))
        .output()
        .unwrap();
    assert_eq!(out.stdout_text(), "308 https://web.acme.test/app?q=1");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "-w",
            "%{http_code}",
        ])
        .arg(format!(
            "http://127.0.0.1:{http_port}/.well-known/acme-challenge/unknown-token"
        ))
        .output()
        .unwrap();
    assert_eq!(out.stdout_text(), "404");
    stop(gate);
}

#[test]
fn a_bad_acme_table_is_refused_before_anything_starts() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("gate.toml");
    std::fs::write(
        &config,
        r#"[listen]
address = "127.0.0.1:0"
[[tenants]]
name = "api"
client_ca = "ca.crt"
[tenants.acme]
directory = "https://127.0.0.1:1/dir"
domains = ["api.acme.test"]
challenge = "dns-01"
state_dir = "state"
[[tenants.routes]]
name = "all"
upstream = "http://127.0.0.1:1"
"#,
    )
    .unwrap();
    let out = crate::common::ward(&["gate", "serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("dns_hook"),
        "{}",
        out.stderr_text()
    );
    assert!(!work.path().join("state").exists());
}

#[test]
fn the_flag_form_obtains_a_certificate_by_http_01() {
    if !tools() {
        return;
    }
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        http_port,
        tls_port: free_port(),
        validity: None,
    });
    let echo = Echo::start();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let gate = Gate::flags(&[
        "--client-ca",
        pebble.pki.root().to_str().unwrap(),
        "--upstream",
        &echo.url(),
        "--allow-spiffe-id",
        "spiffe://example.org/ns/*",
        "--acme-directory",
        &pebble.directory(),
        "--acme-domain",
        "flags.acme.test",
        "--acme-challenge",
        "http-01",
        "--acme-http01-listen",
        &format!("127.0.0.1:{http_port}"),
        "--acme-ca-bundle",
        pebble.https_root().to_str().unwrap(),
        "--acme-state-dir",
        state.to_str().unwrap(),
    ]);
    wait_orders(&gate, "default", "success", 1.0);
    let root = pebble.issuing_root();
    let client = client_cert(&pebble);
    let (code, status, _, err) = curl(&root, Some(&client), "flags.acme.test", gate.port(), "/f");
    assert_eq!((code, status), (0, 200), "{err}\n{}", gate.stderr());
    assert!(state.join("cert.pem").exists());
    stop(gate);
}

#[test]
fn a_failed_validation_is_an_error_with_the_servers_reason_and_the_stand_in_stays() {
    if !tools() {
        return;
    }
    // Pebble validates tls-alpn-01 on a port nobody listens on.
    let pebble = Pebble::start(PebbleOptions {
        http_port: free_port(),
        tls_port: free_port(),
        validity: None,
    });
    let echo = Echo::start();
    let work = tempfile::tempdir().unwrap();
    let tenants = [AcmeTenant {
        name: "api",
        domain: "api.acme.test",
        challenge: "tls-alpn-01",
        extra: String::new(),
    }];
    let config = write_config(work.path(), 0, &pebble, &echo, &tenants);
    let gate = Gate::config(&config);
    wait_orders(&gate, "api", "failure", 1.0);
    let log = gate.stderr();
    // Pebble's problem document, as it sent it.
    assert!(log.contains("for the tls-alpn-01 challenge"), "{log}");
    assert!(
        log.contains("urn:ietf:params:acme:error:unauthorized"),
        "{log}"
    );
    assert!(!work.path().join("state-api/cert.pem").exists());
    // No client trusts the stand-in.
    let root = pebble.issuing_root();
    let client = client_cert(&pebble);
    let (code, _, _, _) = curl(&root, Some(&client), "api.acme.test", gate.port(), "/");
    assert_ne!(code, 0);
    stop(gate);
}
