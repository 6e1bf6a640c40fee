//! The fast path's upstream connection: one plain TCP connection per busy
//! client connection, taken from and given back to the runtime's
//! [`UpstreamPool`] (see [`crate::pool`]).

use std::time::Duration;

use tokio::net::TcpStream;

use crate::pool::{self, ConnectError, UpstreamPool};

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

/// Gives an idle connection back to the pool.
pub(crate) fn put(pool: &UpstreamPool, up: UpConn) {
    pool.put_tcp(up.authority, up.stream);
}

/// The most recently pooled live connection to `authority`, if any.
pub(crate) fn take(pool: &UpstreamPool, authority: &str) -> Option<UpConn> {
    pool.take_tcp(authority).map(|(authority, stream)| UpConn {
        authority,
        stream,
        cut: false,
    })
}

/// Connects to `authority` within `timeout`.
pub(crate) async fn connect(authority: &str, timeout: Duration) -> Result<UpConn, ConnectError> {
    pool::connect(authority, timeout)
        .await
        .map(|stream| UpConn {
            authority: authority.to_owned(),
            stream,
            cut: false,
        })
}
