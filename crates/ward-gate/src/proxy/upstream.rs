//! A client connection's own HTTP/1.1 connection to a plain `http://`
//! upstream.
//!
//! An HTTP/1.1 client sends one request at a time, so its requests can go
//! over one upstream connection it owns: no pool checkout, and no hand-off
//! to a separate connection task. The upstream connection is driven by
//! [`Upstreams::drive`], which the client connection's own task polls next
//! to its HTTP server, so the request, the upstream I/O and the response
//! body all run in one task.
//!
//! Connected lazily (reusing an idle one from the runtime's
//! [`UpstreamPool`] when there is one), reconnected after a close or an
//! error, and given back to the pool once the client connection has been quiet for
//! [`IDLE_RELEASE`], so that idle client connections do not each hold an
//! upstream connection. Anything this cannot serve (a second request while
//! one is in flight) goes through the shared pooled client instead.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::ClientBody;
use crate::pipeline::UpstreamError;
use crate::pool::{ConnectError, Http1Conn as UpConn, Http1Idle, UpstreamPool};

/// How long an unused upstream connection is kept for its client connection.
pub(crate) const IDLE_RELEASE: Duration = Duration::from_millis(250);

/// An error and every error beneath it, `: `-separated. hyper's client
/// says only "client error (Connect)"; why a TLS upstream was refused
/// (name mismatch, unknown CA, expired…) is in the rustls error further
/// down, and operators need it in the log line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(inner) = next {
        let text = inner.to_string();
        // Wrappers such as io::Error display their inner error already.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = inner.source();
    }
    out
}

#[derive(Default)]
struct State {
    /// The idle sender and the authority it is connected to.
    sender: Option<(String, SendRequest<ClientBody>)>,
    /// A request holds the sender.
    busy: bool,
    /// The connection, polled by [`Upstreams::drive`].
    conn: Option<Pin<Box<UpConn>>>,
    /// Fires when the connection may have been idle for [`IDLE_RELEASE`].
    release: Option<Pin<Box<Sleep>>>,
    /// When the sender was last given back.
    last_used: Option<Instant>,
    /// The task polling [`Upstreams::drive`].
    waker: Option<Waker>,
}

