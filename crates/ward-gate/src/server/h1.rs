//! The HTTP/1.1 fast path: client requests to `http://` upstreams, proxied
//! by the connection's own task over its own upstream connection, with no
//! HTTP framework in between.
//!
//! Why: a keep-alive request through hyper's server and client costs about
//! as much CPU as the rest of the gate's request path together, and hyper
//! keeps two 8 KiB buffers for every idle keep-alive connection. Here a
//! request is: parse the head (httparse), route and authorize, write the
//! rewritten head and the body bytes already read to the upstream in one
//! write, parse the response head, write it and the body bytes already read
//! to the client in one write, stream the rest. Buffers exist only while
//! the connection is busy: a connection idle for [`IDLE_RELEASE`] gives
//! back its buffers and its upstream connection.
//!
//! Anything unusual goes to the general path (hyper) for the rest of the
//! connection, with the bytes already read replayed: HTTP/1.0, `Upgrade`,
//! `Expect`, a request body with a transfer coding, a request target that
//! is not origin-form, an `https://` upstream. Those are correct there and
//! rare here.

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{Conn, Tls, stopped};
use crate::Shared;
use crate::config::{Upstream, UpstreamProtocol};
use crate::pipeline::{self, ConnContext, Facts, Refusal, RequestHead, UpstreamError};
use crate::runtime::{Route, TenantKind};

pub(crate) mod chunked;
pub(crate) mod head;
mod upstream;

pub(crate) use head::H2_PREFACE;
use head::{Framing, MAX_HEADERS, ReadRequest};
use upstream::UpConn;

use crate::pool::UpstreamPool;

/// How long a quiet connection keeps its buffers and upstream connection.
const IDLE_RELEASE: Duration = Duration::from_millis(250);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Most 1xx responses accepted before the final one.
const MAX_INTERIM: usize = 8;

/// How the fast path left a connection.
pub(super) enum End {
    /// Closed (or to be closed by dropping it).
    Done,
    /// The general path serves the rest: these bytes were read and not used.
    Handoff(Tls, BytesMut),
}

/// What a connection keeps between requests while it is busy.
#[derive(Default)]
struct Bufs {
    /// Bytes read from the client and not yet used.
    client: BytesMut,
    /// Bytes read from the upstream and not yet used.
    upstream: BytesMut,
    /// The next write (a rewritten head and body bytes).
    out: Vec<u8>,
    /// The connection's upstream connection, when it has one.
    up: Option<UpConn>,
}

impl Bufs {
    /// Gives back everything a quiet connection does not need (its
    /// upstream connection to `pool`).
    fn release(&mut self, pool: &UpstreamPool) {
        if let Some(up) = self.up.take() {
            upstream::put(pool, up);
        }
        if self.client.is_empty() {
            self.client = BytesMut::new();
        }
        self.upstream = BytesMut::new();
        self.out = Vec::new();
    }
}

/// Serves HTTP/1.1 requests on `tls` until the connection ends or needs the
/// general path.
pub(super) async fn serve(mut tls: Tls, conn: &mut Conn) -> End {
    let ctx = conn.ctx.clone();
    let TenantKind::Http(routes) = &ctx.tenant.kind else {
        return End::Done;
    };
    let mut bufs = Bufs::default();
    let mut stop = conn.stop.clone();
    loop {
        if bufs.client.is_empty() {
            let waited = tokio::select! {
                w = next_request(&mut tls, &mut bufs, &ctx) => w,
                () = stopped(&mut stop) => Wait::Quiet,
                reason = conn.tracking.revoked() => {
                    conn.closed_by_revocation(reason, None);
                    return End::Done;
                }
            };
            match waited {
                Wait::Request => {}
                // The client is gone: nobody to tell.
                Wait::Closed => {
                    bufs.release(&ctx.runtime.pool);
                    return End::Done;
                }
                Wait::Quiet => {
                    bufs.release(&ctx.runtime.pool);
                    close(&mut tls).await;
                    return End::Done;
                }
            }
        }
        let step = tokio::select! {
            // Boxed: the request's state (several KiB of nested futures)
            // exists only while a request is in flight, not in every idle
            // connection's task.
            s = Box::pin(request(&mut tls, &mut bufs, &ctx, &conn.shared, routes, &conn.stop)) => s,
            reason = conn.tracking.revoked() => {
                // A revoked client gets nothing further, in flight or not.
                conn.closed_by_revocation(reason, None);
                return End::Done;
            }
        };
        match step {
            Step::Next => {}
            Step::Close => {
                bufs.release(&ctx.runtime.pool);
                close(&mut tls).await;
                return End::Done;
            }
            Step::Linger => {
                bufs.release(&ctx.runtime.pool);
                linger(&mut tls).await;
                return End::Done;
            }
            Step::Abort => return End::Done,
            Step::Handoff => {
                let rest = std::mem::take(&mut bufs.client);
                bufs.release(&ctx.runtime.pool);
                return End::Handoff(tls, rest);
            }
        }
    }
}

