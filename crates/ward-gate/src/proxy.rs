//! HTTP forwarding: route, authorize, sanitize identity headers, forward
//! with streamed bodies, and account for it.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use serde::Serialize;

use crate::Shared;
use crate::config::{IdentityHeaders, Upstream};
use crate::identity::Identity;
use crate::policy::{IdentityInput, PolicyInput, RequestInput, Verdict};
use crate::runtime::{Route, Runtime, Tenant, TenantKind};

/// The response body type: upstream bodies stream through; errors are small JSON.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Per-connection facts every request of the connection shares.
#[derive(Debug, Clone)]
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
    pub tls: Arc<Negotiated>,
}

/// The negotiated TLS parameters of a connection, for request audit lines.
#[derive(Debug, Clone, Default)]
pub struct Negotiated {
    /// Protocol version (`TLSv1.3`).
    pub version: Option<String>,
    /// Cipher suite.
    pub cipher: Option<String>,
    /// Key-exchange group.
    pub group: Option<String>,
    /// ALPN protocol.
    pub alpn: Option<String>,
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Removes every header a client could use to spoof an identity.
fn strip_identity_headers(headers: &mut HeaderMap) {
    let spoofable: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k == "x-forwarded-client-cert"
                || k.starts_with("x-ward-")
                || k == "client-cert"
                || k == "client-cert-chain"
        })
        .cloned()
        .collect();
    for k in spoofable {
        headers.remove(k);
    }
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

#[derive(Serialize)]
struct RequestEvent<'a> {
    event: &'static str,
    remote: String,
    sni: Option<&'a str>,
    tenant: &'a str,
    tls_version: Option<&'a str>,
    cipher: Option<&'a str>,
    group: Option<&'a str>,
    alpn: Option<&'a str>,
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

/// Handles one request on a connection.
pub async fn handle(
    shared: Arc<Shared>,
    ctx: ConnContext,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, hyper::Error> {
    let started = Instant::now();
    let host = req
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| {
                    h.rsplit_once(':')
                        .map_or(
                            h,
                            |(name, port)| if port.parse::<u16>().is_ok() { name } else { h },
                        )
                        .to_owned()
                })
        })
        .map(|h| h.to_ascii_lowercase());
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let TenantKind::Http(routes) = &ctx.tenant.kind else {
        return Ok(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "not an HTTP tenant",
        ));
    };
    let route = routes
        .iter()
        .find(|r| r.matches(host.as_deref(), &path, &method));
    // Policies see the headers the upstream would see, never spoofed identity.
    strip_identity_headers(req.headers_mut());
    let (route_name, outcome) = match route {
        None => (
            "-",
            Err((
                StatusCode::NOT_FOUND,
                "no_route",
                Cow::Borrowed("no route matches this request"),
            )),
        ),
        Some(r) => match authorize(r, &ctx, &req, host.as_deref()) {
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
    let response = match outcome {
        // Refusals (no route, forbidden) are audited with their reason below.
        Err(refusal) => Err(refusal),
        Ok(route) => {
            prepare(&mut req, &ctx, route.headers, &route.upstream);
            let upstream_started = Instant::now();
            let result = ctx.runtime.client.request(req).await;
            shared
                .metrics
                .upstream_seconds
                .with(&[route_name])
                .observe(upstream_started.elapsed().as_secs_f64());
            match result {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Ok(Response::from_parts(parts, body.boxed()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, route = route_name, "upstream request failed");
                    let timeout = format!("{e:?}").contains("ConnectTimeout")
                        || format!("{e:?}").contains("timed out");
                    Err(if timeout {
                        (
                            StatusCode::GATEWAY_TIMEOUT,
                            "upstream_timeout",
                            Cow::Borrowed("the upstream did not answer in time"),
                        )
                    } else {
                        (
                            StatusCode::BAD_GATEWAY,
                            "bad_gateway",
                            Cow::Borrowed("the upstream could not be reached"),
                        )
                    })
                }
            }
        }
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
    let id = &ctx.identity;
    shared.audit.record(&RequestEvent {
        event: "request",
        remote: ctx.remote.to_string(),
        sni: ctx.sni.as_deref(),
        tenant: &ctx.tenant.name,
        tls_version: ctx.tls.version.as_deref(),
        cipher: ctx.tls.cipher.as_deref(),
        group: ctx.tls.group.as_deref(),
        alpn: ctx.tls.alpn.as_deref(),
        spiffe_id: id.spiffe_id.as_deref(),
        subject: &id.subject,
        sans: id.sans(),
        serial: &id.serial,
        fingerprint: &id.fingerprint,
        method: method.as_str(),
        path: &path,
        host: host.as_deref(),
        route: route_name,
        result: if reason.is_none() {
            "forwarded"
        } else {
            "refused"
        },
        reason,
        status: status.as_u16(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
    Ok(response)
}

/// Applies the route's allow rules and policy; the error is the 403
/// message. Policy failures are logged here and never shown to the client.
fn authorize(
    route: &Route,
    ctx: &ConnContext,
    req: &Request<Incoming>,
    host: Option<&str>,
) -> Result<(), Cow<'static, str>> {
    let input = || PolicyInput {
        identity: IdentityInput::of(&ctx.identity),
        request: Some(RequestInput {
            method: req.method().as_str().to_owned(),
            path: req.uri().path().to_owned(),
            host: host.map(str::to_owned),
            headers: headers_for_policy(req.headers()),
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
                spiffe_id = ctx.identity.spiffe_id.as_deref().unwrap_or("-"),
                error = %reason,
                "policy evaluation failed; request denied"
            );
            Err(Cow::Borrowed("denied by policy"))
        }
    }
}

/// Lowercase header names → values; repeated headers joined with ", ".
fn headers_for_policy(headers: &HeaderMap) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

/// Rewrites the request for the upstream.
fn prepare(
    req: &mut Request<Incoming>,
    ctx: &ConnContext,
    mode: IdentityHeaders,
    upstream: &Upstream,
) {
    let (scheme, authority) = match upstream {
        Upstream::Http(a) => ("http", a.as_str()),
        Upstream::Https { authority, .. } => ("https", authority.as_str()),
        Upstream::Tcp(a) => ("http", a.as_str()),
    };
    let original_authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    if let Ok(uri) = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
    {
        *req.uri_mut() = uri;
    }
    // HTTP/2 in, HTTP/1.1 out (ARCHITECTURE.md, trap 8).
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    strip_identity_headers(headers);
    if !headers.contains_key(header::HOST)
        && let Some(a) = original_authority.and_then(|a| HeaderValue::from_str(&a).ok())
    {
        headers.insert(header::HOST, a);
    }
    let client_ip = ctx.remote.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client_ip}"),
        None => client_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let id = &ctx.identity;
    if let Ok(v) = HeaderValue::from_str(&id.xfcc(ctx.tenant.by.as_deref())) {
        headers.insert("x-forwarded-client-cert", v);
    }
    if let Some(spiffe) = id
        .spiffe_id
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        headers.insert("x-ward-spiffe-id", spiffe);
    }
    if mode == IdentityHeaders::Rfc9440 {
        if let Some(v) = id
            .rfc9440_cert()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert("client-cert", v);
        }
        if let Some(v) = id
            .rfc9440_chain()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert("client-cert-chain", v);
        }
    }
}
