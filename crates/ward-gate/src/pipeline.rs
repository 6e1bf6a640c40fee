//! The gate's one HTTP request pipeline, shared by every transport: the
//! HTTP/1 fast path ([`crate::server::h1`]), the hyper path
//! ([`crate::proxy`]) and the HTTP/2 upstreams to come.
//!
//! Given the connection ([`ConnContext`]: identity, tenant, runtime) and a
//! request head ([`RequestHead`]), it routes ([`route`]), authorizes
//! ([`authorize`], default deny), names every answer the gate gives itself
//! ([`Refusal`]), decides which identity fields go upstream
//! ([`ConnHeaders::identity_fields`]), and after the response accounts
//! for the request ([`finish`]: the request metric and the audit line).
//! Transports keep only their framing: parsing and writing heads, header
//! hygiene in their own representation, moving bodies. Nothing here
//! allocates on the way of an allowed request unless the audit log is on
//! or a policy asks for the request's fields.

use std::borrow::Cow;
use std::time::Instant;

use hyper::{Method, StatusCode};
use serde::Serialize;

use crate::Shared;
use crate::identity::Identity;
use crate::policy::{GrpcInput, IdentityInput, PolicyInput, RequestInput, Verdict};
use crate::runtime::Route;

mod conn;

pub use conn::{ConnContext, ConnHeaders, Negotiated, Tunnels};

/// The parts of a request head the pipeline decides on, borrowed from
/// whatever the transport parsed.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The host (lowercase, no port), from `:authority` or `Host`.
    pub host: Option<&'a str>,
    /// The gRPC call, when the request is one (`content-type:
    /// application/grpc…` and a `/service/method` path).
    pub grpc: Option<GrpcCall<'a>>,
}

/// A gRPC call's service and method, from its path
/// `/package.Service/Method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCall<'a> {
    /// `package.Service`.
    pub service: &'a str,
    /// `Method`.
    pub method: &'a str,
}

impl<'a> GrpcCall<'a> {
    /// The call of a gRPC request: `content_type` is its `content-type`.
    pub fn of(content_type: Option<&[u8]>, path: &'a str) -> Option<Self> {
        if !content_type.is_some_and(is_grpc_content_type) {
            return None;
        }
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        (!service.is_empty() && !method.is_empty() && !method.contains('/'))
            .then_some(GrpcCall { service, method })
    }
}

/// Whether a `content-type` is gRPC's (`application/grpc`, `+proto`,
/// `+json`, …; gRPC-Web is not).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Checks a `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`), as gRPC over HTTP/2 defines it.
pub fn valid_grpc_timeout(value: &[u8]) -> bool {
    match value.split_last() {
        Some((unit, digits)) => {
            matches!(unit, b'H' | b'M' | b'S' | b'm' | b'u' | b'n')
                && (1..=8).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

/// A valid `grpc-timeout` value as a duration (`None` if invalid); the
/// largest, 99999999H, is about 11,000 years and saturates.
pub fn grpc_timeout(value: &[u8]) -> Option<std::time::Duration> {
    use std::time::Duration;
    if !valid_grpc_timeout(value) {
        return None;
    }
    let (unit, digits) = value.split_last()?;
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        _ => Duration::from_nanos(n),
    })
}

/// An answer the gate gives itself instead of forwarding: status, the
/// `error` code (also the audit line's `reason`) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The machine-readable code.
    pub code: &'static str,
    /// The human-readable message.
    pub message: Cow<'static, str>,
}

impl Refusal {
    /// 404: no route matches.
    pub fn no_route() -> Self {
        Refusal::new(404, "no_route", "no route matches this request")
    }

    /// 403 with the authorization's message.
    pub fn forbidden(message: Cow<'static, str>) -> Self {
        Refusal {
            status: 403,
            code: "forbidden",
            message,
        }
    }

    /// 403: the route requires a verified client certificate and the
    /// client's was missing or failed; `reason` is the handshake's
    /// (`no_certificate`, `unknown_ca`, `expired`, `revoked`, …). Always
    /// 403, never 401: a client certificate has no HTTP challenge.
    pub fn certificate(reason: &'static str) -> Self {
        Refusal {
            status: 403,
            code: reason,
            message: Cow::Owned(format!(
                "this route requires a verified client certificate ({reason})"
            )),
        }
    }

    /// 400 with `message`.
    pub fn bad_request(message: &'static str) -> Self {
        Refusal::new(400, "bad_request", message)
    }

    /// 431: the request head is too large.
    pub fn head_too_large() -> Self {
        Refusal::new(431, "headers_too_large", "the request head is too large")
    }

    /// 400: a `grpc-timeout` that gRPC's grammar does not allow.
    pub fn bad_grpc_timeout() -> Self {
        Refusal::new(
            400,
            "bad_grpc_timeout",
            "grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u, n)",
        )
    }