/// Closes the client connection politely: TLS close_notify, then FIN.
async fn close(tls: &mut Tls) {
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
}

/// A lingering close, after answering a request whose body was left
/// unread: closing a socket with unread bytes sends a TCP reset, and a
/// client still sending its body would then see "connection reset" (or
/// a broken pipe) instead of the answer it had not read yet. So:
/// close_notify and FIN, then the client's remaining bytes (TLS records,
/// not decrypted) are read and dropped until it closes, up to
/// [`super::LINGER_BYTES`] or [`super::LINGER_TIME`].
async fn linger(tls: &mut Tls) {
    close(tls).await;
    let (tcp, _) = tls.get_mut();
    super::drain_briefly(tcp, super::LINGER_BYTES, super::LINGER_TIME).await;
}

/// How the wait for a request ended.
enum Wait {
    /// Its first bytes are in the buffer.
    Request,
    /// The client closed the connection (or it failed).
    Closed,
    /// No request within the header-read timeout, or the gate is stopping.
    Quiet,
}

/// Waits for the first bytes of the next request. A busy connection reads
/// straight into its buffer; after [`IDLE_RELEASE`] it releases its
/// buffers and waits with none.
async fn next_request(tls: &mut Tls, bufs: &mut Bufs, ctx: &ConnContext) -> Wait {
    let header_read = ctx.runtime.config.timeouts.header_read.0;
    if bufs.client.capacity() > 0 {
        bufs.client.reserve(READ_CHUNK);
        match tokio::time::timeout(IDLE_RELEASE, tls.read_buf(&mut bufs.client)).await {
            Ok(Ok(0)) => return Wait::Closed,
            Ok(Ok(_)) => return Wait::Request,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, peer = %ctx.remote, "connection ended with an error");
                return Wait::Closed;
            }
            Err(_) => bufs.release(&ctx.runtime.pool),
        }
    }
    let mut first = [0u8; 1];
    match tokio::time::timeout(header_read, tls.read(&mut first)).await {
        Ok(Ok(1)) => {
            bufs.client.reserve(READ_CHUNK);
            bufs.client.extend_from_slice(&first);
            Wait::Request
        }
        Ok(Ok(_)) => Wait::Closed,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, peer = %ctx.remote, "connection ended with an error");
            Wait::Closed
        }
        Err(_) => {
            tracing::debug!(peer = %ctx.remote, "no request within the header-read timeout");
            Wait::Quiet
        }
    }
}

/// What to do after a request.
enum Step {
    /// Serve the next request.
    Next,
    /// Close the connection politely.
    Close,
    /// Close politely after answering a request whose body was left
    /// unread, then read and drop what the client still sends (see
    /// [`linger`]).
    Linger,
    /// Drop the connection at once (a response could not be completed).
    Abort,
    /// Hand the connection to the general path.
    Handoff,
}

