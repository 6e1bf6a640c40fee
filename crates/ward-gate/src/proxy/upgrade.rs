//! HTTP/1.1 upgrades (WebSocket and others) and HTTP/2 extended CONNECT
//! (RFC 8441, proxied to the upstream as an HTTP/1.1 upgrade) on the
//! hyper path: the
//! upgrade request goes through the pipeline like any other (route,
//! authorization, identity fields), on an upstream connection of its own;
//! when the upstream answers 101, the client gets the 101 and the two
//! upgraded streams are joined, bytes both ways, until either side closes
//! or nothing moves for the idle timeout, or the gate ends it: a CRL
//! update that refuses the client's certificate, or the drain on shutdown
//! (the tunnel gets the drain time, then is closed).

use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use ward_tls::server::lifetime::Streams;

use super::{ClientBody, ProxyBody, Via, prepare, strip_hop_by_hop};
use crate::Shared;
use crate::config::{Upstream, UpstreamProtocol};
use crate::pipeline::{ConnContext, Refusal, Tunnels, UpstreamError};
use crate::pool::ConnectError;
use crate::runtime::Route;

/// Whether `req` asks for an HTTP/1.1 upgrade (`Connection: upgrade` and
/// `Upgrade`).
pub(super) fn requested(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The protocol of an RFC 8441 extended CONNECT (`:method CONNECT` with
/// `:protocol`, HTTP/2 only), if `req` is one.
pub(super) fn extended_connect(req: &Request<Incoming>) -> Option<&hyper::ext::Protocol> {
    if req.version() != Version::HTTP_2 || req.method() != Method::CONNECT {
        return None;
    }
    req.extensions().get::<hyper::ext::Protocol>()
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1).
fn websocket_key() -> Result<String, Refusal> {
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Refusal {
        status: 500,
        code: "internal",
        message: "no randomness for a WebSocket key".into(),
    })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(nonce))
}

/// The `Sec-WebSocket-Accept` an upstream must answer `key` with.
fn websocket_accept(key: &str) -> String {
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    hash.update(key.as_bytes());
    hash.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(hash.finish().as_ref())
}

