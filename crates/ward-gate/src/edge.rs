//! What happens on a new connection before TLS: the PROXY protocol header
//! (from `[listen] proxy_protocol_from` only) and the SNI passthrough
//! decision. Both run under the `client_hello` timeout and read a bounded
//! number of bytes; the PROXY header is consumed, the ClientHello only
//! peeked at.
//!
//! This module never trusts an address claim from a peer that is not
//! listed, and never lets a refused connection reach TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::Shared;
use crate::passthrough::Hello;
use crate::proxy_protocol::{self, Header, Parsed, ProxyError};

/// Why peeking stopped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peeked {
    /// The time ran out.
    Timeout,
    /// The peer closed (or the socket failed) first.
    Closed,
    /// `max` bytes arrived and the question is still open.
    TooLong,
}

/// The first peek's buffer: an ordinary ClientHello (even with a
/// post-quantum key share) or PROXY header fits; a larger one grows it.
const FIRST_PEEK: usize = 4 * 1024;

/// Peeks at the start of `tcp` until `decide` answers, without consuming
/// anything: at most `max` bytes, for at most `within`.
///
/// `peek` returns at once while any byte is unread, so a client that sends
/// its first bytes in pieces is polled with a short, growing pause (a
/// ClientHello or PROXY header almost always arrives in one segment).
pub(crate) async fn peek_until<T>(
    tcp: &TcpStream,
    max: usize,
    within: Duration,
    mut decide: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, Peeked> {
    let mut buf = vec![0u8; max.min(FIRST_PEEK)];
    let work = async {
        let mut seen = 0;
        let mut pause = Duration::from_millis(1);
        loop {
            let n = tcp.peek(&mut buf).await.map_err(|_| Peeked::Closed)?;
            if n == 0 {
                return Err(Peeked::Closed);
            }
            if n > seen {
                seen = n;
                pause = Duration::from_millis(1);
                if let Some(answer) = decide(&buf[..n]) {
                    return Ok(answer);
                }
                if n >= max {
                    return Err(Peeked::TooLong);
                }
                if n == buf.len() {
                    // More may be waiting: look again with room for it.
                    buf.resize((n * 4).min(max), 0);
                    continue;
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    };
    tokio::time::timeout(within, work)
        .await
        .unwrap_or(Err(Peeked::Timeout))
}

/// Reads (and consumes) the PROXY header of a connection from a listed
/// load balancer: the client's address, or `peer` for a `LOCAL` header.
async fn proxy_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    within: Duration,
) -> Result<(SocketAddr, u8), &'static str> {
    let mut failure = None;
    let parsed =
        peek_until(
            tcp,
            proxy_protocol::MAX_HEADER,
            within,
            |bytes| match proxy_protocol::parse(bytes) {
                Ok(Parsed::Incomplete) => None,
                Ok(done) => Some(Some(done)),
                Err(e) => {
                    failure = Some(e);
                    Some(None)
                }
            },
        )
        .await;
    let (header, len, version) = match parsed {
        Ok(Some(Parsed::Complete {
            header,
            len,
            version,
        })) => (header, len, version),
        Ok(_) => {
            return Err(match failure {
                Some(ProxyError::Missing) => "proxy_protocol_missing",
                Some(ProxyError::TooLong) => "proxy_protocol_too_long",
                _ => "proxy_protocol_malformed",
            });
        }
        Err(Peeked::Timeout) => return Err("proxy_protocol_timeout"),
        Err(Peeked::Closed) => return Err("proxy_protocol_missing"),
        Err(Peeked::TooLong) => return Err("proxy_protocol_too_long"),
    };
    let mut consumed = vec![0u8; len];
    tcp.read_exact(&mut consumed)
        .await
        .map_err(|_| "proxy_protocol_missing")?;
    match header {
        Header::Proxied { source, .. } => Ok((source, version)),
        Header::Local => Ok((peer, version)),
    }
}

/// The pre-TLS steps of a connection from `peer`: `Some` with the stream
/// and the client's address when TLS should be terminated here; `None`
/// when the connection was refused or passed through (all accounted for).
pub(crate) async fn front(
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    let runtime = shared.runtime.load_full();
    let listed = &runtime.config.listen.proxy_protocol_from;
    let passthrough = !runtime.passthrough.is_empty();
    if listed.is_empty() && !passthrough {
        return Some((tcp, peer));
    }
    let started = Instant::now();
    let budget = runtime.config.timeouts.client_hello.0;
    let left = || budget.saturating_sub(started.elapsed());
    let mut remote = peer;
    if !listed.is_empty() {
        if crate::forwarding::is_trusted(listed, peer.ip()) {
            match proxy_header(&mut tcp, peer, left()).await {
                Ok((client, version)) => {
                    let v = if version == 1 { "v1" } else { "v2" };
                    shared.metrics.proxy_protocol.with(&[v, "accepted"]).inc();
                    remote = client;
                }
                Err(reason) => {
                    shared.metrics.proxy_protocol.with(&["", "refused"]).inc();
                    return refuse(shared, peer, None, reason, started);
                }
            }
        } else {
            // A header from anyone else is a forged address claim: refused
            // by name rather than as a broken ClientHello.
            let claim = peek_until(&tcp, 12, left(), |b| {
                (b.len() >= 6 || !proxy_protocol::looks_like_header(b))
                    .then(|| proxy_protocol::looks_like_header(b))
            })
            .await;
            if claim == Ok(true) {
                shared.metrics.proxy_protocol.with(&["", "refused"]).inc();
                tracing::warn!(peer = %peer, "PROXY protocol header from an address not in proxy_protocol_from: refused");
                return refuse(shared, peer, None, "proxy_protocol_untrusted", started);
            }
        }
    }
    if passthrough {
        let sni = match crate::passthrough::peek_hello(&tcp, left()).await {
            Ok(Hello::Sni(sni)) => sni,
            Ok(Hello::Unreadable) => None,
            Err(Peeked::Timeout) => {
                return refuse(shared, remote, None, "client_hello_timeout", started);
            }
            Err(_) => return refuse(shared, remote, None, "bad_client_hello", started),
        };
        if let Some(name) = sni.as_deref()
            && let Some(route) = runtime.passthrough.find(name, |n| runtime.serves_sni(n))
        {
            crate::passthrough::forward(tcp, remote, name, &route, shared, stop.clone()).await;
            return None;
        }
    }
    Some((tcp, remote))
}

/// Counts and audits a connection refused before TLS.
fn refuse<T>(
    shared: &Shared,
    remote: SocketAddr,
    sni: Option<&str>,
    reason: &'static str,
    started: Instant,
) -> Option<T> {
    shared
        .metrics
        .handshakes
        .with(&["failure", reason, "", "", "", "", ""])
        .inc();
    shared
        .metrics
        .handshake_seconds
        .with(&["", "failure"])
        .observe(started.elapsed().as_secs_f64());
    shared.audit.record(&serde_json::json!({
        "event": "handshake",
        "remote": remote.to_string(),
        "sni": sni,
        "result": "refused",
        "reason": reason,
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
    }));
    None
}