/// What [`decide`] made of the bytes read so far.
enum Decision<'r> {
    /// The head is not complete yet.
    Partial,
    /// The general path must serve this request.
    Handoff,
    /// Answered by the gate itself.
    Refuse(Refused<'r>),
    /// Forwarded; the upstream head is in `out`.
    Forward(Forward<'r>),
}

/// A refusal and where the request ends in the buffer.
struct Refused<'r> {
    refusal: Refusal,
    route: &'r str,
    /// Head length, or `None` when the head itself is unusable (the
    /// connection closes).
    head_len: Option<usize>,
    body: u64,
}

struct Forward<'r> {
    route: &'r Route,
    authority: &'r str,
    head_len: usize,
    body: u64,
    close: bool,
    head_request: bool,
    /// GET, HEAD, OPTIONS, TRACE, PUT, DELETE (RFC 9110 §9.2.2).
    idempotent: bool,
}

/// Parses the request at the start of `buf` and runs it through the
/// pipeline (route, authorize); for a request to forward, writes the
/// upstream head into `out`.
fn decide<'r>(
    buf: &[u8],
    ctx: &ConnContext,
    shared: &Shared,
    routes: &'r [Route],
    out: &mut Vec<u8>,
    facts: &mut Option<Facts>,
    started: Instant,
) -> Decision<'r> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = match head::read_request(buf, &mut fields) {
        ReadRequest::Partial => return Decision::Partial,
        ReadRequest::Handoff => return Decision::Handoff,
        ReadRequest::Refuse(refusal) => {
            return Decision::Refuse(Refused {
                refusal,
                route: "-",
                head_len: None,
                body: 0,
            });
        }
        ReadRequest::Head(req) => req,
    };
    let body = req.content_length.unwrap_or(0);
    let refused = |r: pipeline::Refused<'r>| {
        Decision::Refuse(Refused {
            refusal: r.refusal,
            route: r.route,
            head_len: Some(req.len),
            body,
        })
    };
    let head = RequestHead {
        method: &req.method_value,
        path: req.path(),
        host: req.host.as_deref(),
        // gRPC is HTTP/2; on HTTP/1.1 it is just a request.
        grpc: None,
    };
    *facts = pipeline::facts(shared, &head, started);
    let route = match pipeline::route(shared, ctx, routes, &head) {
        Ok(route) => route,
        Err(r) => return refused(r),
    };
    let authority = match &route.upstream {
        Upstream::Http(authority)
            if route.protocol == UpstreamProtocol::Http1 && route.balancer.is_none() =>
        {
            authority.as_str()
        }
        // HTTPS, HTTP/2 and balanced upstreams are the general path's.
        Upstream::Http(_) | Upstream::Https { .. } | Upstream::Tcp(_) => {
            return Decision::Handoff;
        }
    };
    let client_fields = req.headers.iter().map(|h| (h.name, h.value));
    if let Err(r) = pipeline::authorize(shared, ctx, route, &head, client_fields) {
        return refused(r);
    }
    let conn = &ctx.headers;
    let mut added: [(&'static str, &[u8]); 4] = [("", b""); 4];
    let mut n = 0;
    conn.identity_fields(&ctx.identity, route.headers, |name, value| {
        if let Some(slot) = added.get_mut(n) {
            *slot = (name.as_str(), value.as_bytes());
            n += 1;
        }
    });
    let method = req.method;
    out.clear();
    head::write_request_head(
        out,
        method,
        req.target,
        req.headers,
        &head::Added {
            client_ip: conn.client_ip(),
            fields: &added[..n],
            default_host: authority,
            trusted: conn.trusted(),
            content_length: req.content_length,
        },
    );
    Decision::Forward(Forward {
        route,
        authority,
        head_len: req.len,
        body,
        close: head::connection_has(req.headers, "close"),
        head_request: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
    })
}

/// Serves the request at the start of `bufs.client`.
async fn request(
    tls: &mut Tls,
    bufs: &mut Bufs,
    ctx: &ConnContext,
    shared: &Shared,
    routes: &[Route],
    stop: &watch::Receiver<bool>,
) -> Step {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + ctx.runtime.config.timeouts.header_read.0;
    let mut facts = None;
    let decision = loop {
        match decide(
            &bufs.client,
            ctx,
            shared,
            routes,
            &mut bufs.out,
            &mut facts,
            started,
        ) {
            Decision::Partial => {}
            d => break d,
        }
        bufs.client.reserve(READ_CHUNK);
        match tokio::time::timeout_at(deadline, tls.read_buf(&mut bufs.client)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) | Ok(Err(_)) => return Step::Abort,
            Err(_) => {
                tracing::debug!(peer = %ctx.remote, "request head not complete within the header-read timeout");
                return Step::Abort;
            }
        }
    };
    let (route_name, status, reason, step) = match decision {
        Decision::Partial => return Step::Abort,
        Decision::Handoff => return Step::Handoff,
        Decision::Refuse(r) => {
            // The body of a refused request is skipped when it is already
            // here; otherwise the connection closes after the answer.
            let used = r.head_len.map(|h| h as u64 + r.body);
            let (close, unread) = match used {
                Some(n) if n <= bufs.client.len() as u64 => {
                    // Fits in usize: it is at most the buffer's length.
                    bufs.client.advance(usize::try_from(n).unwrap_or(0));
                    (*stop.borrow() || ctx.aged(), false)
                }
                _ => (true, true),
            };
            bufs.out.clear();
            head::error_response(&mut bufs.out, &r.refusal, close);
            let step = match write_flush(tls, &bufs.out).await {
                Ok(()) if unread => Step::Linger,
                Ok(()) if close => Step::Close,
                Ok(()) => Step::Next,
                Err(_) => Step::Abort,
            };
            (r.route, r.refusal.status, Some(r.refusal.code), step)
        }
        Decision::Forward(f) => {
            let close = f.close || *stop.borrow() || ctx.aged();
            let (status, reason, step) = forward(tls, bufs, ctx, shared, &f, close).await;
            (f.route.name.as_str(), status, reason, step)
        }
    };
    pipeline::finish(shared, ctx, facts, route_name, status, reason, None);
    step
}