    /// 504: a gRPC call's `grpc-timeout` passed before its upstream
    /// answered (gRPC status 4).
    pub fn deadline_exceeded() -> Self {
        Refusal::new(
            504,
            "deadline_exceeded",
            "the call's grpc-timeout passed before the upstream answered",
        )
    }

    /// The gRPC status a gRPC client gets for this refusal: 7
    /// PERMISSION_DENIED for a denial, 16 UNAUTHENTICATED for 401 and for
    /// a certificate refusal, 12 UNIMPLEMENTED for no route, 14
    /// UNAVAILABLE when the upstream failed,
    /// 3 INVALID_ARGUMENT for a bad `grpc-timeout`, 4 DEADLINE_EXCEEDED
    /// when the call's own deadline passed in the gate, 8
    /// RESOURCE_EXHAUSTED for a head too large, otherwise gRPC's HTTP
    /// status mapping.
    pub fn grpc_status(&self) -> u16 {
        match (self.code, self.status) {
            (code, 403) if crate::tls::is_certificate_reason(code) => 16,
            ("bad_grpc_timeout", _) => 3,
            ("deadline_exceeded", _) => 4,
            (_, 403) => 7,
            (_, 401) => 16,
            (_, 404) => 12,
            (_, 431) => 8,
            (_, 429 | 502 | 503 | 504) => 14,
            (_, 400) => 13,
            _ => 2,
        }
    }

    /// 502: the upstream's response cannot be used.
    pub fn unusable_response() -> Self {
        Refusal::new(
            502,
            "bad_gateway",
            "the upstream's response could not be used",
        )
    }

    fn new(status: u16, code: &'static str, message: &'static str) -> Self {
        Refusal {
            status,
            code,
            message: Cow::Borrowed(message),
        }
    }

    /// The JSON body every transport sends: `{"error":…,"message":…}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.code, "message": self.message }).to_string()
    }
}

/// Why an upstream request failed before anything reached the client.
#[derive(Debug)]
pub enum UpstreamError {
    /// Connecting took longer than the upstream connect timeout.
    ConnectTimeout,
    /// Connecting or the exchange failed.
    Failed(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::ConnectTimeout => f.write_str("connecting to the upstream timed out"),
            UpstreamError::Failed(e) => f.write_str(e),
        }
    }
}

impl From<&UpstreamError> for Refusal {
    /// 504 for a connect timeout, 502 for anything else.
    fn from(e: &UpstreamError) -> Self {
        match e {
            UpstreamError::ConnectTimeout => Refusal::new(
                504,
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
            UpstreamError::Failed(_) => {
                Refusal::new(502, "bad_gateway", "the upstream could not be reached")
            }
        }
    }
}

/// A refusal and the route it is counted under (`-` for none).
#[derive(Debug)]
pub struct Refused<'r> {
    /// The route's name, or `-`.
    pub route: &'r str,
    /// The answer.
    pub refusal: Refusal,
}

/// The first route of the tenant that matches the request, or 404. A
/// client a per-route tenant let in unverified gets no 404: a request no
/// route takes is refused as a strict route refuses it.
pub fn route<'r>(
    shared: &Shared,
    ctx: &ConnContext,
    routes: &'r [Route],
    head: &RequestHead<'_>,
) -> Result<&'r Route, Refused<'r>> {
    if let Some(route) = routes
        .iter()
        .find(|r| r.matches(head.host, head.path, head.method))
    {
        return Ok(route);
    }
    if let Some(reason) = ctx.unverified
        && ctx.tenant.per_route
    {
        return Err(refuse_certificate(shared, ctx, "-", reason));
    }
    Err(Refused {
        route: "-",
        refusal: Refusal::no_route(),
    })
}

/// What a route does with a client let in unverified (see
/// [`ConnContext::unverified`]): a strict route refuses it, 403 with the
/// handshake's reason, as a strict tenant's handshake would have; an
/// audit route of a per-route tenant lets it through and counts it
/// (an audit tenant counted it once, at the handshake).
fn certificate<'r>(
    shared: &Shared,
    ctx: &ConnContext,
    route: &'r Route,
) -> Result<(), Refused<'r>> {
    let Some(reason) = ctx.unverified else {
        return Ok(());
    };
    if !route.audit {
        return Err(refuse_certificate(shared, ctx, &route.name, reason));
    }
    if ctx.tenant.per_route {
        crate::audit_mode::would_refuse(
            shared,
            &ctx.tenant.name,
            ctx.remote,
            reason,
            Some((&route.name, "no verified client certificate")),
        );
    }
    Ok(())
}

