//! The fast path's upstream connections: one plain TCP connection per
//! client connection, kept while the client is active and put into a small
//! gate-wide stash once it goes quiet, so that idle clients hold none and
//! the next busy one skips the connect.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Most idle upstream connections kept.
const STASH_MAX: usize = 64;
/// Stashed connections older than this are closed, not reused.
const STASH_AGE: Duration = Duration::from_secs(30);

/// An upstream connection and where it goes.
#[derive(Debug)]
pub(crate) struct UpConn {
    /// host:port it is connected to.
    pub authority: String,
    /// The connection.
    pub stream: TcpStream,
    /// The upstream stopped taking the current request's body before its
    /// end; the client connection closes after the response.
    pub cut: bool,
}

struct Idle {
    conn: UpConn,
    since: Instant,
}

static STASH: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

fn stash() -> std::sync::MutexGuard<'static, Vec<Idle>> {
    STASH.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps an idle connection for another client connection. Whether it is
/// still open is checked when it is taken out (once, not twice).
pub(crate) fn put(conn: UpConn) {
    let now = Instant::now();
    let mut stash = stash();
    stash.retain(|i| now.duration_since(i.since) < STASH_AGE);
    if stash.len() < STASH_MAX {
        stash.push(Idle { conn, since: now });
    }
}

/// The most recently stashed live connection to `authority`, if any.
pub(crate) fn take(authority: &str) -> Option<UpConn> {
    let now = Instant::now();
    let mut stash = stash();
    while let Some(at) = stash
        .iter()
        .rposition(|i| i.conn.authority == authority && now.duration_since(i.since) < STASH_AGE)
    {
        let idle = stash.swap_remove(at);
        if usable(&idle.conn.stream) {
            return Some(idle.conn);
        }
    }
    None
}

/// Whether an idle connection is still open with nothing unread: the
/// upstream may have closed it (end of stream) or sent bytes nobody asked
/// for; either way it cannot carry a request.
pub(crate) fn usable(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Connects to `authority` within `timeout`.
pub(crate) async fn connect(authority: &str, timeout: Duration) -> Result<UpConn, ConnectError> {
    match tokio::time::timeout(timeout, TcpStream::connect(authority)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(UpConn {
                authority: authority.to_owned(),
                stream,
                cut: false,
            })
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
    async fn stashes_live_connections_and_drops_closed_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let a = connect(&authority, Duration::from_secs(5)).await.unwrap();
        let (mut server_a, _) = listener.accept().await.unwrap();
        put(a);
        let again = take(&authority).expect("a live connection comes back");
        put(again);

        // The upstream closes it: once the close is visible, the stash
        // must not hand it out.
        let closing = take(&authority).expect("still live");
        server_a.shutdown().await.unwrap();
        drop(server_a);
        closing.stream.readable().await.unwrap();
        assert!(!usable(&closing.stream));
        put(closing);
        assert!(take(&authority).is_none());
        assert!(stash().iter().all(|i| i.conn.authority != authority));
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