async fn write_flush(tls: &mut Tls, bytes: &[u8]) -> io::Result<()> {
    tls.write_all(bytes).await?;
    tls.flush().await
}

/// Sends the request upstream and its response back: (status, refusal
/// reason, next step).
async fn forward(
    tls: &mut Tls,
    bufs: &mut Bufs,
    ctx: &ConnContext,
    shared: &Shared,
    f: &Forward<'_>,
    close: bool,
) -> (u16, Option<&'static str>, Step) {
    let idle = ctx.runtime.config.timeouts.idle.0;
    let started = Instant::now();
    // The body bytes already read go out with the head.
    let in_buf = f.body.min((bufs.client.len() - f.head_len) as u64);
    // Fits in usize: at most the buffer's length.
    let in_buf_len = usize::try_from(in_buf).unwrap_or(0);
    bufs.out
        .extend_from_slice(&bufs.client[f.head_len..f.head_len + in_buf_len]);
    bufs.client.advance(f.head_len + in_buf_len);
    let rest = f.body - in_buf;

    let sent = send(bufs, ctx, f, rest, tls, idle).await;
    let observe = |shared: &Shared| {
        shared
            .metrics
            .upstream_seconds
            .with(&[&f.route.name])
            .observe(started.elapsed().as_secs_f64());
    };
    let up = match sent {
        Ok(up) => up,
        Err(SendError::Client) => return (499, Some("client_closed"), Step::Abort),
        Err(SendError::Upstream(failure)) => {
            observe(shared);
            if let UpstreamError::Failed(e) = &failure {
                tracing::warn!(error = %e, route = %f.route.name, "upstream request failed");
            }
            let refusal = Refusal::from(&failure);
            let (status, code) = (refusal.status, refusal.code);
            // The client's body may be partly unread: close after.
            let close = close || rest > 0;
            bufs.out.clear();
            head::error_response(&mut bufs.out, &refusal, close);
            let step = match write_flush(tls, &bufs.out).await {
                Ok(()) if rest > 0 => Step::Linger,
                Ok(()) if close => Step::Close,
                Ok(()) => Step::Next,
                Err(_) => Step::Abort,
            };
            return (status, Some(code), step);
        }
    };
    observe(shared);
    let relayed = relay(tls, bufs, up, f, close, idle, ctx).await;
    bufs.up = relayed.up;
    (relayed.status, relayed.reason, relayed.step)
}

