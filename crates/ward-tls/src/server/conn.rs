//! One accepted connection, from TCP to the end of HTTP: the TLS handshake
//! under its deadline, the protocol ALPN chose, the [`PeerInfo`] extension
//! on every request, and a graceful finish on shutdown.
//!
//! Split from the accept loop in [`super`] so each reads in one sitting.
//! Nothing here may log request contents or key material.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
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
use tower::util::ServiceExt;
use tracing::debug;

use super::lifetime::{Streams, Tracked};
use super::{BoxError, ConfigSource, PeerInfo};

/// What every connection task shares: the TLS source and one HTTP builder
/// per protocol, each fixed to its protocol so no bytes are sniffed.
pub(super) struct Shared {
    pub(super) tls: Option<Arc<dyn ConfigSource>>,
    pub(super) h1: auto::Builder<TokioExecutor>,
    pub(super) h2: auto::Builder<TokioExecutor>,
    pub(super) handshake_timeout: Duration,
    /// See [`super::ServeOptions::idle_timeout`].
    pub(super) idle_timeout: Option<Duration>,
    /// See [`super::ServeOptions::max_connection_age`].
    pub(super) max_connection_age: Option<Duration>,
    /// Time in-flight requests get once a connection expired.
    pub(super) grace: Duration,
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
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if let Err(error) = tcp.set_nodelay(true) {
        debug!(peer = %addr, %error, "could not set TCP_NODELAY");
    }
    let Some(tls) = &shared.tls else {
        let peer = PeerInfo::plain(addr);
        return serve_connection(tcp, peer, &shared, &shared.h1, service, stop).await;
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
    serve_connection(stream, peer, &shared, builder, service, stop).await;
}

/// Serves HTTP on an established connection until it closes; on shutdown,
/// lets in-flight requests finish first. A connection idle or old past its
/// limits is shut down gracefully too (HTTP/2: GOAWAY), and its in-flight
/// requests get `shared.grace` to finish.
async fn serve_connection<IO, S, B>(
    io: IO,
    peer: PeerInfo,
    shared: &Shared,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let addr = peer.remote_addr;
    let streams = Streams::new();
    let service = WithPeer {
        inner: service,
        peer,
        streams: streams.clone(),
    };
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let expired = streams.expired(shared.idle_timeout, shared.max_connection_age);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        why = expired => {
            debug!(peer = %addr, reason = why.as_str(), in_flight = streams.in_flight(), "closing the connection gracefully");
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(shared.grace, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    debug!(peer = %addr, "in-flight requests did not finish in time; closing");
                    Ok(())
                }
            }
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
/// to each request and counting it in flight until its response is done.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: PeerInfo,
    streams: Streams,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: Body + Unpin + 'static,
{
    type Response = Response<Tracked<B>>;
    type Error = S::Error;
    type Future = InFlight<B, S::Error>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        let guard = self.streams.open();
        let response = self.inner.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Tracked::new(body, guard)))
        })
    }
}

/// A request's response on its way, counted in flight until its body ends.
type InFlight<B, E> = Pin<Box<dyn Future<Output = Result<Response<Tracked<B>>, E>> + Send>>;
