//! With the CA gone the agent keeps its certificate, retries with backoff,
//! and renews as soon as the CA is back on the same address.

use std::time::Duration;

use super::procs::{AgentDir, AgentProcess, CaProcess, DEADLINE, pem_serial, wait_until};
use crate::common::openssl_verify;
use crate::harness::{Backend, Ca};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_keeps_its_certificate_through_a_ca_outage_and_recovers() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let mut server = CaProcess::start(&ca, "127.0.0.1:0");
    let addr = server.addr;
    // 30 s: renewal at ~20 s leaves 10 s to see retries (1 s, 2 s) and come back.
    let token = ca.token("spiffe://example.org/batch", &["--cert-ttl", "30s"]);
    let dir = AgentDir::new(&ca, "agent");
    let out = dir.root.join("out");
    let token_file = dir.path("token");
    std::fs::write(&token_file, format!("{}\n", token.secret)).unwrap();
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &server.url(),
            "--ca-bundle",
            ca.root().to_str().unwrap(),
            "--token-file",
            &token_file,
            "--out-dir",
            out.to_str().unwrap(),
            "--retry-min",
            "1s",
            "--retry-max",
            "2s",
        ],
        &[],
    );
    let first = agent.wait_deliveries(1, DEADLINE)[0].clone();
    server.stop();

    // Renewal comes due, fails, and is retried with growing delays.
    wait_until("two failed renewals", DEADLINE, || {
        agent.count("renewal failed") >= 2
    });
    assert!(agent.running());
    assert_eq!(agent.deliveries().len(), 1);
    let cert = out.join("svid.pem");
    assert_eq!(
        pem_serial(&cert),
        first.serial,
        "the current certificate stays"
    );
    let (ok, text) = openssl_verify(&ca.root(), &cert, "sslclient");
    assert!(ok, "still valid during the outage: {text}");
    let output = agent.output();
    let delays: Vec<f64> = output
        .lines()
        .filter(|l| l.contains("renewal failed"))
        .filter_map(|l| {
            let v = l.split("retry_in=").nth(1)?.split_whitespace().next()?;
            let ms = v
                .strip_suffix("ms")
                .map(|n| n.parse::<f64>().ok().map(|x| x / 1000.0));
            ms.unwrap_or_else(|| v.strip_suffix('s')?.parse().ok())
        })
        .collect();
    assert!(
        delays.iter().all(|d| *d > 0.0 && *d <= 2.0),
        "delays within the cap: {delays:?}\n{output}"
    );

    // The CA returns on the address it had (allocated by the OS at first start).
    let server = CaProcess::start(&ca, &addr.to_string());
    assert_eq!(server.addr, addr);
    let got = agent.wait_deliveries(2, Duration::from_secs(30));
    assert_ne!(got[1].serial, first.serial);
    assert_eq!(pem_serial(&cert), got[1].serial);
    let (ok, text) = openssl_verify(&ca.root(), &cert, "sslclient");
    assert!(ok, "{text}");
    assert!(agent.running());
    assert!(!agent.output().contains(&token.secret));
}