enum SendError {
    /// The client went away while its body was being read.
    Client,
    /// The upstream could not be reached or failed before answering.
    Upstream(UpstreamError),
}

/// Writes `bufs.out` and then `rest` more body bytes from the client to an
/// upstream connection, then reads the start of the response head into
/// `bufs.upstream`.
///
/// An upstream may close an idle keep-alive connection just as a request
/// goes out on it. When a reused connection fails before any response
/// byte, an idempotent request whose bytes were all in `bufs.out` is sent
/// once more on a new connection; for any other request a reused
/// connection is first checked to be still open, which narrows the race
/// to the few microseconds before the write.
async fn send(
    bufs: &mut Bufs,
    ctx: &ConnContext,
    f: &Forward<'_>,
    rest: u64,
    tls: &mut Tls,
    idle: Duration,
) -> Result<UpConn, SendError> {
    let authority = f.authority;
    let connect_timeout = ctx.runtime.config.timeouts.upstream_connect.0;
    let mut reused = None;
    if let Some(up) = bufs.up.take() {
        if up.authority == authority && (f.idempotent || crate::pool::usable(&up.stream)) {
            reused = Some(up);
        } else {
            upstream::put(&ctx.runtime.pool, up);
        }
    }
    let mut reused = reused.or_else(|| upstream::take(&ctx.runtime.pool, authority));
    loop {
        let was_reused = reused.is_some();
        let mut up = match reused.take() {
            Some(up) => up,
            None => upstream::connect(authority, connect_timeout)
                .await
                .map_err(|e| {
                    SendError::Upstream(match e {
                        crate::pool::ConnectError::Timeout => UpstreamError::ConnectTimeout,
                        crate::pool::ConnectError::Failed(e) => {
                            UpstreamError::Failed(e.to_string())
                        }
                    })
                })?,
        };
        let retryable = was_reused && rest == 0 && f.idempotent;
        let wrote = io_timeout(idle, up.stream.write_all(&bufs.out)).await;
        if let Err(e) = wrote {
            // A write that fails on a reused connection found it closed:
            // nothing of this request was taken in.
            if was_reused && rest == 0 {
                continue;
            }
            return Err(SendError::Upstream(UpstreamError::Failed(e.to_string())));
        }
        if rest > 0 && stream_body(tls, bufs, &mut up, rest, idle).await? {
            up.cut = true;
        }
        bufs.upstream.clear();
        bufs.upstream.reserve(READ_CHUNK);
        match io_timeout(idle, up.stream.read_buf(&mut bufs.upstream)).await {
            Ok(n) if n > 0 => return Ok(up),
            Ok(_) if retryable => continue,
            Err(_) if retryable => continue,
            Ok(_) => {
                return Err(SendError::Upstream(UpstreamError::Failed(
                    "the upstream closed the connection without answering".into(),
                )));
            }
            Err(e) => return Err(SendError::Upstream(UpstreamError::Failed(e.to_string()))),
        }
    }
}

