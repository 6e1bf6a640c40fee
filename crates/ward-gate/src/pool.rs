//! The gate's one pool of upstream connections, owned by the runtime (and
//! handed on to the next one on a reload), so that no transport keeps a
//! process-global stash of its own: idle connections to plain `http://`
//! upstreams (below). The shared, multiplexed HTTP/2 connections ([`h2`])
//! belong to one runtime each instead: a reload opens new ones with the
//! new credentials, and the old ones drain.
//!
//! A client connection holds an upstream connection while it is busy and
//! gives it back here once it goes quiet (`IDLE_RELEASE`), so that idle
//! clients hold none and the next busy one skips the connect. The HTTP/1
//! fast path gives back plain TCP connections; the general (hyper) path
//! gives back its HTTP/1 client connections, which it alone can reuse, and
//! takes plain ones too (an HTTP/1 client handshake over a TCP connection
//! writes nothing).

use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::ClientBody;

pub(crate) mod h2;

/// Most idle upstream connections kept (the two stashes this pool
/// replaces kept 64 each).
const MAX_IDLE: usize = 128;
/// Idle plain connections older than this are closed, not reused.
const MAX_AGE_TCP: Duration = Duration::from_secs(30);
/// Idle HTTP/1 client connections older than this are closed, not reused.
const MAX_AGE_HTTP1: Duration = Duration::from_secs(60);

/// A hyper HTTP/1 client connection (driven by whoever holds it).
pub(crate) type Http1Conn = Connection<TokioIo<TcpStream>, ClientBody>;

/// An idle HTTP/1 client connection: its sender and the connection itself
/// (not polled while it is here).
pub(crate) struct Http1Idle {
    /// Sends requests on it.
    pub sender: SendRequest<ClientBody>,
    /// The connection, to be polled again by its next holder.
    pub conn: Pin<Box<Http1Conn>>,
}

/// What an idle connection is.
enum Kind {
    Tcp(TcpStream),
    Http1(Http1Idle),
}

struct Idle {
    /// host:port it is connected to.
    authority: String,
    kind: Kind,
    since: Instant,
}

impl Idle {
    /// Whether it is too old or known closed; a plain connection is checked
    /// for being open when it is taken out (once, not twice).
    fn stale(&self, now: Instant) -> bool {
        let age = now.duration_since(self.since);
        match &self.kind {
            Kind::Tcp(_) => age >= MAX_AGE_TCP,
            Kind::Http1(h) => age >= MAX_AGE_HTTP1 || h.sender.is_closed(),
        }
    }
}

/// Idle upstream connections shared by every client connection of the
/// runtimes that own the pool. (The HTTP/2 connections are not here but
/// in each [`crate::runtime::Runtime`]: they carry that runtime's upstream
/// TLS credentials, and a reload must not reuse them.)
#[derive(Default)]
pub struct UpstreamPool {
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool").finish_non_exhaustive()
    }
}

impl UpstreamPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, authority: String, kind: Kind) {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.retain(|i| !i.stale(now));
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                authority,
                kind,
                since: now,
            });
        }
    }

    /// Keeps an idle plain connection to `authority` for another client
    /// connection.
    pub(crate) fn put_tcp(&self, authority: String, stream: TcpStream) {
        self.put(authority, Kind::Tcp(stream));
    }

    /// Keeps an idle HTTP/1 client connection to `authority`.
    pub(crate) fn put_http1(&self, authority: String, conn: Http1Idle) {
        self.put(authority, Kind::Http1(conn));
    }

    /// The most recently kept live plain connection to `authority`, with
    /// the authority as it was kept (no new string per reuse).
    pub(crate) fn take_tcp(&self, authority: &str) -> Option<(String, TcpStream)> {
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some(at) = idle.iter().rposition(|i| {
            i.authority == authority && matches!(i.kind, Kind::Tcp(_)) && !i.stale(now)
        }) {
            let taken = idle.swap_remove(at);
            if let Kind::Tcp(stream) = taken.kind
                && usable(&stream)
            {
                return Some((taken.authority, stream));
            }
        }
        None
    }

    /// The most recently kept live connection to `authority` for an HTTP/1
    /// client: an HTTP/1 client connection, or else a plain one.
    pub(crate) fn take_for_http1(&self, authority: &str) -> Option<Result<Http1Idle, TcpStream>> {
        let now = Instant::now();
        let mut idle = self.lock();
        if let Some(at) = idle.iter().rposition(|i| {
            i.authority == authority && matches!(i.kind, Kind::Http1(_)) && !i.stale(now)
        }) && let Kind::Http1(conn) = idle.swap_remove(at).kind
        {
            return Some(Ok(conn));
        }
        drop(idle);
        self.take_tcp(authority).map(|(_, stream)| Err(stream))
    }

    #[cfg(test)]
    fn holds(&self, authority: &str) -> bool {
        self.lock().iter().any(|i| i.authority == authority)
    }
}

/// Whether an idle connection is still open with nothing unread: the
/// upstream may have closed it (end of stream) or sent bytes nobody asked
/// for; either way it cannot carry a request.
pub(crate) fn usable(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Connects to `authority` within `timeout` (with `TCP_NODELAY`).
pub(crate) async fn connect(authority: &str, timeout: Duration) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(timeout, TcpStream::connect(authority)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(ConnectError::Failed(e)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// No connection within the connect timeout.
    #[error("connecting to the upstream timed out")]
    Timeout,
    /// Refused, unreachable, or the name did not resolve.
    #[error("connecting to the upstream failed: {0}")]
    Failed(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn keeps_live_connections_and_drops_closed_ones() {
        let pool = UpstreamPool::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let a = connect(&authority, Duration::from_secs(5)).await.unwrap();
        let (mut server_a, _) = listener.accept().await.unwrap();
        pool.put_tcp(authority.clone(), a);
        let (_, again) = pool
            .take_tcp(&authority)
            .expect("a live connection comes back");
        pool.put_tcp(authority.clone(), again);

        // The upstream closes it: once the close is visible, the pool
        // must not hand it out.
        let (_, closing) = pool.take_tcp(&authority).expect("still live");
        server_a.shutdown().await.unwrap();
        drop(server_a);
        closing.readable().await.unwrap();
        assert!(!usable(&closing));
        pool.put_tcp(authority.clone(), closing);
        assert!(pool.take_tcp(&authority).is_none());
        assert!(!pool.holds(&authority));
    }

    #[tokio::test]
    async fn connect_failures_are_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = connect(&authority, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Failed(_)), "{err}");
    }
}
