//! HTTP forwarding: route, authorize, sanitize identity headers, forward
//! with streamed bodies, and account for it.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use serde::Serialize;

use crate::Shared;
use crate::config::{IdentityHeaders, Upstream};
use crate::identity::Identity;
use crate::policy::{IdentityInput, PolicyInput, RequestInput, Verdict};
use crate::runtime::{Route, Runtime, Tenant, TenantKind};

mod body;
mod upstream;

pub use body::ClientBody;
use upstream::UpstreamError;
pub use upstream::Upstreams;

/// The response body type: upstream bodies stream through; errors are small JSON.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Per-connection facts every request of the connection shares.
#[derive(Debug)]
pub struct ConnContext {
    /// Client address.
    pub remote: SocketAddr,
    /// SNI the client sent.
    pub sni: Option<String>,
    /// The tenant that accepted the connection.
    pub tenant: Arc<Tenant>,
    /// The client's identity.
    pub identity: Arc<Identity>,
    /// The runtime in force when the connection was accepted.
    pub runtime: Arc<Runtime>,
    /// What the handshake negotiated.
    pub tls: Negotiated,
    /// The identity headers, built once for all requests of the connection.
    pub headers: ConnHeaders,
    /// The connection's own upstream connection for `http://` routes
    /// (HTTP/1.1 clients); `None`: every request uses the pooled client.
    pub upstreams: Option<Upstreams>,
    /// When the connection was accepted (for `max_connection_age`).
    pub accepted: Instant,
}

impl ConnContext {
    /// The context of a connection; `own_upstream` for HTTP/1.1 clients.
    pub fn new(
        remote: SocketAddr,
        sni: Option<String>,
        tenant: Arc<Tenant>,
        identity: Arc<Identity>,
        runtime: Arc<Runtime>,
        tls: Negotiated,
        own_upstream: bool,
    ) -> Self {
        let trusted =
            crate::forwarding::is_trusted(&runtime.config.listen.trusted_proxies, remote.ip());
        let headers = ConnHeaders::new(&identity, &tenant, remote, trusted);
        let upstreams = own_upstream.then(|| Upstreams::new(runtime.pool.clone()));
        ConnContext {
            remote,
            sni,
            tenant,
            identity,
            runtime,
            tls,
            headers,
            upstreams,
            accepted: Instant::now(),
        }
    }

    /// Whether the connection has reached `max_connection_age`: it closes
    /// after the response in progress.
    pub fn aged(&self) -> bool {
        self.runtime
            .config
            .timeouts
            .max_age()
            .is_some_and(|age| self.accepted.elapsed() >= age)
    }
}

/// Header values that depend only on the connection.
#[derive(Debug)]
pub struct ConnHeaders {
    /// `x-forwarded-client-cert`.
    xfcc: Option<HeaderValue>,
    /// `x-ward-spiffe-id`.
    spiffe: Option<HeaderValue>,
    /// The client's IP address for `x-forwarded-for`.
    client_ip: String,
    /// Its header value, when there is no earlier `x-forwarded-for`.
    client_ip_value: Option<HeaderValue>,
    /// RFC 9440 `client-cert` and `client-cert-chain`, built on first use.
    rfc9440: OnceLock<(Option<HeaderValue>, Option<HeaderValue>)>,
    /// The client is a trusted proxy: its forwarding fields are kept.
    trusted: bool,
}

impl ConnHeaders {
    fn new(id: &Identity, tenant: &Tenant, remote: SocketAddr, trusted: bool) -> Self {
        let client_ip = remote.ip().to_string();
        ConnHeaders {
            xfcc: shared_value(id.xfcc(tenant.by.as_deref())),
            spiffe: id.spiffe_str().and_then(|s| shared_value(s.to_owned())),
            client_ip_value: shared_value(client_ip.clone()),
            client_ip,
            rfc9440: OnceLock::new(),
            trusted,
        }
    }
}

impl ConnHeaders {
    /// `x-forwarded-client-cert`, when the identity gives one.
    pub(crate) fn xfcc(&self) -> Option<&[u8]> {
        self.xfcc.as_ref().map(HeaderValue::as_bytes)
    }

