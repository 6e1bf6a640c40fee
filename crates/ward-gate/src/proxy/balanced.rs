//! Forwarding on a route with several endpoints ([`crate::balance`]): the
//! balancer picks an endpoint, the request waits for a slot there (or
//! gets 503), goes out over the pooled HTTP/1.1 client or the endpoint's
//! shared HTTP/2 connection, and the outcome feeds passive ejection.
//!
//! Retries: a request whose body is held whole (none, or at most
//! `retry_body_limit` bytes with a known length) is sent again to another
//! endpoint when the connection to its endpoint cannot be made (nothing
//! of it went out), and, if its method is idempotent (GET, HEAD, OPTIONS,
//! TRACE, PUT, DELETE), also when the exchange breaks before an answer.
//! A streamed body is never sent twice.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Method, Request, Response};

use super::{ClientBody, ProxyBody, Via, error_chain, prepare, strip_hop_by_hop};
use crate::Shared;
use crate::balance::{Balancer, InFlight, Outcome, Unavailable, caller_key};
use crate::config::{Upstream, UpstreamProtocol};
use crate::pipeline::{ConnContext, Refusal, UpstreamError};
use crate::pool::h2::{H2Route, H2Target};
use crate::runtime::Route;

/// Why one attempt failed.
enum Failed {
    /// The gate's own refusal (a malformed request).
    Refused(Refusal),
    /// No connection: nothing of the request went out.
    Connect(UpstreamError),
    /// The exchange broke before an answer.
    Exchange(UpstreamError),
}

/// The request body as the attempts see it.
enum Held {
    /// Read whole: every attempt sends a copy.
    Bytes(Bytes),
    /// Streamed: the first attempt takes it.
    Stream(Option<Incoming>),
}

/// Whether a method may be sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Sends an authorized request to one of the route's endpoints.
pub(super) async fn forward(
    shared: &Shared,
    ctx: &ConnContext,
    route: &Route,
    balancer: &Balancer,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let (parts, body) = req.into_parts();
    let config = &balancer.config;
    let limit = config.retry_body_limit as u64;
    let mut held = if body.is_end_stream() {
        Held::Bytes(Bytes::new())
    } else if config.retries > 0 && body.size_hint().upper().is_some_and(|n| n <= limit) {
        match Limited::new(body, config.retry_body_limit).collect().await {
            Ok(collected) => Held::Bytes(collected.to_bytes()),
            Err(_) => {
                return Err(Refusal::bad_request(
                    "the request body is malformed or incomplete",
                ));
            }
        }
    } else {
        Held::Stream(Some(body))
    };
    let retry_exchange = idempotent(&parts.method);
    let key = caller_key(&ctx.identity);
    let attempts = config.retries as usize + 1;
    let mut tried = Vec::with_capacity(attempts);
    let mut last = None;
    while tried.len() < attempts {
        let Some(endpoint) = balancer.pick(key, &tried) else {
            break;
        };
        tried.push(endpoint.index());
        let slot = endpoint
            .admit(config)
            .await
            .map_err(|u| unavailable(balancer, &u))?;
        let (body, body_failed) = match &mut held {
            Held::Bytes(b) => (ClientBody::buffered(b.clone()), None),
            Held::Stream(s) => match s.take() {
                Some(incoming) => {
                    let (b, f) = ClientBody::new(incoming);
                    (b, Some(f))
                }
                None => break,
            },
        };
        if tried.len() > 1 {
            balancer.count_retry();
        }
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        let started = Instant::now();
        let sent = send(shared, ctx, route, &endpoint.upstream, req).await;
        shared
            .metrics
            .upstream_seconds
            .with(&[&route.name])
            .observe(started.elapsed().as_secs_f64());
        let buffered = matches!(held, Held::Bytes(_));
        match sent {
            Ok(resp) => {
                let outcome = if resp.status().is_server_error() {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                };
                balancer.record(&endpoint, outcome);
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = Tracked {
                    inner: body,
                    _slot: slot,
                };
                return Ok(Response::from_parts(parts, body.boxed()));
            }
            Err(Failed::Refused(refusal)) => return Err(refusal),
            Err(Failed::Connect(e)) => {
                tracing::warn!(error = %e, route = %route.name, endpoint = %endpoint.label, "connecting to the endpoint failed");
                balancer.record(&endpoint, Outcome::ConnectFailure);
                last = Some(e);
                if !buffered {
                    break;
                }
            }
            Err(Failed::Exchange(e)) => {
                if body_failed.is_some_and(|f| f.failed()) {
                    tracing::debug!(route = %route.name, peer = %ctx.remote, "the request body could not be read");
                    return Err(Refusal::bad_request(
                        "the request body is malformed or incomplete",
                    ));
                }
                tracing::warn!(error = %e, route = %route.name, endpoint = %endpoint.label, "upstream request failed");
                balancer.record(&endpoint, Outcome::Failure);
                last = Some(e);
                if !(buffered && retry_exchange) {
                    break;
                }
            }
        }
    }
    match last {
        Some(e) => Err(Refusal::from(&e)),
        None => Err(unavailable(balancer, &Unavailable::NoHealthy)),
    }
}

