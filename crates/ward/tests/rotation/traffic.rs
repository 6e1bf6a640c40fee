//! A full intermediate rotation under continuous traffic: a gate and a
//! `ward-client` rotator, both on 15 s certificates from the CA, make one
//! mTLS request through the gate every 50 ms, and an agent writes its files
//! and serves the Workload API (read by the `spiffe` crate, unmodified),
//! while `ward ca rotate intermediate --overlap 4s` runs. Not one handshake
//! or request may fail (per-second counters are printed), and every party
//! must end up on a certificate of the new intermediate, which openssl
//! verifies, as it does the old chain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use ward_client::{BootstrapConfig, CaTrust, Rotator, Token};

use super::support::{initial, openssl_verifies, published, rotate, sha256};
use crate::agent::procs::{AgentDir, AgentProcess, DEADLINE, openssl_fingerprint, wait_until};
use crate::harness::{Backend, Ca};

/// A plain HTTP upstream answering 200 "ok".
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            "ok",
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// `ward gate serve` with its identity from the CA; killed when dropped.
struct Gate {
    child: Child,
    addr: SocketAddr,
}

impl Gate {
    fn start(args: &[&str]) -> Gate {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args([
                "gate",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--audit-log",
                "off",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let end = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("ward gate: listening on ") {
                        let addr = a.trim().parse().unwrap();
                        std::thread::spawn(move || for _ in rx {});
                        return Gate { child, addr };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the gate never got ready:\n{}", seen.join("\n"));
                }
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh mTLS connection; the fingerprint of the
/// intermediate the gate presented.
async fn request(connector: &TlsConnector, addr: SocketAddr) -> Result<String, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let gate_int = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.get(1))
        .map(|c| sha256(c))
        .ok_or("the gate sent no intermediate")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get("/traffic")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let _ = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(gate_int)
}

/// Per-second (ok, failed) counts and what went wrong.
#[derive(Default)]
struct Tally {
    seconds: BTreeMap<u64, (u32, u32)>,
    failures: Vec<String>,
    gate_intermediates: Vec<String>,
}

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
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let traffic = {
        let tally = tally.clone();
        let addr = gate.addr;
        tokio::spawn(async move {
            loop {
                if *stop_rx.borrow() {
                    break;
                }
                let result = request(&connector, addr).await;
                let second = started.elapsed().as_secs();
                {
                    let mut t = tally.lock().unwrap();
                    let slot = t.seconds.entry(second).or_default();
                    match result {
                        Ok(int) => {
                            slot.0 += 1;
                            if !t.gate_intermediates.contains(&int) {
                                t.gate_intermediates.push(int);
                            }
                        }
                        Err(e) => {
                            slot.1 += 1;
                            t.failures.push(format!("at {second}s: {e}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

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
    stop_tx.send(true).unwrap();
    traffic.await.unwrap();

    let t = std::mem::take(&mut *tally.lock().unwrap());
    for (second, (ok, failed)) in &t.seconds {
        println!("t={second:>2}s ok={ok:>3} failed={failed}");
    }
    let total: u32 = t.seconds.values().map(|(ok, _)| ok).sum();
    assert!(
        t.failures.is_empty(),
        "{} requests failed (of {}): {:?}",
        t.failures.len(),
        total + t.failures.len() as u32,
        t.failures
    );
    assert!(total > 100, "traffic really ran: {total} requests");
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
