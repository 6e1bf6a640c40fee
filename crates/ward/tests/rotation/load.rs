//! Continuous traffic through a real `ward gate serve` for the rotation
//! scenarios: a plain upstream, the gate process, one mTLS request on a
//! fresh connection at a steady pace, and per-second counters of what
//! succeeded and failed.

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

use super::support::sha256;
use crate::agent::procs::DEADLINE;

/// A plain HTTP upstream answering 200 "ok".
pub(crate) async fn upstream() -> SocketAddr {
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
pub(crate) struct Gate {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl Gate {
    /// Starts the gate with `args` and waits for its listening line.
    pub(crate) fn start(args: &[&str]) -> Gate {
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

/// One request on a fresh mTLS connection; the SHA-256 of every
/// certificate the gate presented, leaf first.
pub(crate) async fn request(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> Result<Vec<String>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let presented: Vec<String> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| sha256(c)).collect())
        .unwrap_or_default();
    if presented.len() < 2 {
        return Err("the gate sent no intermediate".into());
    }
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
    Ok(presented)
}

/// Per-second (ok, failed) counts and what went wrong.
#[derive(Default)]
pub(crate) struct Tally {
    /// Second since the start → (ok, failed).
    pub(crate) seconds: BTreeMap<u64, (u32, u32)>,
    /// Every failure, with its second.
    pub(crate) failures: Vec<String>,
    /// The intermediates the gate presented, in the order first seen.
    pub(crate) gate_intermediates: Vec<String>,
    /// The chains (after the leaf) the gate presented, in the order first seen.
    pub(crate) gate_chains: Vec<Vec<String>>,
}

impl Tally {
    /// Prints the per-second counters and asserts that nothing failed and
    /// that at least `min` requests succeeded.
    pub(crate) fn report(&self, min: u32) {
        for (second, (ok, failed)) in &self.seconds {
            println!("t={second:>3}s ok={ok:>3} failed={failed}");
        }
        let total: u32 = self.seconds.values().map(|(ok, _)| ok).sum();
        assert!(
            self.failures.is_empty(),
            "{} requests failed (of {}): {:?}",
            self.failures.len(),
            total + self.failures.len() as u32,
            self.failures
        );
        assert!(total > min, "traffic really ran: {total} requests");
    }
}

/// Requests through the gate every 50 ms until stopped; each on a new
/// connection made with `connector()` (called per request, so a client
/// that follows its trust bundle can rebuild it).
pub(crate) struct Traffic {
    /// The counters.
    pub(crate) tally: Arc<Mutex<Tally>>,
    /// When the traffic started.
    pub(crate) started: Instant,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// Starts the traffic to `addr`.
    pub(crate) fn start(
        addr: SocketAddr,
        connector: impl Fn() -> TlsConnector + Send + 'static,
    ) -> Traffic {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let task = {
            let tally = tally.clone();
            tokio::spawn(async move {
                loop {
                    if *stop_rx.borrow() {
                        break;
                    }
                    let result = request(&connector(), addr).await;
                    let second = started.elapsed().as_secs();
                    {
                        let mut t = tally.lock().unwrap();
                        let slot = t.seconds.entry(second).or_default();
                        match result {
                            Ok(chain) => {
                                slot.0 += 1;
                                if !t.gate_intermediates.contains(&chain[1]) {
                                    t.gate_intermediates.push(chain[1].clone());
                                }
                                let after_leaf = chain[1..].to_vec();
                                if t.gate_chains.last() != Some(&after_leaf) {
                                    t.gate_chains.push(after_leaf);
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
        Traffic {
            tally,
            started,
            stop,
            task,
        }
    }

    /// Stops the traffic and returns the counters.
    pub(crate) async fn stop(self) -> Tally {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}