/// An upgrade (WebSocket, extended CONNECT) on a balanced route: to the
/// endpoint the policy picks, its outcome counted for ejection. Not
/// retried (the client's request is consumed by the attempt) and not
/// held against the endpoint's limits (the tunnel outlives the exchange).
pub(super) async fn upgrade(
    shared: &Shared,
    ctx: &ConnContext,
    route: &Route,
    balancer: &Balancer,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let endpoint = balancer
        .pick(caller_key(&ctx.identity), &[])
        .ok_or_else(|| unavailable(balancer, &Unavailable::NoHealthy))?;
    let answer = super::upgrade::forward(shared, ctx, route, &endpoint.upstream, req).await;
    let outcome = match &answer {
        Ok(_) => Outcome::Success,
        Err(r) if r.status >= 500 => Outcome::Failure,
        // The client's own mistake says nothing about the endpoint.
        Err(_) => Outcome::Success,
    };
    balancer.record(&endpoint, outcome);
    answer
}

/// 503 when no endpoint can take the request. The message names the
/// route and the limit, never an endpoint's address (that is logged).
fn unavailable(balancer: &Balancer, why: &Unavailable) -> Refusal {
    match why {
        Unavailable::NoHealthy => {
            tracing::warn!(route = %balancer.route, "no healthy endpoint");
            Refusal {
                status: 503,
                code: "no_healthy_upstream",
                message: Cow::Owned(format!(
                    "no endpoint of route {:?} is healthy",
                    balancer.route
                )),
            }
        }
        Unavailable::Overflow { endpoint, max } => {
            tracing::warn!(route = %balancer.route, %endpoint, max_connections = max, "endpoint at its limit: request refused");
            Refusal {
                status: 503,
                code: "upstream_overloaded",
                message: Cow::Owned(format!(
                    "the chosen endpoint of route {:?} has {max} requests in flight (its max_connections) and no room to wait; try again later",
                    balancer.route
                )),
            }
        }
    }
}

/// One attempt: the connection for the endpoint (pooled HTTP/1.1 or its
/// shared HTTP/2 connection), the request rewritten for it, sent.
async fn send(
    shared: &Shared,
    ctx: &ConnContext,
    route: &Route,
    upstream: &Upstream,
    mut req: Request<ClientBody>,
) -> Result<Response<Incoming>, Failed> {
    let connect = ctx.runtime.config.timeouts.upstream_connect.0;
    let h2 = matches!(
        (route.protocol, upstream),
        (UpstreamProtocol::H2, _) | (UpstreamProtocol::Auto, Upstream::Https { .. })
    );
    // The current runtime's connections and credentials (see `forward`).
    let current = shared.runtime.load_full();
    let via = if h2 {
        let target = match upstream {
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
            Err(e) => return Err(Failed::Connect(e)),
        }
    } else {
        Via::Pooled
    };
    prepare(&mut req, ctx, route.headers, upstream, &via).map_err(Failed::Refused)?;
    match via {
        Via::Pooled => current.client.request(req).await.map_err(|e| {
            let timed_out = format!("{e:?}").contains("ConnectTimeout")
                || error_chain(&e).contains("timed out");
            match (e.is_connect(), timed_out) {
                (true, true) => Failed::Connect(UpstreamError::ConnectTimeout),
                (true, false) => Failed::Connect(UpstreamError::Failed(error_chain(&e))),
                (false, _) => Failed::Exchange(UpstreamError::Failed(error_chain(&e))),
            }
        }),
        Via::H2(mut sender) => match sender.ready().await {
            // A closed shared connection took nothing of this request.
            Err(e) => Err(Failed::Connect(UpstreamError::Failed(error_chain(&e)))),
            Ok(()) => sender
                .send_request(req)
                .await
                .map_err(|e| Failed::Exchange(UpstreamError::Failed(error_chain(&e)))),
        },
        Via::Http1Once(mut sender) => sender
            .send_request(req)
            .await
            .map_err(|e| Failed::Exchange(UpstreamError::Failed(error_chain(&e)))),
        Via::Own(..) => Err(Failed::Exchange(UpstreamError::Failed(
            "no own connection on a balanced route".into(),
        ))),
    }
}

/// A response body that keeps its endpoint's slot until it ends (least
/// request and the limits count whole exchanges, not just heads).
struct Tracked {
    inner: Incoming,
    _slot: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