/// Counts a certificate refusal at the HTTP layer as a denial.
fn refuse_certificate<'r>(
    shared: &Shared,
    ctx: &ConnContext,
    route: &'r str,
    reason: &'static str,
) -> Refused<'r> {
    shared.metrics.denied.with(&[&ctx.tenant.name, route]).inc();
    Refused {
        route,
        refusal: Refusal::certificate(reason),
    }
}

/// Applies the route's allow rules and policy (default deny); a denial is
/// counted and answered 403. `fields` are the request's header fields as
/// the client sent them; they are read only when a policy asks, or when the
/// route takes JWT-SVIDs (see [`crate::jwt_svid`]: a bad bearer token is
/// answered 401).
pub fn authorize<'r, 'a>(
    shared: &Shared,
    ctx: &ConnContext,
    route: &'r Route,
    head: &RequestHead<'_>,
    fields: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<(), Refused<'r>> {
    certificate(shared, ctx, route)?;
    let trusted = ctx.headers.trusted();
    let denied = |message| {
        shared
            .metrics
            .denied
            .with(&[&ctx.tenant.name, &route.name])
            .inc();
        Refused {
            route: &route.name,
            refusal: Refusal::forbidden(message),
        }
    };
    let decided = match &route.jwt {
        None => decide(route, ctx, &ctx.identity, head, || {
            policy_headers(fields, trusted)
        }),
        Some(jwt) => {
            // Read twice (token, then policy): kept only on routes that take tokens.
            let fields: Vec<(&str, &[u8])> = fields.collect();
            let fields = || fields.iter().copied();
            let bearer = jwt.bearer(fields()).map_err(|e| {
                shared
                    .metrics
                    .denied
                    .with(&[&ctx.tenant.name, &route.name])
                    .inc();
                Refused {
                    route: &route.name,
                    refusal: Refusal {
                        status: 401,
                        code: "invalid_jwt_svid",
                        message: Cow::Owned(e.0),
                    },
                }
            })?;
            match (jwt.mode, bearer) {
                (crate::jwt_svid::JwtMode::Either, None) => {
                    decide(route, ctx, &ctx.identity, head, || {
                        policy_headers(fields(), trusted)
                    })
                }
                (crate::jwt_svid::JwtMode::Either, Some(id)) => {
                    decide(route, ctx, &id, head, || policy_headers(fields(), trusted))
                }
                (crate::jwt_svid::JwtMode::Both, None) => {
                    return Err(Refused {
                        route: &route.name,
                        refusal: Refusal {
                            status: 401,
                            code: "missing_jwt_svid",
                            message: Cow::Borrowed(
                                "this route requires Authorization: Bearer <JWT-SVID>",
                            ),
                        },
                    });
                }
                (crate::jwt_svid::JwtMode::Both, Some(id)) => {
                    decide(route, ctx, &ctx.identity, head, || {
                        policy_headers(fields(), trusted)
                    })
                    .and_then(|()| {
                        decide(route, ctx, &id, head, || policy_headers(fields(), trusted))
                    })
                }
            }
        }
    };
    // Audit mode lets a policy denial through, and says so. (A bad or
    // missing JWT-SVID on a route that takes them stays a 401.)
    if let Err(message) = &decided
        && route.audit
    {
        crate::audit_mode::would_refuse(
            shared,
            &ctx.tenant.name,
            ctx.remote,
            "policy_denied",
            Some((&route.name, message)),
        );
        return Ok(());
    }
    decided.map_err(denied)
}