/// Forwards an upgrade request (an HTTP/1.1 `Upgrade`, or an HTTP/2
/// extended CONNECT, which goes upstream as the HTTP/1.1 upgrade it
/// stands for); on 101 joins the upgraded streams.
pub(super) async fn forward(
    shared: &Shared,
    ctx: &ConnContext,
    route: &Route,
    upstream: &Upstream,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    if route.protocol == UpstreamProtocol::H2 {
        return Err(Refusal::bad_request(
            "this route's upstream speaks HTTP/2 only: no HTTP/1.1 upgrade",
        ));
    }
    // RFC 8441 §5: the HTTP/2 client sends no Sec-WebSocket-Key and gets
    // 200, not 101; the HTTP/1.1 side needs a key and answers 101 with
    // the matching Sec-WebSocket-Accept, which the gate checks.
    let mut generated_key = None;
    // The tunnel counts as a request in flight on its connection for as
    // long as it lives: an HTTP/2 connection whose only stream is a busy
    // extended-CONNECT tunnel is not idle.
    let in_flight = req.extensions().get::<Streams>().map(Streams::open);
    let protocol = extended_connect(&req).map(|p| HeaderValue::from_str(p.as_str()));
    let extended = protocol.is_some();
    let upgrade = match protocol {
        Some(value) => {
            let value = value
                .map_err(|_| Refusal::bad_request("the :protocol value is not a valid token"))?;
            *req.method_mut() = Method::GET;
            req.extensions_mut().remove::<hyper::ext::Protocol>();
            if value.as_bytes().eq_ignore_ascii_case(b"websocket") {
                let key = websocket_key()?;
                let header =
                    HeaderValue::from_str(&key).map_err(|_| Refusal::unusable_response())?;
                req.headers_mut().insert(header::SEC_WEBSOCKET_KEY, header);
                generated_key = Some(key);
            }
            Some(value)
        }
        None => req.headers().get(header::UPGRADE).cloned(),
    };
    let client_side = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let (body, _) = ClientBody::new(body);
    let mut req = Request::from_parts(parts, body);
    prepare(&mut req, ctx, route.headers, upstream, &Via::Pooled)?;
    // Origin form on a connection of its own; the hop-by-hop fields that
    // ask for the upgrade go back in.
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = None;
    parts.authority = None;
    if let Ok(uri) = hyper::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    let headers = req.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
    }
    let connect = ctx.runtime.config.timeouts.upstream_connect.0;
    let sent = match upstream {
        Upstream::Http(authority) | Upstream::Tcp(authority) => {
            let tcp = tcp(authority, connect).await?;
            send(authority, tcp, req).await
        }
        Upstream::Https { authority, host } => {
            let tcp = tcp(authority, connect).await?;
            let name =
                ServerName::try_from(host.clone()).map_err(|_| Refusal::unusable_response())?;
            // The current credentials (a reload may have changed them).
            let tls = TlsConnector::from(shared.runtime.load().upstream_tls.http1.clone());
            let stream = match tokio::time::timeout(connect, tls.connect(name, tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let e = UpstreamError::Failed(format!(
                        "TLS to {authority}: {}",
                        super::error_chain(&e)
                    ));
                    tracing::warn!(error = %e, route = %route.name, "upstream upgrade failed");
                    return Err(Refusal::from(&e));
                }
                Err(_) => return Err(Refusal::from(&UpstreamError::ConnectTimeout)),
            };
            send(authority, stream, req).await
        }
    };
    let mut resp = sent.map_err(|e| {
        tracing::warn!(error = %e, route = %route.name, "upstream upgrade failed");
        Refusal::from(&e)
    })?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(parts, body.boxed()));
    }
    if let Some(key) = &generated_key {
        let accepted = resp
            .headers()
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == websocket_accept(key).as_bytes());
        if !accepted {
            tracing::warn!(route = %route.name, "upstream answered the WebSocket upgrade with a wrong Sec-WebSocket-Accept");
            return Err(Refusal::unusable_response());
        }
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    let idle = ctx.runtime.config.timeouts.idle.0;
    let peer = ctx.remote;
    let route_name = route.name.clone();
    // Subscribed before the 101 goes out: the client connection's task
    // waits for its tunnels, and ends them on revocation and the drain.
    let mut end = ctx.tunnels.subscribe();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let run = async {
            match tokio::try_join!(client_side, upstream_side) {
                Ok((client, upstream)) => {
                    join(
                        TokioIo::new(client),
                        TokioIo::new(upstream),
                        idle,
                        &route_name,
                    )
                    .await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, %peer, route = %route_name, "upgrade did not complete");
                }
            }
        };
        tokio::select! {
            () = run => {}
            () = Tunnels::ended(&mut end) => {
                tracing::debug!(%peer, route = %route_name, "upgraded connection ended by the gate");
            }
        }
    });
    let (mut parts, body) = resp.into_parts();
    if extended {
        // HTTP/2: 200 with no body and no hop-by-hop or accept field.
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.status = StatusCode::OK;
        parts.version = Version::HTTP_2;
        let empty = http_body_util::Empty::new().map_err(|never| match never {});
        drop(body);
        return Ok(Response::from_parts(parts, empty.boxed()));
    }
    // The 101 keeps `Connection: upgrade` and `Upgrade`; nothing else
    // hop-by-hop.
    let upgrade = parts.headers.remove(header::UPGRADE);
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(upgrade) = upgrade {
        parts.headers.insert(header::UPGRADE, upgrade);
    }
    Ok(Response::from_parts(parts, body.boxed()))
}

async fn tcp(authority: &str, timeout: Duration) -> Result<tokio::net::TcpStream, Refusal> {
    crate::pool::connect(authority, timeout)
        .await
        .map_err(|e| match e {
            ConnectError::Timeout => Refusal::from(&UpstreamError::ConnectTimeout),
            ConnectError::Failed(e) => {
                tracing::warn!(error = %e, upstream = %authority, "connecting for an upgrade failed");
                Refusal::from(&UpstreamError::Failed(e.to_string()))
            }
        })
}

/// Sends the upgrade request on a new HTTP/1.1 connection over `io`.
async fn send<T>(
    authority: &str,
    io: T,
    req: Request<ClientBody>,
) -> Result<Response<Incoming>, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| UpstreamError::Failed(format!("upstream {authority}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade connection to the upstream ended with an error");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| UpstreamError::Failed(super::error_chain(&e)))
}

/// Moves bytes both ways until both sides close or nothing moves for `idle`.
async fn join<A, B>(client: A, upstream: B, idle: Duration, route: &str)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match crate::pipe::pipe(client, upstream, idle).await {
        Ok(end) => tracing::debug!(?end, %route, "upgraded connection ended"),
        Err(e) => tracing::debug!(error = %e, %route, "upgraded connection failed"),
    }
}
