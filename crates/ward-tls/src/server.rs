//! Serving HTTP over TLS (and plain HTTP) for the CA and the gate.
//!
//! [`serve_https`] owns the accept loop: one task per connection, the TLS
//! handshake under a deadline, HTTP/2 or HTTP/1.1 as ALPN chose, a
//! [`PeerInfo`] extension on every request so handlers see who is calling,
//! a cap on open connections, and a graceful drain on shutdown.
//! [`serve_http`] is the same path without TLS.
//!
//! The TLS configuration is read from a [`ConfigSource`] at each handshake,
//! so a credential store that publishes fresh configurations (or a
//! [`crate::credentials::Credentials`] inside one configuration) rotates
//! certificates without restarting the listener.
//!
//! This module decides nothing about identity: it reports the chain rustls
//! verified, and authorization happens in the service. It never logs
//! request contents or key material.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::{CipherSuite, ProtocolVersion, ServerConfig, ServerConnection};
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinError, JoinSet};
use tower::Service;
use tracing::{debug, warn};

use crate::Error;

mod conn;
pub mod lifetime;

use conn::{Shared, handle};

/// The ALPN protocol IDs an HTTP server offers, most preferred first.
pub const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How long the accept loop pauses after an error that is not about one
/// connection (for example, out of file descriptors), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

type BoxError = Box<dyn StdError + Send + Sync>;

/// Offers HTTP/2 and HTTP/1.1 over ALPN (replacing any protocols set).
pub fn set_http_alpn(config: &mut ServerConfig) {
    config.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
}

/// Where the server gets the TLS configuration for each new handshake.
///
/// Implemented for a fixed `Arc<ServerConfig>` (which may still rotate its
/// certificate through a [`crate::credentials::Credentials`]) and for a
/// `watch::Receiver` fed by a credential store.
pub trait ConfigSource: Send + Sync + 'static {
    /// The configuration the next handshake uses.
    fn current(&self) -> Arc<ServerConfig>;
}

impl ConfigSource for Arc<ServerConfig> {
    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(self)
    }
}

impl ConfigSource for watch::Receiver<Arc<ServerConfig>> {
    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.borrow())
    }
}

/// Limits and timeouts of a server. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest time from accepting a TCP connection to a finished TLS
    /// handshake; slower clients are dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// Longest time an HTTP/1 client may take to send a request's headers,
    /// counted from when the server starts waiting for them (so it also
    /// closes idle keep-alive connections). Default 10 s.
    pub header_read_timeout: Duration,
    /// Whether HTTP/1.1 connections may carry more than one request.
    /// Default true.
    pub keep_alive: bool,
    /// Interval of HTTP/2 PING frames that detect dead peers; `None` sends
    /// none. Default 60 s.
    pub http2_keep_alive_interval: Option<Duration>,
    /// Longest time a connection may stay open with no request in flight
    /// (HTTP/2 included: hyper has no idle limit of its own there); then
    /// it is shut down gracefully (HTTP/2 GOAWAY). `None`: no limit.
    /// Default 5 min.
    pub idle_timeout: Option<Duration>,
    /// Longest time a connection may stay open at all; then it is shut
    /// down gracefully: HTTP/2 sends GOAWAY, in-flight requests get
    /// `drain_timeout` to finish. `None`: no limit. Default 1 h.
    pub max_connection_age: Option<Duration>,
    /// Most connections open at once, handshakes included. When the limit
    /// is reached the server stops accepting: new connections wait in the
    /// kernel's listen backlog (and are refused by the kernel once that is
    /// full) until one closes. Default 1024.
    pub max_connections: usize,
    /// After shutdown, how long open connections get to finish their
    /// in-flight requests before they are closed. Default 30 s.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            keep_alive: true,
            http2_keep_alive_interval: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(300)),
            max_connection_age: Some(Duration::from_secs(3600)),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Who is on the other end of a connection; inserted as a request extension
/// into every request served by [`serve_https`] and [`serve_http`]. Holds
/// no secrets.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's TCP address.
    pub remote_addr: SocketAddr,
    /// The client's certificate chain, leaf first, as rustls verified it;
    /// `None` when the client sent none (or over plain HTTP).
    pub peer_chain: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The server name the client asked for (SNI), if any.
    pub sni: Option<String>,
    /// Negotiated TLS version; `None` over plain HTTP.
    pub tls_version: Option<ProtocolVersion>,
    /// Negotiated cipher suite; `None` over plain HTTP.
    pub cipher: Option<CipherSuite>,
    /// Negotiated ALPN protocol (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
}