    /// `x-ward-spiffe-id`, when the client has a SPIFFE ID.
    pub(crate) fn spiffe(&self) -> Option<&[u8]> {
        self.spiffe.as_ref().map(HeaderValue::as_bytes)
    }

    /// The client's IP address.
    pub(crate) fn client_ip(&self) -> &str {
        &self.client_ip
    }

    /// Whether the client is a trusted proxy (`[listen] trusted_proxies`).
    pub(crate) fn trusted(&self) -> bool {
        self.trusted
    }

    /// RFC 9440 `client-cert` and `client-cert-chain`, built on first use.
    pub(crate) fn rfc9440(&self, id: &Identity) -> (Option<&[u8]>, Option<&[u8]>) {
        let (cert, chain) = self.rfc9440.get_or_init(|| {
            (
                id.rfc9440_cert().and_then(shared_value),
                id.rfc9440_chain().and_then(shared_value),
            )
        });
        (
            cert.as_ref().map(HeaderValue::as_bytes),
            chain.as_ref().map(HeaderValue::as_bytes),
        )
    }
}

/// A header value backed by shared bytes, so cloning it per request is a
/// reference count; `None` when `s` is not a valid value.
fn shared_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(s)).ok()
}

/// The negotiated TLS parameters of a connection, for metrics and audit lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct Negotiated {
    /// Protocol version (`TLSv1.3`).
    pub version: Option<&'static str>,
    /// Cipher suite.
    pub cipher: Option<&'static str>,
    /// Key-exchange group.
    pub group: Option<&'static str>,
    /// ALPN protocol.
    pub alpn: Option<&'static str>,
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XF_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
const WARD_SPIFFE_ID: HeaderName = HeaderName::from_static("x-ward-spiffe-id");
const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
const CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");

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

/// Whether `name` is spelled exactly like a hop-by-hop field: those stay
/// visible to policies as they always were.
fn is_hop_by_hop_exact(name: &str) -> bool {
    crate::forwarding::HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
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

/// One audit line per request (SPEC §6).
#[derive(Serialize)]
struct RequestEvent<'a> {
    event: &'static str,
    remote: String,
    sni: Option<&'a str>,
    tenant: &'a str,
    tls_version: Option<&'static str>,
    cipher: Option<&'static str>,
    group: Option<&'static str>,
    alpn: Option<&'static str>,
    spiffe_id: Option<&'a str>,
    subject: &'a str,
    sans: Vec<&'a str>,
    serial: &'a str,
    fingerprint: &'a str,
    method: &'a str,
    path: &'a str,
    host: Option<&'a str>,
    route: &'a str,
    result: &'static str,
    reason: Option<&'a str>,
    status: u16,
    duration_ms: f64,
}

/// The request as an audit line names it.
pub(crate) struct Seen<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) host: Option<&'a str>,
    pub(crate) started: Instant,
}

/// Writes one request audit line (SPEC §6): the connection's identity and
/// TLS facts, the request, where it went and how it ended.
pub(crate) fn audit_request(
    shared: &Shared,
    ctx: &ConnContext,
    seen: &Seen<'_>,
    route: &str,
    status: u16,
    reason: Option<&str>,
) {
    let id = &ctx.identity;
    shared.audit.record(&RequestEvent {
        event: "request",
        remote: ctx.remote.to_string(),
        sni: ctx.sni.as_deref(),
        tenant: &ctx.tenant.name,
        tls_version: ctx.tls.version,
        cipher: ctx.tls.cipher,
        group: ctx.tls.group,
        alpn: ctx.tls.alpn,
        spiffe_id: id.spiffe_str(),
        subject: &id.subject,
        sans: id.sans(),
        serial: &id.serial,
        fingerprint: &id.fingerprint,
        method: seen.method,
        path: seen.path,
        host: seen.host,
        route,
        result: if reason.is_none() {
            "forwarded"
        } else {
            "refused"
        },
        reason,
        status,
        duration_ms: seen.started.elapsed().as_secs_f64() * 1000.0,
    });
}