/// Copies `rest` request body bytes from the client to the upstream;
/// `Ok(true)` when the upstream stopped taking them before the end (the
/// rest of the body stays unread, so the client connection must close).
///
/// The upstream may answer before the body is through (413, 401) and then
/// neither read nor close: while the body goes out, the upstream's side is
/// watched too, and a final answer ends the copy at once instead of after
/// the idle limit. An interim `1xx` stops the watching (the body goes on).
async fn stream_body(
    tls: &mut Tls,
    bufs: &mut Bufs,
    up: &mut UpConn,
    mut rest: u64,
    idle: Duration,
) -> Result<bool, SendError> {
    let mut watch = true;
    while rest > 0 {
        if bufs.client.is_empty() {
            bufs.client.reserve(READ_CHUNK);
            let read = if watch {
                let (mut answer, _) = up.stream.split();
                tokio::select! {
                    biased;
                    done = answer_arrived(&mut answer) => {
                        if done {
                            return Ok(true);
                        }
                        watch = false;
                        continue;
                    }
                    read = io_timeout(idle, tls.read_buf(&mut bufs.client)) => read,
                }
            } else {
                io_timeout(idle, tls.read_buf(&mut bufs.client)).await
            };
            match read {
                Ok(n) if n > 0 => {}
                _ => return Err(SendError::Client),
            }
        }
        let n = rest.min(bufs.client.len() as u64);
        // Fits in usize: at most the buffer's length.
        let n_len = usize::try_from(n).unwrap_or(0);
        // One write at a time: a write that loses the race below has
        // written nothing, so the count stays exact.
        let (mut answer, mut body) = up.stream.split();
        let wrote = if watch {
            tokio::select! {
                biased;
                done = answer_arrived(&mut answer) => {
                    if done {
                        bufs.client.clear();
                        return Ok(true);
                    }
                    watch = false;
                    continue;
                }
                wrote = io_timeout(idle, body.write(&bufs.client[..n_len])) => wrote,
            }
        } else {
            io_timeout(idle, body.write(&bufs.client[..n_len])).await
        };
        match wrote {
            Ok(w) if w > 0 => {
                bufs.client.advance(w);
                rest -= w as u64;
            }
            Ok(_) | Err(_) => {
                // It may have answered early (413) and closed: the caller
                // reads what it sent, if anything.
                tracing::debug!(result = ?wrote, "upstream stopped reading the request body");
                bufs.client.clear();
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Waits for the upstream to send something while a request body is still
/// going out: `true` for a final answer, a close or an error (the rest of
/// the body is not wanted), `false` for an interim `1xx` or a start too
/// short to tell (the body goes on, unwatched). Leaves the bytes unread.
async fn answer_arrived(up: &mut tokio::net::tcp::ReadHalf<'_>) -> bool {
    // "HTTP/1.1 1" is ten bytes: the status's first digit is the tenth.
    let mut start = [0u8; 10];
    match up.peek(&mut start).await {
        Ok(0) | Err(_) => true,
        Ok(n) if n < start.len() => false,
        Ok(_) => !(start.starts_with(b"HTTP/1.") && start[9] == b'1'),
    }
}

/// Runs `io` with a stall limit.
async fn io_timeout<T>(limit: Duration, io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(limit, io)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "stalled")))
}

/// The outcome of relaying a response.
struct Relayed {
    status: u16,
    reason: Option<&'static str>,
    step: Step,
    /// The upstream connection, when it can carry another request.
    up: Option<UpConn>,
}

impl Relayed {
    fn ended(status: u16, step: Step) -> Self {
        Relayed {
            status,
            reason: None,
            step,
            up: None,
        }
    }
}

/// A response body on its way through.
struct Body {
    framing: Framing,
    left: u64,
    chunks: chunked::Scanner,
    finished: bool,
}

impl Body {
    fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Body {
            framing,
            left,
            chunks: chunked::Scanner::default(),
            finished: matches!(framing, Framing::Empty | Framing::Length(0)),
        }
    }

    /// How many bytes at the start of `buf` belong to the body.
    fn take(&mut self, buf: &[u8]) -> Result<usize, chunked::ChunkError> {
        match self.framing {
            Framing::Empty => Ok(0),
            Framing::Length(_) => {
                let n = self.left.min(buf.len() as u64);
                self.left -= n;
                self.finished = self.left == 0;
                // At most the buffer's length.
                Ok(usize::try_from(n).unwrap_or(0))
            }
            Framing::Chunked => {
                let n = self.chunks.feed(buf)?;
                self.finished = self.chunks.is_done();
                Ok(n)
            }
            Framing::UntilClose => Ok(buf.len()),
        }
    }
}

