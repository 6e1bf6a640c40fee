//! Rotation under traffic (issue 5): a client built on `ward-client` makes
//! continuous mTLS requests through a gate whose own identity also comes
//! from the CA, for 30 s, while both 12 s certificates rotate (every ~8 s).
//! Not one request may fail, and both sides must really have rotated.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use ward_client::{BootstrapConfig, CaTrust, Rotator, Token};

use super::procs::{CaProcess, DEADLINE};
use crate::harness::{Backend, Ca};

/// How long traffic runs: each 12 s certificate renews at about 8 s, so both
/// sides rotate three times in this window (the test asks for two).
const TRAFFIC: Duration = Duration::from_secs(30);

/// A plain HTTP upstream answering with the XFCC header the gate set.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    let xfcc = req
                        .headers()
                        .get("x-forwarded-client-cert")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            xfcc,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// `ward gate serve` with its identity from the CA (`--ca`).
struct Gate {
    child: Child,
    addr: SocketAddr,
}

impl Gate {
    fn start(args: &[&str]) -> Gate {
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
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("ward gate: listening on ") {
                        let addr = a.trim().parse().unwrap();
                        // Keep draining stderr so the gate never blocks on it.
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

/// One request on a fresh mTLS connection: (gate leaf fingerprint, client
/// leaf hash the gate reported upstream).
async fn request(connector: &TlsConnector, addr: SocketAddr) -> Result<(String, String), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let gate_leaf =
        ward_pki::Fingerprint::of_der(&tls.get_ref().1.peer_certificates().unwrap()[0]).to_string();
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
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    let hash = body
        .split(';')
        .find_map(|kv| kv.strip_prefix("Hash="))
        .ok_or_else(|| format!("no Hash in the XFCC header: {body}"))?
        .to_owned();
    Ok((gate_leaf, hash))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_mtls_through_the_gate_while_both_identities_rotate() {
    ward_tls::install_default_provider();
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let fingerprint =
        ward_pki::Fingerprint::of_der(&ward_ca::dir::read_certs(&ca.root()).unwrap()[0])
            .to_string();

    // The gate: its identity from the CA, trusted by root fingerprint.
    let gate_token = ca.token(
        "spiffe://example.org/gate",
        &["--cert-ttl", "12s", "--dns", "localhost"],
    );
    let token_file = ca.write("gate-token", &gate_token.secret);
    let upstream = upstream().await;
    let gate = Gate::start(&[
        "--ca",
        &server.url(),
        "--ca-fingerprint",
        &fingerprint,
        "--token-file",
        token_file.to_str().unwrap(),
        "--upstream",
        &format!("http://{upstream}"),
        "--allow-spiffe-id",
        "spiffe://example.org/client",
    ]);

    // The client: ward-client's rotating identity and ClientConfig.
    let client_token = ca.token("spiffe://example.org/client", &["--cert-ttl", "12s"]);
    let rotator = Rotator::bootstrap(BootstrapConfig::new(
        server.url(),
        CaTrust::Fingerprint(fingerprint.parse().unwrap()),
        Token::new(&client_token.secret).unwrap(),
    ))
    .await
    .unwrap();
    let connector = TlsConnector::from(rotator.client_config().unwrap());

    let mut gate_leaves = HashSet::new();
    let mut client_leaves = HashSet::new();
    let mut failures = Vec::new();
    let mut requests = 0u32;
    let end = Instant::now() + TRAFFIC;
    while Instant::now() < end {
        requests += 1;
        match request(&connector, gate.addr).await {
            Ok((gate_leaf, client_leaf)) => {
                gate_leaves.insert(gate_leaf);
                client_leaves.insert(client_leaf);
            }
            Err(e) => failures.push(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {failures:?}",
        failures.len()
    );
    assert!(
        gate_leaves.len() >= 3,
        "the gate's certificate rotated at least twice: {} seen",
        gate_leaves.len()
    );
    assert!(
        client_leaves.len() >= 3,
        "the client's certificate rotated at least twice: {} seen",
        client_leaves.len()
    );
    drop(rotator);
}
