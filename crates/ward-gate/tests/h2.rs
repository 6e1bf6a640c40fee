//! HTTP/2 connection lifetimes at the gate, judged by Node's http2 client
//! (nghttp2): an idle connection (no open stream) gets GOAWAY and is
//! closed, with or without a request before; a connection at its maximum
//! age gets GOAWAY while a slow request is in flight, and that request
//! still completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // this test uses part of the shared helpers
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use ward_testkit::fixture;

/// An HTTP/1.1 upstream: `/slow` answers after 3.5 s, anything else at once.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let body = if head.starts_with("GET /slow ") {
                        tokio::time::sleep(Duration::from_millis(3500)).await;
                        "slow done"
                    } else {
                        "fast"
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A gate with `[timeouts]` set as given, routing everything upstream.
async fn gate(timeouts: &str, dir: &tempfile::TempDir) -> SocketAddr {
    let up = upstream().await;
    let routes = format!(
        "[[tenants.routes]]\nname = \"all\"\nupstream = \"http://{up}\"\n\
         [tenants.routes.allow]\nspiffe_ids = [\"spiffe://example.org/*\"]\n"
    );
    let top = format!("[timeouts]\n{timeouts}\n");
    common::start_gate_with(&top, "", &routes, dir).await.0
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ward-testkit/scripts/h2_client.js")
}

/// Runs the Node HTTP/2 client against `gate`; its events, in order.
async fn node(gate: SocketAddr, paths: &str, deadline_ms: u64) -> Vec<Value> {
    let url = format!("https://localhost:{}", gate.port());
    let paths = paths.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script())
            .arg(url)
            .arg(fixture("root.crt"))
            .arg(fixture("client.crt"))
            .arg(fixture("client.key"))
            .arg(paths)
            .arg(deadline_ms.to_string())
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The time of the first event `ev` (with `path`, when given).
fn at(events: &[Value], ev: &str, path: Option<&str>) -> Option<u64> {
    events
        .iter()
        .find(|e| e["ev"] == ev && path.is_none_or(|p| e["path"] == p))
        .map(|e| e["t"].as_u64().unwrap())
}

#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_and_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate("idle = \"1s\"\nmax_connection_age = \"off\"", &dir).await;

    // One finished request, then nothing.
    let events = node(gate, "/fast", 15_000).await;
    let ended = at(&events, "end", Some("/fast")).expect("the request completed");
    let goaway = at(&events, "goaway", None).unwrap_or_else(|| panic!("no GOAWAY: {events:?}"));
    assert!(goaway >= ended, "{events:?}");
    let closed = at(&events, "close", None).unwrap_or_else(|| panic!("never closed: {events:?}"));
    let idle = closed - ended;
    assert!(
        (900..6_000).contains(&idle),
        "closed {idle} ms after the last stream: {events:?}"
    );

    // No stream at all.
    let events = node(gate, "", 15_000).await;
    assert!(at(&events, "goaway", None).is_some(), "{events:?}");
    let closed = at(&events, "close", None).unwrap_or_else(|| panic!("never closed: {events:?}"));
    assert!(closed < 6_000, "{events:?}");
}

#[tokio::test]
async fn an_http2_connection_at_max_age_gets_goaway_and_finishes_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate("idle = \"1s\"\nmax_connection_age = \"2s\"", &dir).await;
    let events = node(gate, "/slow", 15_000).await;
    let goaway = at(&events, "goaway", None).unwrap_or_else(|| panic!("no GOAWAY: {events:?}"));
    let ended = at(&events, "end", Some("/slow")).unwrap_or_else(|| panic!("{events:?}"));
    assert!(goaway < ended, "GOAWAY came after the request: {events:?}");
    assert!(
        (1_500..3_400).contains(&goaway),
        "GOAWAY at {goaway} ms: {events:?}"
    );
    let done = events.iter().find(|e| e["ev"] == "end").unwrap();
    assert_eq!(done["body"], "slow done", "{events:?}");
    let status = events.iter().find(|e| e["ev"] == "headers").unwrap();
    assert_eq!(status["status"], 200, "{events:?}");
    assert!(at(&events, "close", None).is_some(), "{events:?}");
    assert!(at(&events, "stream_error", None).is_none(), "{events:?}");
}