/// What a request audit line needs from the request, kept only when the
/// audit log is on.
struct AuditFacts {
    started: Instant,
    method: hyper::Method,
    path: String,
    host: Option<String>,
}

/// Handles one request on a connection.
pub async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, hyper::Error> {
    let TenantKind::Http(routes) = &ctx.tenant.kind else {
        return Ok(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "not an HTTP tenant",
        ));
    };
    let host = request_host(&req);
    let route = routes
        .iter()
        .find(|r| r.matches(host.as_deref(), req.uri().path(), req.method()));
    let audit = shared.audit.is_enabled().then(|| AuditFacts {
        started: Instant::now(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        host: host.as_deref().map(str::to_owned),
    });
    let (route_name, outcome) = match route {
        None => (
            "-",
            Err((
                StatusCode::NOT_FOUND,
                "no_route",
                Cow::Borrowed("no route matches this request"),
            )),
        ),
        Some(r) => match authorize(
            r,
            &ctx,
            req.method().as_str(),
            req.uri().path(),
            host.as_deref(),
            || {
                policy_headers(
                    req.headers()
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_bytes())),
                    ctx.headers.trusted,
                )
            },
        ) {
            Ok(()) => (r.name.as_str(), Ok(r)),
            Err(message) => {
                shared
                    .metrics
                    .denied
                    .with(&[&ctx.tenant.name, &r.name])
                    .inc();
                (
                    r.name.as_str(),
                    Err((StatusCode::FORBIDDEN, "forbidden", message)),
                )
            }
        },
    };
    drop(host);
    let response = match outcome {
        // Refusals (no route, forbidden) are audited with their reason below.
        Err(refusal) => Err(refusal),
        Ok(route) => forward(&shared, &ctx, route, req).await,
    };
    let (response, reason) = match response {
        Ok(r) => (r, None),
        Err((status, code, message)) => (json_error(status, code, &message), Some(code)),
    };
    let status = response.status();
    shared
        .metrics
        .requests
        .with(&[route_name, status.as_str()])
        .inc();
    if let Some(facts) = audit {
        audit_request(
            &shared,
            &ctx,
            &Seen {
                method: facts.method.as_str(),
                path: &facts.path,
                host: facts.host.as_deref(),
                started: facts.started,
            },
            route_name,
            status.as_u16(),
            reason,
        );
    }
    Ok(response)
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

type Refusal = (StatusCode, &'static str, Cow<'static, str>);

/// Sends an authorized request to its route's upstream.
async fn forward(
    shared: &Shared,
    ctx: &ConnContext,
    route: &Route,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let own = match (&route.upstream, &ctx.upstreams) {
        (Upstream::Http(authority), Some(upstreams)) => {
            upstreams.lease().map(|lease| (lease, authority.as_str()))
        }
        _ => None,
    };
    let (parts, body) = req.into_parts();
    let (body, client_failed) = ClientBody::new(body);
    let mut req = Request::from_parts(parts, body);
    prepare(&mut req, ctx, route.headers, &route.upstream, own.is_some())?;
    let started = Instant::now();
    let result = match own {
        Some((mut lease, authority)) => {
            let connect = ctx.runtime.config.timeouts.upstream_connect.0;
            lease.send(authority, req, connect).await
        }
        None => ctx.runtime.client.request(req).await.map_err(|e| {
            let debug = format!("{e:?}");
            if debug.contains("ConnectTimeout") || debug.contains("timed out") {
                UpstreamError::ConnectTimeout
            } else {
                UpstreamError::Failed(upstream::error_chain(&e))
            }
        }),
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
            Err((
                StatusCode::BAD_REQUEST,
                "bad_request",
                Cow::Borrowed("the request body is malformed or incomplete"),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, route = %route.name, "upstream request failed");
            Err(match e {
                UpstreamError::ConnectTimeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    Cow::Borrowed("the upstream did not answer in time"),
                ),
                UpstreamError::Failed(_) => (
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    Cow::Borrowed("the upstream could not be reached"),
                ),
            })
        }
    }
}

