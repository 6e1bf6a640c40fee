//! The general HTTP path (hyper, HTTP/1.1 and HTTP/2 clients): runs each
//! request through the [`crate::pipeline`] (route, authorize, account) and
//! does the hyper side of it: header hygiene on a `HeaderMap`, forwarding
//! with streamed bodies, refusals as JSON responses.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};

use crate::Shared;
use crate::config::{IdentityHeaders, Upstream, UpstreamProtocol};
use crate::pipeline::{self, ConnContext, GrpcCall, Refusal, RequestHead, UpstreamError};
use crate::pool::h2::{H2Route, H2Sender, H2Target};
use crate::runtime::{Route, TenantKind};

mod balanced;
mod body;
mod grpc;
mod upgrade;
mod upstream;

pub use body::ClientBody;
pub use upstream::Upstreams;
pub(crate) use upstream::error_chain;

/// The response body type: upstream bodies stream through; errors are small JSON.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XF_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those named in `Connection`
/// (used on responses; requests go through [`prepare`]).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Removes every client field the gate does not forward
/// ([`crate::forwarding::drop_from_client`]).
fn strip_client_fields(headers: &mut HeaderMap, trusted: bool) {
    let dropped = |k: &HeaderName| crate::forwarding::drop_from_client(k.as_str(), trusted);
    if !headers.keys().any(dropped) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| dropped(k)).cloned().collect();
    for k in names {
        headers.remove(k);
    }
}

/// Collapses a `content-length` given more than once (or as a list) with
/// one value into that value; an error when the values differ or one is
/// not a number (RFC 9112 §6.3).
fn one_content_length(headers: &mut HeaderMap) -> Result<(), ()> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter().peekable();
    if values.peek().is_none() {
        return Ok(());
    }
    let mut found: Option<u64> = None;
    for value in values {
        for token in value.to_str().map_err(|_| ())?.split(',') {
            let token = token.trim();
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = token.parse().map_err(|_| ())?;
            if found.is_some_and(|f| f != n) {
                return Err(());
            }
            found = Some(n);
        }
    }
    let n = found.ok_or(())?;
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    Ok(())
}