impl PeerInfo {
    /// What is known about a plain-TCP peer: its address.
    pub fn plain(remote_addr: SocketAddr) -> Self {
        PeerInfo {
            remote_addr,
            peer_chain: None,
            sni: None,
            tls_version: None,
            cipher: None,
            alpn: None,
        }
    }

    /// What a finished rustls handshake tells about the peer.
    pub fn from_tls(remote_addr: SocketAddr, conn: &ServerConnection) -> Self {
        PeerInfo {
            remote_addr,
            peer_chain: conn
                .peer_certificates()
                .filter(|chain| !chain.is_empty())
                .map(|chain| Arc::new(chain.iter().map(|c| c.clone().into_owned()).collect())),
            sni: conn.server_name().map(str::to_owned),
            tls_version: conn.protocol_version(),
            cipher: conn.negotiated_cipher_suite().map(|s| s.suite()),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        }
    }

    /// The client's end-entity certificate, if it sent one.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.peer_chain.as_deref().and_then(|chain| chain.first())
    }
}

/// Serves `service` over TLS on `listener` until `shutdown` resolves, then
/// drains.
///
/// Each connection runs in its own task: the TLS handshake (configuration
/// from `tls` at that moment, under `opts.handshake_timeout`; failures are
/// logged at debug level and the socket dropped), then HTTP/2 if ALPN chose
/// `h2` and HTTP/1.1 otherwise (see [`set_http_alpn`]). Every request
/// carries a [`PeerInfo`] extension. At most `opts.max_connections` are
/// open at once.
///
/// When `shutdown` resolves the listener is closed (new connections are
/// refused), handshakes in progress are dropped, and open connections
/// finish their in-flight requests (HTTP/1.1 then closes, HTTP/2 sends
/// GOAWAY). Returns `Ok(())` once all have closed, or
/// `Err(Error::Timeout)` after closing the stragglers when
/// `opts.drain_timeout` passes first. Also fails at once with
/// `Error::Input` when `opts.max_connections` is 0 or too large.
///
/// Accept errors never end the loop: per-connection ones are skipped, the
/// others (such as running out of file descriptors) are logged and retried
/// after a pause.
pub async fn serve_https<S, B>(
    listener: TcpListener,
    tls: impl ConfigSource,
    service: S,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve(listener, Some(Arc::new(tls)), service, opts, shutdown).await
}

/// [`serve_https`] without TLS: HTTP/1.1 only (no h2c), and every
/// [`PeerInfo`] has just the remote address. For listeners that must not
/// require TLS, such as the CA's `--http-listen`.
pub async fn serve_http<S, B>(
    listener: TcpListener,
    service: S,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve(listener, None, service, opts, shutdown).await
}

async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<Arc<dyn ConfigSource>>,
    service: S,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if opts.max_connections == 0 || opts.max_connections > Semaphore::MAX_PERMITS {
        return Err(Error::Input(format!(
            "max_connections must be between 1 and {}, not {}",
            Semaphore::MAX_PERMITS,
            opts.max_connections
        )));
    }
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    let shared = Arc::new(Shared {
        tls,
        h1: http_builder(&opts).http1_only(),
        h2: http_builder(&opts).http2_only(),
        handshake_timeout: opts.handshake_timeout,
        idle_timeout: opts.idle_timeout,
        max_connection_age: opts.max_connection_age,
        grace: opts.drain_timeout,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => report_task(joined),
            (tcp, addr, permit) = next_connection(&listener, &limit) => {
                let conn = handle(tcp, addr, shared.clone(), service.clone(), stop_rx.clone(), permit);
                tasks.spawn(conn);
            }
        }
    }

    // Close the socket first, so that anyone who sees a connection being
    // drained also sees new connections refused.
    drop(listener);
    let _ = stop_tx.send(true);
    debug!(open = tasks.len(), "shutting down: draining connections");
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            report_task(joined);
        }
    };
    if tokio::time::timeout(opts.drain_timeout, drain)
        .await
        .is_ok()
    {
        return Ok(());
    }
    let left = tasks.len();
    warn!(
        left,
        "drain timeout passed: closing the remaining connections"
    );
    tasks.shutdown().await;
    Err(Error::Timeout(format!(
        "draining {left} connection(s) at shutdown"
    )))
}

fn http_builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(opts.keep_alive);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(opts.http2_keep_alive_interval);
    builder
}

/// Waits for a connection slot, then for a connection.
async fn next_connection(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            // The semaphore is never closed; if it were, accept nothing.
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((tcp, addr)) => return (tcp, addr, permit),
            Err(error) if is_connection_error(&error) => {
                debug!(%error, "accept: connection failed before it was accepted");
            }
            Err(error) => {
                warn!(%error, "accept failed; pausing before the next try");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn report_task(joined: Result<(), JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        warn!(%error, "a connection task panicked");
    }
}
