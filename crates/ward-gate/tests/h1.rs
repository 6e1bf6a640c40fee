//! The HTTP/1.1 fast path over real sockets, byte for byte: an in-process
//! gate on 127.0.0.1:0 with the testkit's PKI, a rustls client that writes
//! raw requests and reads raw responses, and an upstream that answers by
//! path (echo the head, chunked, close-delimited, interim, garbage, …).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// Reads one request (head and body, Content-Length or chunked) from an
/// upstream connection; `None` at end of stream.
async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                let n = tcp.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                let n = tcp.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap())
    {
        while buf.len() < len {
            let n = tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        body = buf.drain(..len).collect();
    }
    Some((head, body))
}

/// An upstream that answers by request path.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((head, body)) = read_request(&mut tcp, &mut buf).await {
                    let path = head.split(' ').nth(1).unwrap().to_owned();
                    let answer: Vec<u8> = match path.as_str() {
                        "/echo" => {
                            let text = head.clone();
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                                text.len()
                            )
                            .into_bytes()
                        }
                        "/body" => {
                            let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
                            let text = format!("{} {sum}", body.len());
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                                text.len()
                            )
                            .into_bytes()
                        }
                        "/chunked" => {
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nTrailer: x-t\r\n\r\n\
                            5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-t: done\r\n\r\n"
                                .to_vec()
                        }
                        "/big" => {
                            let body = vec![b'z'; 300_000];
                            let mut a = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            a.extend_from_slice(&body);
                            a
                        }
                        "/interim" => b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                            HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            .to_vec(),
                        "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n".to_vec(),
                        "/close" => {
                            let _ = tcp
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
                                .await;
                            return;
                        }
                        "/garbage" => {
                            let _ = tcp.write_all(b"this is not http\r\n\r\n").await;
                            return;
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
                    };
                    if tcp.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn gate(up: SocketAddr, dir: &tempfile::TempDir) -> SocketAddr {
    let routes = format!(
        r#"[[tenants.routes]]
name = "private"
path_prefix = "/private"
upstream = "http://{up}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://other.org/*"]
[[tenants.routes]]
name = "all"
path_prefix = "/"
upstream = "http://{up}"
identity_headers = "rfc9440"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/*"]
"#
    );
    common::start_gate(&routes, dir).await.0
}

type Client = TlsStream<TcpStream>;

async fn connect(gate: SocketAddr) -> Client {
    common::connect(gate).await
}

/// A response as read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// Reads one response from the client connection. `head_request`: no body.
async fn read_response(c: &mut Client, buf: &mut Vec<u8>, head_request: bool) -> Resp {
    let fut = async {
        let mut chunk = vec![0u8; 64 * 1024];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = c.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before a response head: {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        buf.drain(..head_end);
        let status = head[9..12].parse().unwrap();
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse::<usize>().unwrap());
        let body = if head_request {
            Vec::new()
        } else if lower.contains("transfer-encoding: chunked") {
            // Raw framing: up to and including the final CRLF CRLF.
            loop {
                // The test's chunked bodies end with a trailer section.
                if buf.windows(5).any(|w| w == b"\r\n0\r\n") && buf.ends_with(b"\r\n\r\n") {
                    break std::mem::take(buf);
                }
                let n = c.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(len) = length {
            while buf.len() < len {
                let n = c.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed inside the body");
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..len).collect()
        } else {
            // Close-delimited.
            let mut rest = std::mem::take(buf);
            loop {
                match c.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => rest.extend_from_slice(&chunk[..n]),
                }
            }
            rest
        };
        Resp { status, head, body }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("a response in time")
}

/// Whether the gate closed the connection (end of stream, no more bytes).
async fn closed(c: &mut Client) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(20), c.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    gate: SocketAddr,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let gate = gate(up, &dir).await;
    Setup { _dir: dir, gate }
}

async fn exchange(c: &mut Client, buf: &mut Vec<u8>, raw: &[u8]) -> Resp {
    c.write_all(raw).await.unwrap();
    read_response(c, buf, raw.starts_with(b"HEAD ")).await
}

/// A plain `GET /echo` on the connection.
async fn echo(c: &mut Client, buf: &mut Vec<u8>) -> Resp {
    exchange(c, buf, b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n").await
}

#[tokio::test]
async fn identity_headers_are_replaced_and_hop_by_hop_dropped() {
    let s = setup().await;
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    let r = exchange(
        &mut c,
        &mut buf,
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Client-Cert: By=spoof\r\n\
          X-Ward-Spiffe-Id: spiffe://example.org/admin\r\nclient-cert: :AAAA:\r\n\
          Connection: x-drop\r\nx-drop: 1\r\nKeep-Alive: 5\r\nx-forwarded-for: 203.0.113.9\r\n\
          x-keep: yes\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = r.text().to_ascii_lowercase();
    assert!(seen.starts_with("get /echo http/1.1\r\n"), "{seen}");
    assert!(!seen.contains("spoof") && !seen.contains("spiffe://example.org/admin"));
    assert!(!seen.contains("x-drop") && !seen.contains("keep-alive"));
    assert!(seen.contains("x-keep: yes"));
    // Not a trusted proxy: its own x-forwarded-for is dropped.
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\r\n"), "{seen}");
    assert!(!seen.contains("203.0.113.9"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: https\r\n"));
    let xfcc = seen
        .lines()
        .find(|l| l.starts_with("x-forwarded-client-cert: "))
        .expect("an xfcc field");
    assert!(
        xfcc.contains("hash=") && xfcc.contains("uri=spiffe://example.org/"),
        "{xfcc}"
    );
    assert!(seen.contains("x-ward-spiffe-id: spiffe://example.org/"));
    assert_eq!(seen.matches("client-cert: :").count(), 1, "{seen}");
    assert!(!seen.contains(":aaaa:"));
}

#[tokio::test]
async fn bodies_chunked_responses_and_keep_alive() {
    let s = setup().await;
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();

    // A request body far larger than one read, then a chunked response
    // with an extension and a trailer, passed through unchanged.
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let mut raw = format!(
        "POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = exchange(&mut c, &mut buf, &raw).await;
    assert_eq!(r.text(), format!("1000000 {sum}"));

    let r = exchange(
        &mut c,
        &mut buf,
        b"GET /chunked HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        r.text(),
        "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-t: done\r\n\r\n"
    );

    // A large response streams through.
    let r = exchange(
        &mut c,
        &mut buf,
        b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(r.body.len(), 300_000);

    // Interim responses are dropped, the final one arrives.
    let r = exchange(
        &mut c,
        &mut buf,
        b"GET /interim HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    // HEAD: the length is announced, no body follows, the connection goes on.
    let r = exchange(
        &mut c,
        &mut buf,
        b"HEAD /head HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(r.header("content-length"), Some("99"));
    let r = echo(&mut c, &mut buf).await;
    assert_eq!(r.status, 200);
    assert!(buf.is_empty(), "no stray bytes after HEAD: {buf:?}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let s = setup().await;
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    c.write_all(
        b"POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc\
          GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /private/x HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let a = read_response(&mut c, &mut buf, false).await;
    assert_eq!(
        a.text(),
        format!("3 {}", u64::from(b'a') + u64::from(b'b') + u64::from(b'c'))
    );
    let b = read_response(&mut c, &mut buf, false).await;
    assert_eq!(b.status, 404, "the upstream's own 404");
    let forbidden = read_response(&mut c, &mut buf, false).await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&forbidden.body).unwrap();
    assert_eq!(v["error"], "forbidden");
    let d = read_response(&mut c, &mut buf, false).await;
    assert!(d.text().starts_with("GET /echo HTTP/1.1"));
}

#[tokio::test]
async fn close_delimited_responses_and_connection_close() {
    let s = setup().await;
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    let r = exchange(
        &mut c,
        &mut buf,
        b"GET /close HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "until the end");

    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    let r = exchange(
        &mut c,
        &mut buf,
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut c).await);
}

#[tokio::test]
async fn a_garbage_upstream_response_is_a_502() {
    let s = setup().await;
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    let r = exchange(
        &mut c,
        &mut buf,
        b"GET /garbage HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 502);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "bad_gateway");
    // The client connection goes on; a new upstream connection is used.
    let r = echo(&mut c, &mut buf).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn malformed_requests_get_a_precise_error_and_a_close() {
    let s = setup().await;
    for (raw, status) in [
        (
            &b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            400,
        ),
        (
            b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
            400,
        ),
        (
            b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            400,
        ),
        (
            b"GET /echo HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
            400,
        ),
        (b"GET\x01 / HTTP/1.1\r\n\r\n", 400),
    ] {
        let mut c = connect(s.gate).await;
        let mut buf = Vec::new();
        let r = exchange(&mut c, &mut buf, raw).await;
        assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(closed(&mut c).await);
    }
    // A head larger than the limit: 431, closed, nothing forwarded.
    let mut c = connect(s.gate).await;
    let mut raw = b"GET /echo HTTP/1.1\r\nHost: a\r\n".to_vec();
    while raw.len() < 70 * 1024 {
        raw.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
    }
    let _ = c.write_all(&raw).await;
    let mut buf = Vec::new();
    let r = read_response(&mut c, &mut buf, false).await;
    assert_eq!(r.status, 431);
    assert!(closed(&mut c).await);
    // Too many fields: 431 as well.
    let mut c = connect(s.gate).await;
    let mut raw = b"GET /echo HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..150 {
        raw.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let mut buf = Vec::new();
    let r = exchange(&mut c, &mut buf, &raw).await;
    assert_eq!(r.status, 431);
}

#[tokio::test]
async fn unusual_requests_take_the_general_path() {
    let s = setup().await;
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    // A fast request first, then a chunked request body (general path),
    // then more requests on the same connection.
    let r = echo(&mut c, &mut buf).await;
    assert_eq!(r.status, 200);
    let r = exchange(
        &mut c,
        &mut buf,
        b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let sum: u64 = b"abcde".iter().map(|&b| u64::from(b)).sum();
    assert_eq!(r.text(), format!("5 {sum}"));
    let r = echo(&mut c, &mut buf).await;
    assert!(r.text().contains("x-ward-spiffe-id"), "{}", r.text());

    // HTTP/1.0 from the first request.
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    let r = exchange(
        &mut c,
        &mut buf,
        b"GET /echo HTTP/1.0\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("x-forwarded-client-cert"));
}

#[tokio::test]
async fn a_client_that_goes_quiet_keeps_working() {
    // Past the release delay the connection gives back its buffers and its
    // upstream connection; the next request must not notice.
    let s = setup().await;
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    for _ in 0..2 {
        let r = echo(&mut c, &mut buf).await;
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // A request split across writes with a pause inside the head.
    c.write_all(b"GET /echo HTTP/1.1\r\nHo").await.unwrap();
    c.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"st: localhost\r\n\r\n").await.unwrap();
    let r = read_response(&mut c, &mut buf, false).await;
    assert_eq!(r.status, 200);
}

/// An upstream that refuses every upload at once: it answers 413 after the
/// request head, without reading the body, and closes (`hold`: keeps the
/// connection open, still reading nothing).
async fn refusing_upstream(hold: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                if hold {
                    std::future::pending::<()>().await;
                }
                // Close with the body unread (a reset, as real servers do).
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upload_the_upstream_stops_reading_ends_the_connection() {
    upload_refused(false).await;
}

/// The upstream answers and then neither reads nor closes: the answer must
/// reach the client at once, not after the 300 s idle limit.
#[tokio::test]
async fn an_early_answer_from_an_upstream_that_holds_the_socket_arrives_at_once() {
    upload_refused(true).await;
}

async fn upload_refused(hold: bool) {
    let dir = tempfile::tempdir().unwrap();
    let up = refusing_upstream(hold).await;
    let gate = gate(up, &dir).await;
    let c = connect(gate).await;
    let (mut rd, mut wr) = tokio::io::split(c);
    // 8 MB: far more than the socket buffers between gate and upstream.
    // Its bytes spell requests, so a gate that parsed the unread rest of
    // the body as the next request would answer them.
    let mut raw =
        b"POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Length: 8388608\r\n\r\n".to_vec();
    let request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut body = Vec::with_capacity(8 << 20);
    while body.len() < 8 << 20 {
        body.extend_from_slice(request);
    }
    body.truncate(8 << 20);
    raw.extend_from_slice(&body);
    let writer = tokio::spawn(async move {
        // The gate stops reading at some point; the write may fail then.
        let _ = wr.write_all(&raw).await;
        wr
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the gate closes the connection");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 413 ") || text.starts_with("HTTP/1.1 502 "),
        "{text}"
    );
    assert_eq!(
        text.matches("HTTP/1.1").count(),
        1,
        "one answer only: {text}"
    );
    writer.abort();
}

/// A request carrying every spelling of the fields the gate owns, sent as
/// HTTP/1.1 (fast path) or HTTP/1.0 (hyper's path).
fn spoofing_request(version: &str) -> Vec<u8> {
    format!(
        "GET /echo HTTP/{version}\r\nHost: localhost\r\nx_ward_spiffe_id: spiffe://evil/x\r\n\
         x_forwarded_client_cert: By=evil\r\nX_Ward_Anything: evil\r\nclient_cert: :ZXZpbA==:\r\n\
         Forwarded: for=198.51.100.1\r\nX-Real-IP: 198.51.100.2\r\nX-Forwarded-For: 198.51.100.3\r\n\
         x_forwarded_for: 198.51.100.4\r\nX-Forwarded-Host: evil.example\r\nx_real_ip: 198.51.100.5\r\n\
         x-forwarded-proto: http\r\nx_custom: kept\r\n\r\n"
    )
    .into_bytes()
}

/// What the upstream saw of [`spoofing_request`], lowercase.
async fn seen_by_upstream(gate: SocketAddr, version: &str) -> String {
    let mut c = connect(gate).await;
    let mut buf = Vec::new();
    let r = exchange(&mut c, &mut buf, &spoofing_request(version)).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.text().to_ascii_lowercase()
}

#[tokio::test]
async fn underscore_and_forwarding_fields_never_reach_the_upstream() {
    let s = setup().await;
    for version in ["1.1", "1.0"] {
        let seen = seen_by_upstream(s.gate, version).await;
        for gone in [
            "evil",
            "198.51.100.",
            "forwarded:",
            "x-real-ip",
            "x_real_ip",
            "x_ward",
            "x_forwarded",
            "client_cert",
            "x-forwarded-proto: http\r",
        ] {
            assert!(
                !seen.contains(gone),
                "HTTP/{version}: {gone:?} reached the upstream: {seen}"
            );
        }
        assert!(
            seen.contains("x-forwarded-for: 127.0.0.1\r\n"),
            "HTTP/{version}: {seen}"
        );
        assert!(
            seen.contains("x-forwarded-proto: https\r\n"),
            "HTTP/{version}: {seen}"
        );
        assert!(
            seen.contains("x-ward-spiffe-id: spiffe://example.org/"),
            "HTTP/{version}: {seen}"
        );
        assert!(seen.contains("x_custom: kept"), "HTTP/{version}: {seen}");
    }
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarding_fields() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let routes = format!(
        "[[tenants.routes]]\nname = \"all\"\nupstream = \"http://{up}\"\n\
         [tenants.routes.allow]\nspiffe_ids = [\"spiffe://example.org/*\"]\n"
    );
    let (gate, _) =
        common::start_gate_with("", "trusted_proxies = [\"127.0.0.0/8\"]", &routes, &dir).await;
    for version in ["1.1", "1.0"] {
        let seen = seen_by_upstream(gate, version).await;
        assert!(
            seen.contains("x-forwarded-for: 198.51.100.3, 127.0.0.1\r\n"),
            "HTTP/{version}: {seen}"
        );
        assert!(
            seen.contains("forwarded: for=198.51.100.1\r\n"),
            "HTTP/{version}: {seen}"
        );
        assert!(
            seen.contains("x-real-ip: 198.51.100.2\r\n"),
            "HTTP/{version}: {seen}"
        );
        // Identity fields and underscore spellings stay the gate's.
        for gone in [
            "spiffe://evil",
            "by=evil",
            "x_forwarded_for",
            "x_real_ip",
            "x-forwarded-proto: http\r",
        ] {
            assert!(!seen.contains(gone), "HTTP/{version}: {gone:?}: {seen}");
        }
    }
}

#[tokio::test]
async fn a_content_length_list_goes_upstream_as_one_value_or_is_refused() {
    let s = setup().await;
    // hyper's parser (HTTP/1.0 takes that path) refuses a list in one
    // field by itself; equal repeated fields pass it.
    for (version, lengths) in [
        ("1.1", "Content-Length: 5, 5\r\n"),
        ("1.1", "Content-Length: 5\r\ncontent-length: 5\r\n"),
        ("1.0", "Content-Length: 5\r\ncontent-length: 5\r\n"),
    ] {
        let mut c = connect(s.gate).await;
        let mut buf = Vec::new();
        let raw = format!("POST /echo HTTP/{version}\r\nHost: localhost\r\n{lengths}\r\nhello");
        let r = exchange(&mut c, &mut buf, raw.as_bytes()).await;
        assert_eq!(r.status, 200, "HTTP/{version}: {r:?}");
        let seen = r.text().to_ascii_lowercase();
        assert!(
            seen.contains("content-length: 5\r\n"),
            "HTTP/{version}: {seen}"
        );
        assert!(!seen.contains("5, 5"), "HTTP/{version}: {seen}");
        assert_eq!(
            seen.matches("content-length").count(),
            1,
            "HTTP/{version}: {seen}"
        );
    }
    for version in ["1.1", "1.0"] {
        let mut c = connect(s.gate).await;
        let mut buf = Vec::new();
        let raw = format!(
            "POST /echo HTTP/{version}\r\nHost: localhost\r\nContent-Length: 5, 6\r\n\r\nhello!"
        );
        let r = exchange(&mut c, &mut buf, raw.as_bytes()).await;
        assert_eq!(r.status, 400, "HTTP/{version}: {r:?}");
    }
}

#[tokio::test]
async fn a_malformed_chunk_size_is_the_clients_fault() {
    let s = setup().await;
    let mut c = connect(s.gate).await;
    let mut buf = Vec::new();
    let r = exchange(
        &mut c,
        &mut buf,
        b"POST /body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          zz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{r:?} {}", r.text());
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["error"], "bad_request", "{json}");
}
