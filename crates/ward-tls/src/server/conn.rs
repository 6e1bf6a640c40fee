//! One accepted connection, from TCP to the end of HTTP: the TLS handshake
//! under its deadline, the protocol ALPN chose, the [`PeerInfo`] extension
//! on every request, and a graceful finish on shutdown.
//!
//! Split from the accept loop in [`super`] so each reads in one sitting.
//! Nothing here may log request contents or key material.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_rustls::TlsAcceptor;
use tower::Service;
use tower::util::{Oneshot, ServiceExt};
use tracing::debug;

use super::{BoxError, ConfigSource, PeerInfo};

/// What every connection task shares: the TLS source and one HTTP builder
/// per protocol, each fixed to its protocol so no bytes are sniffed.
pub(super) struct Shared {
    pub(super) tls: Option<Arc<dyn ConfigSource>>,
    pub(super) h1: auto::Builder<TokioExecutor>,
    pub(super) h2: auto::Builder<TokioExecutor>,
    pub(super) handshake_timeout: Duration,
}

/// One connection, from TCP to the end of HTTP. Holds `_permit` for its
/// whole life.
pub(super) async fn handle<S, B>(
    tcp: TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    service: S,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if let Err(error) = tcp.set_nodelay(true) {
        debug!(peer = %addr, %error, "could not set TCP_NODELAY");
    }
    let Some(tls) = &shared.tls else {
        let peer = PeerInfo::plain(addr);
        return serve_connection(tcp, peer, &shared.h1, service, stop).await;
    };
    let acceptor = TlsAcceptor::from(tls.current());
    let handshake = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(tcp));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                debug!(peer = %addr, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(peer = %addr, timeout = ?shared.handshake_timeout, "TLS handshake timed out");
                return;
            }
        },
        () = stopped(stop.clone()) => return,
    };
    let peer = PeerInfo::from_tls(addr, stream.get_ref().1);
    let builder = match peer.alpn.as_deref() {
        Some(b"h2") => &shared.h2,
        _ => &shared.h1,
    };
    serve_connection(stream, peer, builder, service, stop).await;
}

/// Serves HTTP on an established connection until it closes; on shutdown,
/// lets in-flight requests finish first.
async fn serve_connection<IO, S, B>(
    io: IO,
    peer: PeerInfo,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let addr = peer.remote_addr;
    let service = WithPeer {
        inner: service,
        peer,
    };
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(peer = %addr, %error, "connection ended with an error");
    }
}

/// Resolves once shutdown is signalled (or the server is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Adapts a tower service to hyper, adding the connection's [`PeerInfo`]
/// to each request.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: PeerInfo,
}

impl<S> hyper::service::Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Oneshot<S, Request<Incoming>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.inner.clone().oneshot(request)
    }
}
