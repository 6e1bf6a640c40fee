//! HTTP/2 upstream connections (`protocol = "h2"` or `"auto"`): one
//! multiplexed connection per upstream carries the streams of every client
//! connection, so a gRPC client's calls share it instead of each opening
//! its own. Prior knowledge over `http://`; ALPN over `https://`, where an
//! `auto` upstream that picks `http/1.1` is remembered and served by the
//! HTTP/1.1 client from then on.
//!
//! A connection is made by the first request that needs it (others wait
//! for it rather than opening their own) and replaced once it closes.
//! Flow control is hyper's: a stream's window is granted only as the other
//! side reads, so a slow reader on either side bounds what is buffered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::{ConnectError, connect};
use crate::pipeline::UpstreamError;
use crate::proxy::ClientBody;

/// Largest header block accepted from an HTTP/2 upstream.
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// An idle HTTP/2 upstream connection is pinged this often, and closed
/// when a ping goes unanswered for [`PING_TIMEOUT`].
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends requests on a shared HTTP/2 upstream connection.
pub(crate) type H2Sender = http2::SendRequest<ClientBody>;

/// Where an HTTP/2 request goes.
#[derive(Debug)]
pub(crate) struct H2Target<'a> {
    /// host:port.
    pub authority: &'a str,
    /// For `https://`: the TLS configuration (its ALPN offer decides `h2`
    /// or `auto`) and the server name.
    pub tls: Option<(&'a Arc<rustls::ClientConfig>, &'a str)>,
    /// HTTP/1.1 is acceptable when the upstream's ALPN picks it.
    pub auto: bool,
}

impl H2Target<'_> {
    /// Which of an authority's four slots: plain or TLS, `h2` or `auto`.
    fn mode(&self) -> usize {
        usize::from(self.tls.is_some()) * 2 + usize::from(self.auto)
    }
}

/// What a request to an HTTP/2 target is sent on.
pub(crate) enum H2Route {
    /// The shared HTTP/2 connection.
    H2(H2Sender),
    /// An `auto` upstream chose HTTP/1.1 on this new connection: it carries
    /// this request; later ones go through the pooled HTTP/1.1 client.
    Http1Once(http1::SendRequest<ClientBody>),
    /// An `auto` upstream known to speak HTTP/1.1 only.
    Http1,
}

/// One upstream's connection in one mode.
#[derive(Default)]
struct Slot {
    /// The live connection's sender: taken without waiting by every
    /// request while the connection is up.
    ready: Mutex<Option<H2Sender>>,
    /// Held while connecting: requests that arrive meanwhile wait for
    /// this connection instead of opening their own.
    connecting: tokio::sync::Mutex<()>,
    /// An `auto` upstream whose ALPN answer was `http/1.1`.
    http1_only: AtomicBool,
}

impl Slot {
    /// A clone of the live connection's sender, if there is one.
    fn live(&self) -> Option<H2Sender> {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        match ready.as_ref() {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *ready = None;
                None
            }
            None => None,
        }
    }
}

/// The shared HTTP/2 connections of one runtime, one per upstream and
/// mode. Dropped with the runtime: the connections then close once their
/// last stream ends (hyper's client shuts a connection down when its last
/// sender is gone, after the streams in flight).
#[derive(Default)]
pub(crate) struct H2Pool {
    /// By authority (looked up without building a key), then by
    /// [`H2Target::mode`].
    slots: Mutex<HashMap<String, [Arc<Slot>; 4]>>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool").finish_non_exhaustive()
    }
}

impl H2Pool {
    /// The connection to send a request to `target` on, connecting within
    /// `timeout` (TCP and TLS each) when there is none. While the
    /// connection is up this takes one short lock and no await.
    pub(crate) async fn route(
        &self,
        target: &H2Target<'_>,
        timeout: Duration,
    ) -> Result<H2Route, UpstreamError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.get(target.authority) {
                Some(modes) => modes[target.mode()].clone(),
                None => {
                    let modes: [Arc<Slot>; 4] = Default::default();
                    let slot = modes[target.mode()].clone();
                    slots.insert(target.authority.to_owned(), modes);
                    slot
                }
            }
        };
        if target.auto && slot.http1_only.load(Ordering::Relaxed) {
            return Ok(H2Route::Http1);
        }
        if let Some(sender) = slot.live() {
            return Ok(H2Route::H2(sender));
        }
        let _connecting = slot.connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some(sender) = slot.live() {
            return Ok(H2Route::H2(sender));
        }
        // Boxed: connecting (TCP, TLS, HTTP/2 handshake) is rare, and its
        // future would otherwise enlarge every request's.
        match Box::pin(open(target, timeout)).await? {
            Opened::H2(sender) => {
                *slot.ready.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
                Ok(H2Route::H2(sender))
            }
            Opened::Http1(sender) => {
                slot.http1_only.store(true, Ordering::Relaxed);
                Ok(H2Route::Http1Once(sender))
            }
        }
    }
}

enum Opened {
    H2(H2Sender),
    Http1(http1::SendRequest<ClientBody>),
}

async fn open(target: &H2Target<'_>, timeout: Duration) -> Result<Opened, UpstreamError> {
    let authority = target.authority;
    let tcp = connect(authority, timeout).await.map_err(|e| match e {
        ConnectError::Timeout => UpstreamError::ConnectTimeout,
        ConnectError::Failed(e) => UpstreamError::Failed(format!("connecting to {authority}: {e}")),
    })?;
    let Some((tls, host)) = target.tls else {
        return h2_handshake(authority, tcp).await.map(Opened::H2);
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| UpstreamError::Failed(format!("{host:?} is not a valid server name")))?;
    let stream = tokio::time::timeout(timeout, TlsConnector::from(tls.clone()).connect(name, tcp))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(|e| {
            UpstreamError::Failed(format!(
                "TLS to {authority}: {}",
                crate::proxy::error_chain(&e)
            ))
        })?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        return h2_handshake(authority, stream).await.map(Opened::H2);
    }
    if !target.auto {
        return Err(UpstreamError::Failed(format!(
            "the upstream {authority} did not agree to HTTP/2 (ALPN h2)"
        )));
    }
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Failed(format!("upstream {authority}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/1.1 upstream connection ended with an error");
        }
    });
    Ok(Opened::Http1(sender))
}

async fn h2_handshake<T>(authority: &str, io: T) -> Result<H2Sender, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_LIST)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| UpstreamError::Failed(format!("HTTP/2 with {authority}: {e}")))?;
    let authority = authority.to_owned();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, upstream = %authority, "HTTP/2 upstream connection ended with an error");
        }
    });
    Ok(sender)
}
