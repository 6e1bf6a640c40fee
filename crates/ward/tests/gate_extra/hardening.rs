//! Issue 25 at the gate process: `--check-config` checks what `serve`
//! would (listen addresses, CRL files), and what a client sends cannot
//! make the log unbounded (a 65,000-byte SNI) or flood it (one warning per
//! rapid-reset connection).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::{OutputText, Pki, ward};
use crate::harness::{Proc, READY, http_echo, p, pki_with_gate};

fn config(pki: &Pki, gate: &std::path::Path, listen: &str, crl: &[&str]) -> PathBuf {
    let text = format!(
        "audit_log = \"off\"\n[listen]\naddress = {listen:?}\n[revocation]\ncrl = {crl:?}\n\
         [[tenants]]\nname = \"api\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\
         [[tenants.routes]]\nname = \"api\"\nupstream = \"http://127.0.0.1:9\"\n",
        p(&gate.with_extension("crt")),
        p(&gate.with_extension("key")),
        p(&pki.root()),
    );
    let path = pki.path("gate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_checks_addresses_and_crl_files() {
    let (pki, gate) = pki_with_gate();
    let check = |path: &PathBuf| ward(&["gate", "serve", "--config", &p(path), "--check-config"]);

    let good = config(&pki, &gate, "127.0.0.1:0", &[]);
    let out = check(&good);
    assert!(out.status.success(), "{}", out.stderr_text());

    for listen in ["127.0.0.1", "127.0.0.1:99999", "not an address"] {
        let path = config(&pki, &gate, listen, &[]);
        let out = check(&path);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{listen}: {}",
            out.stdout_text()
        );
        assert!(
            out.stderr_text().contains("listen.address"),
            "{}",
            out.stderr_text()
        );
    }

    let missing = pki.path("missing.crl");
    let path = config(&pki, &gate, "127.0.0.1:0", &[&p(&missing)]);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout_text());
    assert!(
        out.stderr_text().contains("missing.crl"),
        "{}",
        out.stderr_text()
    );

    // The flag form too.
    let out = ward(&[
        "gate",
        "serve",
        "--check-config",
        "--listen",
        "127.0.0.1:notaport",
        "--cert",
        &p(&gate.with_extension("crt")),
        "--key",
        &p(&gate.with_extension("key")),
        "--client-ca",
        &p(&pki.root()),
        "--upstream",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout_text());
}

/// A TLS 1.3 ClientHello whose SNI is one `len`-byte name, split into
/// records as TLS requires.
fn client_hello_with_sni(len: usize) -> Vec<u8> {
    let be16 = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
    let mut sni = Vec::new();
    sni.extend(be16(len + 3));
    sni.push(0); // host_name
    sni.extend(be16(len));
    sni.extend(std::iter::repeat_n(b'a', len));
    let mut ext = Vec::new();
    ext.extend(be16(0));
    ext.extend(be16(sni.len()));
    ext.extend(&sni);
    ext.extend([0, 43, 0, 3, 2, 3, 4]); // supported_versions: TLS 1.3
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0); // no session id
    body.extend([0, 2, 0x13, 0x01]);
    body.extend([1, 0]);
    body.extend(be16(ext.len()));
    body.extend(&ext);
    let mut handshake = vec![1];
    handshake.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(&body);
    let mut out = Vec::new();
    for chunk in handshake.chunks(16_384) {
        out.extend([22, 3, 1]);
        out.extend(be16(chunk.len()));
        out.extend(chunk);
    }
    out
}

#[test]
fn client_strings_in_the_log_are_bounded() {
    let (pki, gate) = pki_with_gate();
    let echo = http_echo();
    let proc = Proc::spawn(&[
        "gate",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        &p(&gate.with_extension("crt")),
        "--key",
        &p(&gate.with_extension("key")),
        "--client-ca",
        &p(&pki.root()),
        "--upstream",
        &format!("http://{echo}"),
        "--audit-log",
        "off",
    ]);
    let addr = proc.ready("listening on");
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(&client_hello_with_sni(65_000)).unwrap();
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink);
    }
    let line = proc.wait_for("SNI", READY);
    assert!(line.len() < 5_000, "a {}-byte log line", line.len());
    let stderr = proc.stderr();
    let longest = stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 5_000, "a {longest}-byte log line");
}

#[test]
fn a_rapid_reset_flood_writes_a_bounded_number_of_warnings() {
    let (pki, gate) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/flood", &[]);
    let echo = http_echo();
    let proc = Proc::spawn_env(
        &[
            "gate",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            &p(&gate.with_extension("crt")),
            "--key",
            &p(&gate.with_extension("key")),
            "--client-ca",
            &p(&pki.root()),
            "--upstream",
            &format!("http://{echo}"),
            "--allow-spiffe-id",
            "spiffe://example.org/*",
            "--audit-log",
            "off",
        ],
        // Two lines a second per target: a flood overruns that even when a
        // busy machine spreads it over seconds.
        &[("WARD_LOG_RATE", "2")],
    );
    let addr = proc.ready("listening on");
    let flood = |sessions: u32| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../ward-testkit/scripts/h2_rapid_reset.js");
        let out = std::process::Command::new("node")
            .arg(script)
            .arg(format!("https://localhost:{}", addr.port()))
            .arg(pki.root())
            .arg(client.with_extension("crt"))
            .arg(client.with_extension("key"))
            .arg(sessions.to_string())
            .arg("100")
            .arg("8000")
            .output()
            .expect("node runs");
        assert!(out.status.success(), "{}", out.stderr_text());
        let report: serde_json::Value = serde_json::from_str(out.stdout_text().trim()).unwrap();
        report["goaways"].as_u64().unwrap()
    };
    // Not every session trips the limit (streams may be accepted before
    // their reset arrives): most do, each with a warning from h2.
    let ended = flood(150);
    assert!(
        ended >= 30,
        "the gate ended only {ended} of 150 rapid-reset sessions"
    );
    proc.wait_for("reached limit", READY);
    let warnings: Vec<String> = proc
        .stderr()
        .lines()
        .filter(|l| l.contains("reached limit"))
        .map(str::to_owned)
        .collect();
    // Each ended session drew one warning from h2; at two a second, the
    // log kept only what the seconds the flood lasted allow.
    let second = |line: &str| -> i64 {
        let hms = line.get(11..19).unwrap_or_else(|| panic!("{line}"));
        hms.split(':')
            .map(|n| n.parse::<i64>().unwrap())
            .fold(0, |acc, n| acc * 60 + n)
    };
    let span = second(warnings.last().unwrap()) - second(&warnings[0]);
    let allowed = usize::try_from(2 * (span + 2)).unwrap();
    assert!(
        warnings.len() <= allowed && (warnings.len() as u64) < ended,
        "{} warnings over {span} s for {ended} rapid-reset sessions",
        warnings.len()
    );
}
