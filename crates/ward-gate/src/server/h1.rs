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

use std::borrow::Cow;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{Conn, Tls, stopped};
use crate::Shared;
use crate::config::{IdentityHeaders, Upstream};
use crate::proxy::{self, ConnContext};
use crate::runtime::{Route, TenantKind};

pub(crate) mod chunked;
pub(crate) mod head;
mod upstream;

use head::{Framing, MAX_HEAD, MAX_HEADERS};
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
    Refuse(Refusal<'r>),
    /// Forwarded; the upstream head is in `out`.
    Forward(Forward<'r>),
}

struct Refusal<'r> {
    status: u16,
    code: &'static str,
    message: Cow<'static, str>,
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

/// What the request audit line needs, kept only when the audit log is on.
struct Facts {
    method: String,
    path: String,
    host: Option<String>,
}

/// Parses, routes and authorizes the request at the start of `buf`; for a
/// request to forward, writes the upstream head into `out`.
fn decide<'r>(
    buf: &[u8],
    ctx: &ConnContext,
    shared: &Shared,
    routes: &'r [Route],
    out: &mut Vec<u8>,
    facts: &mut Option<Facts>,
) -> Decision<'r> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let bad = |status, code, message| {
        Decision::Refuse(Refusal {
            status,
            code,
            message: Cow::Borrowed(message),
            route: "-",
            head_len: None,
            body: 0,
        })
    };
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return bad(431, "headers_too_large", "the request head is too large");
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return bad(431, "headers_too_large", "the request head is too large");
        }
        Ok(httparse::Status::Partial) => return Decision::Partial,
        Err(_) => return bad(400, "bad_request", "the request is malformed"),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        // HTTP/1.0 (or a missing part): the general path knows its rules.
        return Decision::Handoff;
    };
    let headers: &[httparse::Header<'_>] = req.headers;
    if !target.starts_with('/')
        || head::has(headers, "transfer-encoding")
        || head::has(headers, "upgrade")
        || head::has(headers, "expect")
        || head::connection_has(headers, "upgrade")
    {
        return Decision::Handoff;
    }
    let Ok(content_length) = head::content_length(headers) else {
        return bad(400, "bad_request", "invalid content-length");
    };
    let body = content_length.unwrap_or(0);
    let Ok(host) = head::host(headers) else {
        return bad(400, "bad_request", "more than one host");
    };
    let Ok(method_value) = hyper::Method::from_bytes(method.as_bytes()) else {
        return bad(400, "bad_request", "the request is malformed");
    };
    let path = head::path_of(target);
    if shared.audit.is_enabled() {
        *facts = Some(Facts {
            method: method.to_owned(),
            path: path.to_owned(),
            host: host.clone(),
        });
    }
    let Some(route) = routes
        .iter()
        .find(|r| r.matches(host.as_deref(), path, &method_value))
    else {
        return Decision::Refuse(Refusal {
            status: 404,
            code: "no_route",
            message: Cow::Borrowed("no route matches this request"),
            route: "-",
            head_len: Some(head_len),
            body,
        });
    };
    let authority = match &route.upstream {
        Upstream::Http(authority) => authority.as_str(),
        Upstream::Https { .. } | Upstream::Tcp(_) => return Decision::Handoff,
    };
    let trusted = ctx.headers.trusted();
    let policy_headers =
        || proxy::policy_headers(headers.iter().map(|h| (h.name, h.value)), trusted);
    if let Err(message) =
        proxy::authorize(route, ctx, method, path, host.as_deref(), policy_headers)
    {
        shared
            .metrics
            .denied
            .with(&[&ctx.tenant.name, &route.name])
            .inc();
        return Decision::Refuse(Refusal {
            status: 403,
            code: "forbidden",
            message,
            route: &route.name,
            head_len: Some(head_len),
            body,
        });
    }
    let conn = &ctx.headers;
    let rfc9440 = if route.headers == IdentityHeaders::Rfc9440 {
        conn.rfc9440(&ctx.identity)
    } else {
        (None, None)
    };
    let mut fields: [(&'static str, &[u8]); 4] = [("", b""); 4];
    let mut n = 0;
    for (name, value) in [
        ("x-forwarded-client-cert", conn.xfcc()),
        ("x-ward-spiffe-id", conn.spiffe()),
        ("client-cert", rfc9440.0),
        ("client-cert-chain", rfc9440.1),
    ] {
        if let Some(v) = value {
            fields[n] = (name, v);
            n += 1;
        }
    }
    out.clear();
    head::write_request_head(
        out,
        method,
        target,
        headers,
        &head::Added {
            client_ip: conn.client_ip(),
            fields: &fields[..n],
            default_host: authority,
            trusted,
            content_length,
        },
    );
    Decision::Forward(Forward {
        route,
        authority,
        head_len,
        body,
        close: head::connection_has(headers, "close"),
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
        match decide(&bufs.client, ctx, shared, routes, &mut bufs.out, &mut facts) {
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
            let close = match used {
                Some(n) if n <= bufs.client.len() as u64 => {
                    // Fits in usize: it is at most the buffer's length.
                    bufs.client.advance(usize::try_from(n).unwrap_or(0));
                    *stop.borrow() || ctx.aged()
                }
                _ => true,
            };
            bufs.out.clear();
            head::error_response(&mut bufs.out, r.status, r.code, &r.message, close);
            let step = match write_flush(tls, &bufs.out).await {
                Ok(()) if close => Step::Close,
                Ok(()) => Step::Next,
                Err(_) => Step::Abort,
            };
            (r.route, r.status, Some(r.code), step)
        }
        Decision::Forward(f) => {
            let close = f.close || *stop.borrow() || ctx.aged();
            let (status, reason, step) = forward(tls, bufs, ctx, shared, &f, close).await;
            (f.route.name.as_str(), status, reason, step)
        }
    };
    shared
        .metrics
        .requests
        .with(&[route_name, &status_label(status)])
        .inc();
    if let Some(facts) = facts {
        let seen = proxy::Seen {
            method: &facts.method,
            path: &facts.path,
            host: facts.host.as_deref(),
            started,
        };
        proxy::audit_request(shared, ctx, &seen, route_name, status, reason);
    }
    step
}

/// A status code as a metric label, without formatting the common ones.
fn status_label(status: u16) -> Cow<'static, str> {
    Cow::Borrowed(match status {
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return Cow::Owned(other.to_string()),
    })
}

async fn write_flush(tls: &mut Tls, bytes: &[u8]) -> io::Result<()> {
    tls.write_all(bytes).await?;
    tls.flush().await
}

/// Why forwarding failed before anything reached the client.
enum Failure {
    ConnectTimeout,
    Failed(String),
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
            let (status, code, message) = match failure {
                Failure::ConnectTimeout => (
                    504,
                    "upstream_timeout",
                    "the upstream did not answer in time",
                ),
                Failure::Failed(e) => {
                    tracing::warn!(error = %e, route = %f.route.name, "upstream request failed");
                    (502, "bad_gateway", "the upstream could not be reached")
                }
            };
            // The client's body may be partly unread: close after.
            let close = close || rest > 0;
            bufs.out.clear();
            head::error_response(&mut bufs.out, status, code, message, close);
            let step = match write_flush(tls, &bufs.out).await {
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
    Upstream(Failure),
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
                        crate::pool::ConnectError::Timeout => Failure::ConnectTimeout,
                        crate::pool::ConnectError::Failed(e) => Failure::Failed(e.to_string()),
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
            return Err(SendError::Upstream(Failure::Failed(e.to_string())));
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
                return Err(SendError::Upstream(Failure::Failed(
                    "the upstream closed the connection without answering".into(),
                )));
            }
            Err(e) => return Err(SendError::Upstream(Failure::Failed(e.to_string()))),
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
    head::error_response(
        &mut bufs.out,
        502,
        "bad_gateway",
        "the upstream's response could not be used",
        close,
    );
    let step = match write_flush(tls, &bufs.out).await {
        Ok(()) if close => Step::Close,
        Ok(()) => Step::Next,
        Err(_) => Step::Abort,
    };
    Relayed {
        status: 502,
        reason: Some("bad_gateway"),
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
