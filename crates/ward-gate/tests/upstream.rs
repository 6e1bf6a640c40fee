//! The gate's own upstream connections (one per HTTP/1.1 client
//! connection, plus a shared stash of idle ones), over real sockets: an
//! in-process gate on 127.0.0.1:0 with the testkit's PKI, a rustls client,
//! and small upstreams that count their connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers each request with the number of the TCP
/// connection it came on; with `close`, it closes every connection after
/// one answer without saying so (as an upstream timing out an idle
/// keep-alive connection would).
async fn upstream(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    // One request head at a time (GETs carry no body).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let body = format!("conn {n}");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Starts a gate forwarding everything to `up`; returns its listener and
/// admin addresses.
async fn gate(up: SocketAddr, dir: &tempfile::TempDir) -> (SocketAddr, SocketAddr) {
    let routes = format!(
        r#"[[tenants.routes]]
name = "all"
upstream = "http://{up}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/*"]
"#
    );
    common::start_gate(&routes, dir).await
}

/// An HTTP/1.1 client over one mTLS connection to the gate.
async fn client(gate: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tls = common::connect(gate).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Waits (bounded) until the gate counts no open client connection.
async fn wait_no_connections(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut tcp = TcpStream::connect(admin).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.unwrap();
        if text.lines().any(|l| l == "ward_gate_connections_active 0") {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> String {
    sender.ready().await.unwrap();
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Empty::new());
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req.unwrap()))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn keep_alive_requests_share_one_upstream_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (up, accepted) = upstream(false).await;
    let (addr, admin) = gate(up, &dir).await;
    let mut c = client(addr).await;
    for _ in 0..5 {
        assert_eq!(get(&mut c).await, "conn 1");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // A new client connection, once the first is gone, reuses the idle
    // upstream connection rather than opening another.
    drop(c);
    wait_no_connections(admin).await;
    let mut d = client(addr).await;
    assert_eq!(get(&mut d).await, "conn 1");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_that_closes_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (up, accepted) = upstream(true).await;
    let (addr, _) = gate(up, &dir).await;
    let mut c = client(addr).await;
    for i in 1..=4 {
        // Each answer comes on a new upstream connection; none fails.
        assert_eq!(get(&mut c).await, format!("conn {i}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind, note it, close.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (addr, _) = gate(closed, &dir).await;
    let mut c = client(addr).await;
    c.ready().await.unwrap();
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Empty::new());
    let resp = c.send_request(req.unwrap()).await.unwrap();
    assert_eq!(resp.status(), 502);
    // The client connection stays usable.
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Empty::new());
    c.ready().await.unwrap();
    assert_eq!(c.send_request(req.unwrap()).await.unwrap().status(), 502);
}