/// Whether the client's `te` names `trailers` (the only value HTTP/2
/// allows; gRPC servers insist on it).
fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// A refusal as a response.
fn json_error(refusal: &Refusal) -> Response<ProxyBody> {
    let body = refusal.body();
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Handles one request on a connection.
pub async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, hyper::Error> {
    let TenantKind::Http(routes) = &ctx.tenant.kind else {
        return Ok(json_error(&Refusal {
            status: 500,
            code: "internal",
            message: "not an HTTP tenant".into(),
        }));
    };
    let host = request_host(&req);
    let grpc = GrpcCall::of(
        req.headers()
            .get(header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes),
        req.uri().path(),
    );
    let head = RequestHead {
        method: req.method(),
        path: req.uri().path(),
        host: host.as_deref(),
        grpc,
    };
    let is_grpc = grpc.is_some();
    // HTTP/1: an answer the gate gives itself may leave the body unread;
    // hyper then closes the connection, which must linger (unless the
    // client waits for 100-continue: it sends no body then).
    let may_linger =
        req.version() != Version::HTTP_2 && !req.body().is_end_stream() && !expects_continue(&req);
    let facts = pipeline::facts(&shared, &head, Instant::now());
    let admitted = pipeline::route(&shared, &ctx, routes, &head).and_then(|route| {
        let fields = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()));
        pipeline::authorize(&shared, &ctx, route, &head, fields).map(|()| route)
    });
    drop(host);
    let timeout_ok = req
        .headers()
        .get_all(GRPC_TIMEOUT)
        .iter()
        .all(|v| pipeline::valid_grpc_timeout(v.as_bytes()));
    // The gate enforces a gRPC call's deadline itself: the upstream may
    // not, and the caller's slot should not outlive it.
    let deadline = if is_grpc && timeout_ok {
        call_deadline(req.headers())
    } else {
        None
    };
    let (route_name, response) = match admitted {
        // Refusals (no route, forbidden) are audited with their reason below.
        Err(refused) => {
            drain(req).await;
            (refused.route, Err(refused.refusal))
        }
        Ok(route) if !timeout_ok => {
            drain(req).await;
            (route.name.as_str(), Err(Refusal::bad_grpc_timeout()))
        }
        Ok(route) => {
            let sent = forward(&shared, &ctx, route, req);
            let response = match deadline {
                // Dropping the request future resets the upstream stream.
                Some(at) => tokio::time::timeout_at(at, sent)
                    .await
                    .unwrap_or_else(|_| Err(Refusal::deadline_exceeded())),
                None => sent.await,
            };
            (route.name.as_str(), response)
        }
    };
    let response = match response {
        Ok(r) if is_grpc => {
            // Accounted once the call's status (in the trailers) is known.
            let pending = grpc::Pending {
                shared: shared.clone(),
                ctx: ctx.clone(),
                facts,
                route: route_name.to_owned(),
                status: r.status().as_u16(),
            };
            return Ok(grpc::Accounted::wrap(r, pending, deadline));
        }
        Ok(r) => {
            let status = r.status().as_u16();
            pipeline::finish(&shared, &ctx, facts, route_name, status, None, None);
            r
        }
        Err(refusal) => {
            if may_linger {
                ctx.linger.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let (r, grpc_status) = if is_grpc {
                (
                    grpc::refusal(&refusal),
                    Some(refusal.grpc_status().to_string()),
                )
            } else {
                (json_error(&refusal), None)
            };
            let status = r.status().as_u16();
            pipeline::finish(
                &shared,
                &ctx,
                facts,
                route_name,
                status,
                Some(refusal.code),
                grpc_status.as_deref(),
            );
            r
        }
    };
    Ok(response)
}

/// Deadlines longer than this are not enforced (the upstream's own
/// limits apply): no timer a year out.
const LONGEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// When a gRPC call's `grpc-timeout` (the shortest, if several) runs out,
/// counted from now.
fn call_deadline(headers: &HeaderMap) -> Option<tokio::time::Instant> {
    let timeout = headers
        .get_all(GRPC_TIMEOUT)
        .iter()
        .filter_map(|v| pipeline::grpc_timeout(v.as_bytes()))
        .min()?;
    (timeout <= LONGEST_DEADLINE).then(|| tokio::time::Instant::now() + timeout)
}

/// Reads what is left of a refused HTTP/2 request's body (at most 64 KiB,
/// for at most a second), so that a client still sending sees its stream
/// end cleanly after the answer instead of reset (curl reports a reset
/// stream as an error even after a complete response). An HTTP/1 body is
/// left unread: the connection closes after the answer and lingers (see
/// `server::linger`).
async fn drain(req: Request<Incoming>) {
    if req.version() != Version::HTTP_2 || req.body().is_end_stream() {
        return;
    }
    let mut body = req.into_body();
    let mut left: usize = 64 * 1024;
    let read = async {
        while left > 0 {
            match body.frame().await {
                Some(Ok(frame)) => {
                    let n = frame.data_ref().map_or(0, Bytes::len);
                    left = left.saturating_sub(n);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
}

/// Whether an HTTP/1.1 request says `Expect: 100-continue`.
fn expects_continue(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::EXPECT)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Host from the URI (HTTP/2 `:authority`) or the `Host` header,
/// lowercase, without a port.
fn request_host(req: &Request<Incoming>) -> Option<Cow<'_, str>> {
    let host = req.uri().host().or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| {
                h.rsplit_once(':').map_or(
                    h,
                    |(name, port)| if port.parse::<u16>().is_ok() { name } else { h },
                )
            })
    })?;
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// How a request reaches its upstream.
enum Via<'c> {
    /// The client connection's own HTTP/1.1 upstream connection.
    Own(upstream::Lease<'c>, &'c str),
    /// The pooled HTTP/1.1 client.
    Pooled,
    /// The upstream's shared HTTP/2 connection.
    H2(H2Sender),
    /// A new HTTP/1.1 connection to an `auto` upstream that chose it.
    Http1Once(hyper::client::conn::http1::SendRequest<ClientBody>),
}

