//! A full intermediate rotation under continuous traffic: a gate and a
//! `ward-client` rotator, both on 15 s certificates from the CA, make one
//! mTLS request through the gate every 50 ms, and an agent writes its files
//! and serves the Workload API (read by the `spiffe` crate, unmodified),
//! while `ward ca rotate intermediate --overlap 4s` runs. Not one handshake
//! or request may fail (per-second counters are printed), and every party
//! must end up on a certificate of the new intermediate, which openssl
//! verifies, as it does the old chain.

use std::time::{Duration, Instant};

use tokio_rustls::TlsConnector;
use ward_client::{BootstrapConfig, CaTrust, Rotator, Token};

use super::load::{Gate, Traffic, upstream};
use super::support::{initial, openssl_verifies, published, rotate, sha256};
use crate::agent::procs::{AgentDir, AgentProcess, DEADLINE, openssl_fingerprint};
use crate::harness::{Backend, Ca};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_rotation_under_continuous_traffic_fails_nothing() {
    ward_tls::install_default_provider();
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = ca.serve();
    let url = format!("https://{}", server.addr);
    let old = initial(&ca);
    let fingerprint = openssl_fingerprint(&ca.root());

    let gate_token = ca.token(
        "spiffe://example.org/gate",
        &["--cert-ttl", "15s", "--dns", "localhost"],
    );
    let token_file = ca.write("gate-token", &gate_token.secret);
    let upstream = upstream().await;
    let gate = Gate::start(&[
        "--ca",
        &url,
        "--ca-fingerprint",
        &fingerprint,
        "--token-file",
        token_file.to_str().unwrap(),
        "--upstream",
        &format!("http://{upstream}"),
        "--allow-spiffe-id",
        "spiffe://example.org/client",
    ]);

    let client_token = ca.token("spiffe://example.org/client", &["--cert-ttl", "15s"]);
    let rotator = Rotator::bootstrap(BootstrapConfig::new(
        url.clone(),
        CaTrust::Fingerprint(fingerprint.parse().unwrap()),
        Token::new(&client_token.secret).unwrap(),
    ))
    .await
    .unwrap();
    let connector = TlsConnector::from(rotator.client_config().unwrap());

    let agent_token = ca.token("spiffe://example.org/agent", &["--cert-ttl", "15s"]);
    let agent_dir = AgentDir::new(&ca, "agent");
    let out = agent_dir.root.join("out");
    let socket = agent_dir.path("api.sock");
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &url,
            "--ca-fingerprint",
            &fingerprint,
            "--out-dir",
            out.to_str().unwrap(),
            "--socket",
            &socket,
        ],
        &[("WARD_TOKEN", &agent_token.secret)],
    );
    agent.wait_deliveries(1, DEADLINE);
    // An unmodified SPIFFE client of the agent's Workload API.
    let source = spiffe::X509Source::builder()
        .endpoint(format!("unix://{socket}"))
        .build()
        .await
        .expect("X509Source connects");
    let agent_old = std::fs::read_to_string(out.join("svid.pem")).unwrap();
    openssl_verifies(&ca, &agent_old, "sslclient");

    // Traffic from now until told to stop.
    let traffic = Traffic::start(gate.addr, move || connector.clone());
    let tally = traffic.tally.clone();
    let started = traffic.started;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let next = rotate(&ca, "4s", &[]);
    let rotated_at = started.elapsed();
    println!("rotation made at {rotated_at:?}; switch 4 s later");

    // Every party moves to the new intermediate at its next renewal (two
    // thirds of 15 s after the switch at the latest).
    let client = ca.client(&server);
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        let on_new = |chain: &[rustls_pki_types::CertificateDer<'_>]| {
            chain.get(1).is_some_and(|c| sha256(c) == next)
        };
        let client_done = on_new(rotator.current().chain());
        let gate_done = tally.lock().unwrap().gate_intermediates.last() == Some(&next);
        let agent_chain = std::fs::read_to_string(out.join("svid.pem")).unwrap_or_default();
        let agent_done =
            ward_pki::pem::parse_certs(agent_chain.as_bytes()).is_ok_and(|c| on_new(&c));
        let workload_done = source.svid().is_ok_and(|svid| {
            svid.cert_chain()
                .get(1)
                .is_some_and(|c| sha256(c.as_bytes()) == next)
        });
        if client_done && gate_done && agent_done && workload_done {
            break;
        }
        assert!(
            Instant::now() < end,
            "not everyone moved to the new intermediate: client {client_done}, gate {gate_done}, agent {agent_done}, Workload API {workload_done}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little more traffic on the new chains, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = traffic.stop().await;
    t.report(100);
    assert_eq!(
        t.gate_intermediates,
        vec![old.clone(), next.clone()],
        "the gate moved from the old intermediate to the new one"
    );
    // The new chain verifies with openssl (the old one did, above).
    let agent_new = std::fs::read_to_string(out.join("svid.pem")).unwrap();
    openssl_verifies(&ca, &agent_new, "sslclient");
    // The old intermediate is still published while its certificates live.
    assert_eq!(published(&client).await, vec![next, old]);
    agent.terminate();
    drop(rotator);
}
