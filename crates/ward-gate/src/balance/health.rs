//! Active health checks: one task per endpoint of a balanced route checks
//! it every `interval` (the first time at once), by connecting (TCP) or by
//! `GET path` expecting a 2xx answer (HTTP/1.1, or HTTP/2 for `h2`
//! routes; over TLS with the gate's upstream credentials for `https://`),
//! and feeds the result to [`Balancer::check_result`]. A task holds only a
//! weak reference: it ends once its runtime (after a reload) is gone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Balancer;
use crate::config::Upstream;

/// How the checks of one balancer reach its endpoints.
#[derive(Clone)]
pub(crate) struct Probe {
    /// TLS for `https://` endpoints (its ALPN offer as the route's).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Prior-knowledge HTTP/2 for `http://` endpoints (`protocol = "h2"`).
    pub h2: bool,
}

/// Starts the checks of `balancer`'s endpoints, if it has any configured.
pub(crate) fn start(balancer: &Arc<Balancer>, probe: &Probe) {
    let Some(config) = balancer.config.health.clone() else {
        return;
    };
    for endpoint in &balancer.endpoints {
        let weak: Weak<Balancer> = Arc::downgrade(balancer);
        let index = endpoint.index;
        let probe = probe.clone();
        let path = config.path.clone();
        let (interval, timeout) = (config.interval.0, config.timeout.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(balancer) = weak.upgrade() else {
                    break;
                };
                let endpoint = balancer.endpoints[index].clone();
                let checked = tokio::time::timeout(
                    timeout,
                    check(&endpoint.upstream, path.as_deref(), &probe, timeout),
                )
                .await;
                let (passed, why) = match checked {
                    Ok(Ok(())) => (true, String::new()),
                    Ok(Err(why)) => (false, why),
                    Err(_) => (false, format!("no answer within {timeout:?}")),
                };
                if !passed {
                    tracing::debug!(route = %balancer.route, endpoint = %endpoint.label, reason = %why, "health check failed");
                }
                balancer.check_result(&endpoint, passed, &why);
            }
        });
    }
}

/// One check: connect, and for an HTTP check `GET path` expecting 2xx.
async fn check(
    upstream: &Upstream,
    path: Option<&str>,
    probe: &Probe,
    limit: Duration,
) -> Result<(), String> {
    let (authority, host) = match upstream {
        Upstream::Http(a) | Upstream::Tcp(a) => (a.as_str(), None),
        Upstream::Https { authority, host } => (authority.as_str(), Some(host.as_str())),
    };
    // Resolved on every check: a DNS change is seen here first.
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    let Some(path) = path else {
        return Ok(());
    };
    match (host, &probe.tls) {
        (Some(host), Some(tls)) => {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| format!("{host:?} is not a valid server name"))?;
            let stream = TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS to {authority}: {}", crate::proxy::error_chain(&e)))?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            get(stream, h2, "https", authority, path, limit).await
        }
        (Some(_), None) => Err("no upstream TLS configuration".into()),
        (None, _) => get(tcp, probe.h2, "http", authority, path, limit).await,
    }
}

/// `GET path` on `io`; Ok for a 2xx answer. The connection is given
/// `limit` at most, even after the check has returned.
async fn get<T>(
    io: T,
    h2: bool,
    scheme: &str,
    authority: &str,
    path: &str,
    limit: Duration,
) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| format!("health check of {authority}: {e}");
    let status: StatusCode = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(failed)?;
        let req = Request::get(format!("{scheme}://{authority}{path}"))
            .header(USER_AGENT, HeaderValue::from_static("ward-gate-health"))
            .body(Empty::new())
            .map_err(|e| format!("health check request: {e}"))?;
        // The connection ends once the sender (dropped below) is gone.
        tokio::spawn(tokio::time::timeout(limit, conn));
        sender.send_request(req).await.map_err(failed)?.status()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(failed)?;
        let req = Request::get(path)
            .header(HOST, authority)
            .header(USER_AGENT, HeaderValue::from_static("ward-gate-health"))
            .header(CONNECTION, HeaderValue::from_static("close"))
            .body(Empty::new())
            .map_err(|e| format!("health check request: {e}"))?;
        // `connection: close`: it ends after the answer.
        tokio::spawn(tokio::time::timeout(limit, conn));
        sender.send_request(req).await.map_err(failed)?.status()
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{authority}{path} answered {status}"))
    }
}