impl Via<'_> {
    fn version(&self) -> Version {
        match self {
            Via::H2(_) => Version::HTTP_2,
            _ => Version::HTTP_11,
        }
    }

    /// Whether the request goes out in origin form with a `Host` field.
    fn origin_form(&self) -> bool {
        matches!(self, Via::Own(..) | Via::Http1Once(_))
    }
}

/// Sends an authorized request to its route's upstream.
async fn forward(
    shared: &Shared,
    ctx: &ConnContext,
    route: &Route,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    // The upgrade and balanced paths are boxed: inlined, their futures
    // would make every request's future (moved whole into its task by
    // hyper's spawn) several times larger.
    if upgrade::requested(&req) || upgrade::extended_connect(&req).is_some() {
        return match &route.balancer {
            Some(balancer) => Box::pin(balanced::upgrade(shared, ctx, route, balancer, req)).await,
            None => Box::pin(upgrade::forward(shared, ctx, route, &route.upstream, req)).await,
        };
    }
    if let Some(balancer) = &route.balancer {
        return Box::pin(balanced::forward(shared, ctx, route, balancer, req)).await;
    }
    let connect = ctx.runtime.config.timeouts.upstream_connect.0;
    let started = Instant::now();
    let via = match (route.protocol, &route.upstream) {
        (UpstreamProtocol::H2, _) | (UpstreamProtocol::Auto, Upstream::Https { .. }) => {
            // The current runtime's connections and credentials, not those
            // of the runtime this client connection was accepted under: a
            // reload (new upstream certificate) takes effect for every
            // request, and the old connections drain.
            let current = shared.runtime.load_full();
            let target = match &route.upstream {
                Upstream::Https { authority, host } => H2Target {
                    authority: authority.as_str(),
                    tls: Some((
                        current.upstream_tls.for_protocol(route.protocol),
                        host.as_str(),
                    )),
                    auto: route.protocol == UpstreamProtocol::Auto,
                },
                Upstream::Http(authority) | Upstream::Tcp(authority) => H2Target {
                    authority: authority.as_str(),
                    tls: None,
                    auto: false,
                },
            };
            match current.h2.route(&target, connect).await {
                Ok(H2Route::H2(sender)) => Via::H2(sender),
                Ok(H2Route::Http1Once(sender)) => Via::Http1Once(sender),
                Ok(H2Route::Http1) => Via::Pooled,
                Err(e) => {
                    tracing::warn!(error = %e, route = %route.name, "upstream connection failed");
                    return Err(Refusal::from(&e));
                }
            }
        }
        (_, Upstream::Http(authority)) => match &ctx.upstreams {
            Some(upstreams) => upstreams
                .lease()
                .map_or(Via::Pooled, |lease| Via::Own(lease, authority.as_str())),
            None => Via::Pooled,
        },
        _ => Via::Pooled,
    };
    let (parts, body) = req.into_parts();
    let (body, client_failed) = ClientBody::new(body);
    let mut req = Request::from_parts(parts, body);
    prepare(&mut req, ctx, route.headers, &route.upstream, &via)?;
    let result = match via {
        Via::Own(mut lease, authority) => Box::pin(lease.send(authority, req, connect)).await,
        // The current runtime's client, as for HTTP/2 above.
        Via::Pooled => {
            let client = shared.runtime.load().client.clone();
            client.request(req).await.map_err(|e| {
                let debug = format!("{e:?}");
                if debug.contains("ConnectTimeout") || debug.contains("timed out") {
                    UpstreamError::ConnectTimeout
                } else {
                    UpstreamError::Failed(error_chain(&e))
                }
            })
        }
        Via::H2(mut sender) => match sender.ready().await {
            Ok(()) => sender
                .send_request(req)
                .await
                .map_err(|e| UpstreamError::Failed(error_chain(&e))),
            Err(e) => Err(UpstreamError::Failed(error_chain(&e))),
        },
        Via::Http1Once(mut sender) => sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Failed(error_chain(&e))),
    };
    shared
        .metrics
        .upstream_seconds
        .with(&[&route.name])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(_) if client_failed.failed() => {
            // The client's own body broke (a malformed chunk, a reset):
            // not the upstream's fault.
            tracing::debug!(route = %route.name, peer = %ctx.remote, "the request body could not be read");
            Err(Refusal::bad_request(
                "the request body is malformed or incomplete",
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, route = %route.name, "upstream request failed");
            Err(Refusal::from(&e))
        }
    }
}