/// The route's verdict; the error is the 403 message. Policy failures are
/// logged here and never shown to the client.
fn decide(
    route: &Route,
    ctx: &ConnContext,
    identity: &Identity,
    head: &RequestHead<'_>,
    headers: impl FnOnce() -> std::collections::BTreeMap<String, String>,
) -> Result<(), Cow<'static, str>> {
    let input = || PolicyInput {
        identity: IdentityInput::of(identity),
        request: Some(RequestInput {
            method: head.method.as_str().to_owned(),
            path: head.path.to_owned(),
            host: head.host.map(str::to_owned),
            headers: headers(),
            grpc: head.grpc.map(|g| GrpcInput {
                service: g.service.to_owned(),
                method: g.method.to_owned(),
            }),
        }),
        route: Some(&route.name),
        tenant: &ctx.tenant.name,
    };
    match route.access.decide(identity, input) {
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
                spiffe_id = identity.spiffe_str().unwrap_or("-"),
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
/// fields only from trusted proxies.
fn policy_headers<'a>(
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

/// Whether `name` is spelled exactly like a hop-by-hop field: those stay
/// visible to policies as they always were.
fn is_hop_by_hop_exact(name: &str) -> bool {
    crate::forwarding::HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// What a request audit line needs from the request, kept only when the
/// audit log is on.
#[derive(Debug)]
pub struct Facts {
    started: Instant,
    method: Method,
    path: String,
    host: Option<String>,
    grpc: Option<(String, String)>,
}

/// The request's audit facts, when the audit log is on; `started` is when
/// the transport began on the request.
pub fn facts(shared: &Shared, head: &RequestHead<'_>, started: Instant) -> Option<Facts> {
    shared.audit.is_enabled().then(|| Facts {
        started,
        method: head.method.clone(),
        path: head.path.to_owned(),
        host: head.host.map(str::to_owned),
        grpc: head
            .grpc
            .map(|g| (g.service.to_owned(), g.method.to_owned())),
    })
}

/// Accounts for a request once its answer is known: the request metric
/// (route, status) and, when the audit log is on, its audit line.
/// `reason` is the refusal's code (`None`: forwarded); `grpc_status` the
/// call's gRPC status for a gRPC request (`-` when it ended without one).
pub fn finish(
    shared: &Shared,
    ctx: &ConnContext,
    facts: Option<Facts>,
    route: &str,
    status: u16,
    reason: Option<&str>,
    grpc_status: Option<&str>,
) {
    // Valid codes have static labels; an upstream's odd one is formatted.
    let code = StatusCode::from_u16(status).ok();
    let label = match &code {
        Some(code) => Cow::Borrowed(code.as_str()),
        None => Cow::Owned(status.to_string()),
    };
    shared
        .metrics
        .requests
        .with(&[route, &label, grpc_status.unwrap_or("")])
        .inc();
    let Some(facts) = facts else {
        return;
    };
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
        method: facts.method.as_str(),
        path: &facts.path,
        host: facts.host.as_deref(),
        grpc_service: facts.grpc.as_ref().map(|g| g.0.as_str()),
        grpc_method: facts.grpc.as_ref().map(|g| g.1.as_str()),
        grpc_status,
        route,
        result: if reason.is_none() {
            "forwarded"
        } else {
            "refused"
        },
        reason,
        status,
        duration_ms: facts.started.elapsed().as_secs_f64() * 1000.0,
    });
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
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<&'a str>,
    route: &'a str,
    result: &'static str,
    reason: Option<&'a str>,
    status: u16,
    duration_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_become_durations() {
        use std::time::Duration;
        assert_eq!(grpc_timeout(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout(b"3H"), Some(Duration::from_secs(10_800)));
        assert_eq!(grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert!(grpc_timeout(b"99999999H").is_some());
        assert_eq!(grpc_timeout(b"1s"), None);
        assert_eq!(grpc_timeout(b""), None);
    }

    #[test]
    fn grpc_timeouts_follow_the_grammar() {
        for ok in ["1S", "10m", "99999999n", "5H", "0u", "3M"] {
            assert!(valid_grpc_timeout(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "S",
            "10",
            "10x",
            "123456789S",
            "-1S",
            "1.5S",
            " 1S",
            "1s",
        ] {
            assert!(!valid_grpc_timeout(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn grpc_calls_need_the_content_type_and_a_method_path() {
        let call = GrpcCall::of(Some(b"application/grpc+proto"), "/pkg.Svc/Do");
        assert_eq!(
            call,
            Some(GrpcCall {
                service: "pkg.Svc",
                method: "Do"
            })
        );
        assert!(GrpcCall::of(Some(b"application/grpc"), "/pkg.Svc/Do").is_some());
        assert!(GrpcCall::of(Some(b"application/grpc-web"), "/pkg.Svc/Do").is_none());
        assert!(GrpcCall::of(Some(b"application/json"), "/pkg.Svc/Do").is_none());
        assert!(GrpcCall::of(None, "/pkg.Svc/Do").is_none());
        assert!(GrpcCall::of(Some(b"application/grpc"), "/pkg.Svc").is_none());
        assert!(GrpcCall::of(Some(b"application/grpc"), "/a/b/c").is_none());
    }

    #[test]
    fn refusals_map_to_grpc_statuses() {
        assert_eq!(Refusal::forbidden("x".into()).grpc_status(), 7);
        assert_eq!(Refusal::no_route().grpc_status(), 12);
        assert_eq!(Refusal::certificate("no_certificate").grpc_status(), 16);
        assert_eq!(Refusal::certificate("revoked").status, 403);
        assert_eq!(Refusal::bad_grpc_timeout().grpc_status(), 3);
        assert_eq!(Refusal::head_too_large().grpc_status(), 8);
        assert_eq!(
            Refusal::from(&UpstreamError::ConnectTimeout).grpc_status(),
            14
        );
        assert_eq!(
            Refusal::from(&UpstreamError::Failed("x".into())).grpc_status(),
            14
        );
    }
}