impl State {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// One client connection's upstream connection (see the module docs).
pub struct Upstreams {
    state: Mutex<State>,
    /// Where idle connections come from and go back to.
    pool: Arc<UpstreamPool>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

/// The right to use the connection for one request; gives it back on drop.
pub(crate) struct Lease<'a> {
    owner: &'a Upstreams,
    sender: Option<(String, SendRequest<ClientBody>)>,
}

impl Upstreams {
    /// A client connection's (not yet connected) upstream connection,
    /// taking idle ones from and giving them back to `pool`.
    pub fn new(pool: Arc<UpstreamPool>) -> Self {
        Upstreams {
            state: Mutex::default(),
            pool,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection for one request, or `None` while another request
    /// holds it.
    pub(crate) fn lease(&self) -> Option<Lease<'_>> {
        let mut state = self.lock();
        if state.busy {
            return None;
        }
        state.busy = true;
        let sender = state.sender.take();
        Some(Lease {
            owner: self,
            sender,
        })
    }

    /// Drives the upstream connection; never resolves. Poll it from the
    /// client connection's task for as long as requests may use it.
    pub(crate) async fn drive(&self) {
        poll_fn(|cx| {
            let mut state = self.lock();
            if let Some(conn) = state.conn.as_mut()
                && conn.as_mut().poll(cx).is_ready()
            {
                // Closed by the upstream, or failed: the next request reconnects.
                state.conn = None;
                state.sender = None;
                state.release = None;
            }
            // The release timer stays armed while a connection exists, so
            // giving the sender back needs no wake-up; it fires at most
            // once per idle period and is pushed back while in use.
            let now = Instant::now();
            let due = if state.busy {
                now + IDLE_RELEASE
            } else {
                state.last_used.unwrap_or(now) + IDLE_RELEASE
            };
            let mut expired = false;
            if state.conn.is_some()
                && let Some(release) = state.release.as_mut()
            {
                while release.as_mut().poll(cx).is_ready() {
                    if due <= now {
                        expired = true;
                        break;
                    }
                    release.as_mut().reset(due);
                }
            }
            if expired {
                let conn = state.conn.take();
                state.release = None;
                if let (Some((authority, sender)), Some(conn)) = (state.sender.take(), conn) {
                    self.pool.put_http1(authority, Http1Idle { sender, conn });
                }
            }
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
            Poll::<()>::Pending
        })
        .await;
    }

    /// Installs a connection, dropping any previous one.
    fn install(&self, conn: Pin<Box<UpConn>>) {
        let mut state = self.lock();
        state.conn = Some(conn);
        state.release = Some(Box::pin(tokio::time::sleep(IDLE_RELEASE)));
        state.wake();
    }
}

impl Lease<'_> {
    /// Sends `req` (origin-form URI) to `authority`, connecting first when
    /// needed, within `connect_timeout` for the connection. A request
    /// that was refused before any of it was written (the upstream had
    /// closed the idle connection) is sent again on a new connection.
    pub(crate) async fn send(
        &mut self,
        authority: &str,
        req: Request<ClientBody>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = req;
        // A connection that sat idle may have been closed by the upstream:
        // a request it refused unsent is retried, at last on a new one.
        for _ in 0..3 {
            let usable = |s: &Option<(String, SendRequest<ClientBody>)>| {
                s.as_ref()
                    .is_some_and(|(to, sender)| to == authority && !sender.is_closed())
            };
            if !usable(&self.sender) {
                match self.owner.pool.take_for_http1(authority) {
                    Some(Ok(idle)) => {
                        self.owner.install(idle.conn);
                        self.sender = Some((authority.to_owned(), idle.sender));
                    }
                    Some(Err(tcp)) => {
                        self.sender = None;
                        let sender = self.handshake(authority, tcp).await?;
                        self.sender = Some((authority.to_owned(), sender));
                    }
                    None => {}
                }
            }
            let reused = usable(&self.sender)
                && match &mut self.sender {
                    Some((_, sender)) => sender.ready().await.is_ok(),
                    None => false,
                };
            if !reused {
                self.sender = None;
                let sender = self.connect(authority, connect_timeout).await?;
                self.sender = Some((authority.to_owned(), sender));
            }
            let Some((_, sender)) = self.sender.as_mut() else {
                return Err(UpstreamError::Failed("no upstream connection".into()));
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => {
                    self.sender = None;
                    match e.take_message() {
                        Some(unsent) if reused => req = unsent,
                        _ => return Err(UpstreamError::Failed(error_chain(&e.into_error()))),
                    }
                }
            }
        }
        Err(UpstreamError::Failed(
            "the upstream closed the connection".into(),
        ))
    }

    async fn connect(
        &self,
        authority: &str,
        timeout: Duration,
    ) -> Result<SendRequest<ClientBody>, UpstreamError> {
        let tcp = match crate::pool::connect(authority, timeout).await {
            Ok(tcp) => tcp,
            Err(ConnectError::Failed(e)) => {
                return Err(UpstreamError::Failed(format!(
                    "connecting to {authority}: {e}"
                )));
            }
            Err(ConnectError::Timeout) => return Err(UpstreamError::ConnectTimeout),
        };
        self.handshake(authority, tcp).await
    }

    /// Starts an HTTP/1 client connection on `tcp` (nothing is written).
    async fn handshake(
        &self,
        authority: &str,
        tcp: TcpStream,
    ) -> Result<SendRequest<ClientBody>, UpstreamError> {
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Failed(format!("upstream {authority}: {e}")))?;
        self.owner.install(Box::pin(conn));
        Ok(sender)
    }
}

impl Drop for Upstreams {
    /// The client connection is gone: its upstream connection, if still
    /// open, serves other client connections.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let (Some((authority, sender)), Some(conn)) = (state.sender.take(), state.conn.take())
            && !sender.is_closed()
        {
            self.pool.put_http1(authority, Http1Idle { sender, conn });
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut state = self.owner.lock();
        state.busy = false;
        if let Some(sender) = self.sender.take()
            && state.conn.is_some()
        {
            state.sender = Some(sender);
            state.last_used = Some(Instant::now());
        }
    }
}