/// Answers 502 when the upstream's response cannot be used (nothing has
/// reached the client yet); the upstream connection is dropped.
async fn bad_gateway(
    tls: &mut Tls,
    bufs: &mut Bufs,
    why: &str,
    ctx: &ConnContext,
    close: bool,
) -> Relayed {
    tracing::warn!(peer = %ctx.remote, error = why, "unusable upstream response");
    bufs.upstream.clear();
    bufs.out.clear();
    let refusal = Refusal::unusable_response();
    head::error_response(&mut bufs.out, &refusal, close);
    let step = match write_flush(tls, &bufs.out).await {
        Ok(()) if close => Step::Close,
        Ok(()) => Step::Next,
        Err(_) => Step::Abort,
    };
    Relayed {
        status: refusal.status,
        reason: Some(refusal.code),
        step,
        up: None,
    }
}

/// Reads the response head (its start is in `bufs.upstream`) and relays
/// the response to the client.
async fn relay(
    tls: &mut Tls,
    bufs: &mut Bufs,
    mut up: UpConn,
    f: &Forward<'_>,
    close: bool,
    idle: Duration,
    ctx: &ConnContext,
) -> Relayed {
    // A request body cut short leaves unread bytes on both sides: the
    // client connection closes after the answer, the upstream one is not
    // reused.
    let close = close || up.cut;
    let mut interim = 0;
    let head = loop {
        bufs.out.clear();
        match head::parse_response(&bufs.upstream, f.head_request, close, &mut bufs.out) {
            Ok(Some(h)) if h.interim => {
                bufs.upstream.advance(h.len);
                interim += 1;
                if interim <= MAX_INTERIM {
                    continue;
                }
                return bad_gateway(tls, bufs, "too many interim responses", ctx, close).await;
            }
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(e) => return bad_gateway(tls, bufs, &e.to_string(), ctx, close).await,
        }
        bufs.upstream.reserve(READ_CHUNK);
        match io_timeout(idle, up.stream.read_buf(&mut bufs.upstream)).await {
            Ok(n) if n > 0 => {}
            _ => {
                return bad_gateway(
                    tls,
                    bufs,
                    "the upstream closed during the response head",
                    ctx,
                    close,
                )
                .await;
            }
        }
    };
    bufs.upstream.advance(head.len);
    let status = head.status;
    // A request body cut short leaves unread bytes: never a next request.
    let close = close || head.close_client;
    let mut body = Body::new(head.framing);
    // The first body bytes go out with the head.
    let used = match body.take(&bufs.upstream) {
        Ok(n) => n,
        Err(e) => return bad_gateway(tls, bufs, &e.to_string(), ctx, close).await,
    };
    bufs.out.extend_from_slice(&bufs.upstream[..used]);
    bufs.upstream.advance(used);
    if tls.write_all(&bufs.out).await.is_err() {
        return Relayed::ended(status, Step::Abort);
    }
    while !body.finished {
        bufs.upstream.clear();
        bufs.upstream.reserve(READ_CHUNK);
        match io_timeout(idle, up.stream.read_buf(&mut bufs.upstream)).await {
            Ok(0) if body.framing == Framing::UntilClose => break,
            Ok(n) if n > 0 => {}
            _ => {
                tracing::debug!(peer = %ctx.remote, "the upstream ended the response early");
                return Relayed::ended(status, Step::Abort);
            }
        }
        let used = match body.take(&bufs.upstream) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "malformed response body from the upstream");
                return Relayed::ended(status, Step::Abort);
            }
        };
        if tls.write_all(&bufs.upstream[..used]).await.is_err() {
            return Relayed::ended(status, Step::Abort);
        }
        bufs.upstream.advance(used);
    }
    if tls.flush().await.is_err() {
        return Relayed::ended(status, Step::Abort);
    }
    // Bytes after the response mean a confused upstream: not reused.
    let reuse = head.reusable && bufs.upstream.is_empty() && !up.cut;
    bufs.upstream.clear();
    Relayed {
        status,
        reason: None,
        step: if close { Step::Close } else { Step::Next },
        up: reuse.then_some(up),
    }
}