/// Rewrites the request for the upstream: origin-form URI and `Host` for
/// a connection of its own, absolute URI for the pooled client and for
/// HTTP/2 (whose `:authority` carries the client's host); the version
/// `via` speaks; hop-by-hop, spoofable identity and (from untrusted
/// clients) forwarding fields removed, `te: trailers` kept for HTTP/2
/// (gRPC needs it), one `content-length`; the connection's identity and
/// forwarding fields set.
fn prepare(
    req: &mut Request<ClientBody>,
    ctx: &ConnContext,
    mode: IdentityHeaders,
    upstream: &Upstream,
    via: &Via<'_>,
) -> Result<(), Refusal> {
    let own = via.origin_form();
    let h2 = via.version() == Version::HTTP_2;
    let te_trailers = h2 && wants_trailers(req.headers());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    let original_authority = parts.authority.take();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    let (scheme, authority) = match upstream {
        Upstream::Http(a) | Upstream::Tcp(a) => (Scheme::HTTP, a.as_str()),
        Upstream::Https { authority, .. } => (Scheme::HTTPS, authority.as_str()),
    };
    if own {
        parts.scheme = None;
    } else if h2 {
        // `:authority` is what `Host` is for HTTP/1.1: the client's.
        let client_host = original_authority.clone().or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        });
        parts.scheme = Some(scheme);
        parts.authority = client_host.or_else(|| authority.parse::<Authority>().ok());
    } else {
        parts.scheme = Some(scheme);
        parts.authority = authority.parse::<Authority>().ok();
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    // HTTP/2 in, HTTP/1.1 out unless the route says h2 (ARCHITECTURE.md,
    // trap 8).
    *req.version_mut() = via.version();
    let conn = &ctx.headers;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    strip_client_fields(headers, conn.trusted());
    one_content_length(headers).map_err(|()| Refusal::bad_request("invalid content-length"))?;
    if h2 {
        headers.remove(header::HOST);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    } else if !headers.contains_key(header::HOST) {
        let host = match original_authority {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            // What the pooled client would send.
            None if own => HeaderValue::from_str(authority).ok(),
            None => None,
        };
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
    }
    // A client's own x-forwarded-for is still here only when it is a
    // trusted proxy: the gate appends the address it sees.
    let prev: Vec<&str> = headers
        .get_all(&XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let xff = if prev.is_empty() {
        conn.client_ip_value().cloned()
    } else {
        HeaderValue::from_str(&format!("{}, {}", prev.join(", "), conn.client_ip())).ok()
    };
    match xff {
        Some(v) => {
            headers.insert(XFF, v);
        }
        None => {
            headers.remove(XFF);
        }
    }
    headers.insert(XF_PROTO, HeaderValue::from_static("https"));
    conn.identity_fields(&ctx.identity, mode, |name, value| {
        headers.insert(name.clone(), value.clone());
    });
    Ok(())
}