/// Applies the route's allow rules and policy; the error is the 403
/// message. Policy failures are logged here and never shown to the client.
pub(crate) fn authorize(
    route: &Route,
    ctx: &ConnContext,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: impl FnOnce() -> std::collections::BTreeMap<String, String>,
) -> Result<(), Cow<'static, str>> {
    let input = || PolicyInput {
        identity: IdentityInput::of(&ctx.identity),
        request: Some(RequestInput {
            method: method.to_owned(),
            path: path.to_owned(),
            host: host.map(str::to_owned),
            headers: headers(),
        }),
        route: Some(&route.name),
        tenant: &ctx.tenant.name,
    };
    match route.access.decide(&ctx.identity, input) {
        Verdict::Allowed => Ok(()),
        Verdict::DeniedByRules => Err(Cow::Borrowed("this identity may not use this route")),
        Verdict::DeniedByPolicy(messages) if messages.is_empty() => {
            Err(Cow::Borrowed("denied by policy"))
        }
        Verdict::DeniedByPolicy(messages) => Err(Cow::Owned(format!(
            "denied by policy: {}",
            messages.join("; ")
        ))),
        Verdict::PolicyError(reason) => {
            tracing::warn!(
                route = %route.name,
                tenant = %ctx.tenant.name,
                policy = route.access.policy().map_or("-", |p| p.name()),
                spiffe_id = ctx.identity.spiffe_str().unwrap_or("-"),
                error = %reason,
                "policy evaluation failed; request denied"
            );
            Err(Cow::Borrowed("denied by policy"))
        }
    }
}

/// Header fields as a policy sees them: lowercase names → values,
/// repeated fields joined with ", ". Policies see the client's fields the
/// upstream would see: never a spoofable identity field, forwarding
/// fields only from trusted proxies. Both HTTP paths use it.
pub(crate) fn policy_headers<'a>(
    fields: impl Iterator<Item = (&'a str, &'a [u8])>,
    trusted: bool,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in fields {
        if crate::forwarding::drop_from_client(name, trusted) && !is_hop_by_hop_exact(name) {
            continue;
        }
        let value = String::from_utf8_lossy(value);
        out.entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

/// Rewrites the request for the upstream: origin-form URI for the
/// connection's own upstream connection (`own`), absolute URI for the
/// pooled client; HTTP/1.1; hop-by-hop, spoofable identity and (from
/// untrusted clients) forwarding fields removed, one `content-length`;
/// the connection's identity and forwarding fields set.
fn prepare(
    req: &mut Request<ClientBody>,
    ctx: &ConnContext,
    mode: IdentityHeaders,
    upstream: &Upstream,
    own: bool,
) -> Result<(), Refusal> {
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
    } else {
        parts.scheme = Some(scheme);
        parts.authority = authority.parse::<Authority>().ok();
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    // HTTP/2 in, HTTP/1.1 out (ARCHITECTURE.md, trap 8).
    *req.version_mut() = Version::HTTP_11;
    let conn = &ctx.headers;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    strip_client_fields(headers, conn.trusted);
    one_content_length(headers).map_err(|()| {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            Cow::Borrowed("invalid content-length"),
        )
    })?;
    if !headers.contains_key(header::HOST) {
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
        conn.client_ip_value.clone()
    } else {
        HeaderValue::from_str(&format!("{}, {}", prev.join(", "), conn.client_ip)).ok()
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
    if let Some(v) = &conn.xfcc {
        headers.insert(XFCC, v.clone());
    }
    if let Some(v) = &conn.spiffe {
        headers.insert(WARD_SPIFFE_ID, v.clone());
    }
    if mode == IdentityHeaders::Rfc9440 {
        let (cert, chain) = conn.rfc9440.get_or_init(|| {
            let id = &ctx.identity;
            (
                id.rfc9440_cert().and_then(shared_value),
                id.rfc9440_chain().and_then(shared_value),
            )
        });
        if let Some(v) = cert {
            headers.insert(CLIENT_CERT, v.clone());
        }
        if let Some(v) = chain {
            headers.insert(CLIENT_CERT_CHAIN, v.clone());
        }
    }
    Ok(())
}
