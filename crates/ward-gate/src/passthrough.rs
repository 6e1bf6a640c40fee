//! SNI passthrough: `[[passthrough]]` routes forward the raw TLS stream,
//! chosen by the ClientHello's server name, to an upstream that terminates
//! TLS itself. They share the listener with terminating tenants.
//!
//! The ClientHello is read with `peek` (not consumed) under the
//! `client_hello` timeout and at most [`MAX_HELLO`] bytes; a passthrough
//! route gets every byte the client sent, the first included. This module
//! never terminates TLS and never sees a certificate: who may connect is
//! the upstream's decision.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::Shared;
use crate::edge::{Peeked, peek_until};

/// The most ClientHello bytes read before deciding (a ClientHello with a
/// post-quantum key share is about 1.8 KB; one record is 16 KB).
pub const MAX_HELLO: usize = 16 * 1024 + 5;

/// `[[passthrough]]`: one route.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PassthroughConfig {
    /// Name for metrics and audit; the `sni` pattern when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Server name: exact (`b.example.test`) or `*.suffix` (any name
    /// ending in `.suffix`).
    pub sni: String,
    /// `HOST:PORT` of the TLS-terminating upstream.
    pub upstream: String,
    /// Start each upstream connection with a PROXY protocol v2 header
    /// carrying the client's address.
    #[serde(default)]
    pub send_proxy_v2: bool,
}

impl PassthroughConfig {
    /// The route's name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sni)
    }
}

/// One route, ready to match.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name for metrics and audit.
    pub name: String,
    /// Upstream `HOST:PORT`.
    pub upstream: String,
    /// Send a PROXY v2 header first.
    pub send_proxy_v2: bool,
}

/// The passthrough routes of a runtime.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    exact: std::collections::HashMap<String, Arc<Route>>,
    /// `(".suffix", route)`, longest suffix first.
    suffixes: Vec<(String, Arc<Route>)>,
}

/// Checks the `[[passthrough]]` tables: patterns, upstreams, no name
/// claimed twice (or by a tenant).
pub fn validate(routes: &[PassthroughConfig], tenant_snis: &[&str]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for r in routes {
        let ctx = |m: &str| format!("passthrough {:?}: {m}", r.sni);
        let pattern = r.sni.to_ascii_lowercase();
        let name = pattern.strip_prefix("*.").unwrap_or(&pattern);
        if name.is_empty()
            || name.starts_with('.')
            || name.ends_with('.')
            || name.contains("..")
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(ctx("sni must be a DNS name or *.suffix"));
        }
        if !seen.insert(pattern.clone()) {
            return Err(ctx("server name used by two passthrough routes"));
        }
        if tenant_snis.iter().any(|t| t.eq_ignore_ascii_case(&pattern)) {
            return Err(ctx("server name also belongs to a tenant"));
        }
        ward_pki::uri::check_chars(&r.upstream).map_err(|e| ctx(&format!("upstream {e}")))?;
        let ok = r
            .upstream
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok());
        if !ok {
            return Err(ctx("upstream must be HOST:PORT"));
        }
        if r.name.as_deref().is_some_and(str::is_empty) {
            return Err(ctx("name must not be empty"));
        }
    }
    Ok(())
}

impl Routes {
    /// Builds the table (from validated configuration).
    pub fn new(config: &[PassthroughConfig]) -> Self {
        let mut routes = Routes::default();
        for c in config {
            let route = Arc::new(Route {
                name: c.name().to_owned(),
                upstream: c.upstream.clone(),
                send_proxy_v2: c.send_proxy_v2,
            });
            let pattern = c.sni.to_ascii_lowercase();
            match pattern.strip_prefix('*') {
                Some(suffix) => routes.suffixes.push((suffix.to_owned(), route)),
                None => {
                    routes.exact.insert(pattern, route);
                }
            }
        }
        routes
            .suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        routes
    }

    /// Whether there is any route (else no ClientHello is peeked).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// The route for `sni`: an exact passthrough name, else (unless a
    /// tenant names it exactly, `tenant_has`) the longest matching suffix.
    pub fn find(&self, sni: &str, tenant_has: impl Fn(&str) -> bool) -> Option<Arc<Route>> {
        let sni = sni.to_ascii_lowercase();
        if let Some(r) = self.exact.get(&sni) {
            return Some(r.clone());
        }
        if tenant_has(&sni) {
            return None;
        }
        self.suffixes
            .iter()
            .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
            .map(|(_, r)| r.clone())
    }
}

/// What the peeked ClientHello says.
pub(crate) enum Hello {
    /// A complete ClientHello with this server name (or none).
    Sni(Option<String>),
    /// Not a ClientHello rustls can read, or larger than [`MAX_HELLO`]:
    /// the terminating path sees it and names the error.
    Unreadable,
}

/// Peeks at the ClientHello without consuming it.
pub(crate) async fn peek_hello(tcp: &TcpStream, timeout: Duration) -> Result<Hello, Peeked> {
    let mut sni = None;
    let decided = peek_until(tcp, MAX_HELLO, timeout, |bytes| {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut rest = bytes;
        while !rest.is_empty() {
            match acceptor.read_tls(&mut rest) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        match acceptor.accept() {
            Ok(None) => None,
            Ok(Some(accepted)) => {
                sni = Some(accepted.client_hello().server_name().map(str::to_owned));
                Some(true)
            }
            Err(_) => Some(false),
        }
    })
    .await;
    match decided {
        Ok(true) => Ok(Hello::Sni(sni.flatten())),
        Ok(false) | Err(Peeked::TooLong) => Ok(Hello::Unreadable),
        Err(e) => Err(e),
    }
}

/// Forwards the raw connection to `route`'s upstream until either side
/// closes, the connection idles out or the gate stops; counts and audits.
pub(crate) async fn forward(
    mut tcp: TcpStream,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    sni: &str,
    route: &Route,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let runtime = shared.runtime.load_full();
    let metrics = &shared.metrics;
    let record = |result: &'static str, reason: Option<&str>, sent: u64, received: u64| {
        metrics.passthrough.with(&[&route.name, result]).inc();
        shared.audit.record(&serde_json::json!({
            "event": "passthrough",
            "remote": remote.to_string(),
            "sni": sni,
            "route": route.name,
            "upstream": route.upstream,
            "result": result,
            "reason": reason,
            "bytes_in": sent,
            "bytes_out": received,
            "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        }));
    };
    let connect = tokio::time::timeout(
        runtime.config.timeouts.upstream_connect.0,
        TcpStream::connect(&route.upstream),
    )
    .await;
    let mut up = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, upstream = %route.upstream, "passthrough upstream unreachable");
            record("refused", Some("upstream_unreachable"), 0, 0);
            return;
        }
        Err(_) => {
            record("refused", Some("upstream_timeout"), 0, 0);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    if route.send_proxy_v2 {
        let dest = local.unwrap_or(remote);
        let header = crate::proxy_protocol::encode_v2(remote, dest);
        if up.write_all(&header).await.is_err() {
            record("refused", Some("upstream_unreachable"), 0, 0);
            return;
        }
    }
    record("forwarded", None, 0, 0);
    let idle = runtime.config.timeouts.idle.0;
    let end = tokio::select! {
        end = crate::pipe::pipe_tcp(&mut tcp, &mut up, idle) => Some(end),
        () = crate::server::stopped(&mut stop) => None,
    };
    if let Some(Ok(crate::pipe::PipeEnd::Closed { a_to_b, b_to_a })) = end {
        metrics
            .passthrough_bytes
            .with(&[&route.name, "in"])
            .inc_by(a_to_b);
        metrics
            .passthrough_bytes
            .with(&[&route.name, "out"])
            .inc_by(b_to_a);
        if shared.audit.is_enabled() {
            shared.audit.record(&serde_json::json!({
                "event": "passthrough",
                "remote": remote.to_string(),
                "sni": sni,
                "route": route.name,
                "upstream": route.upstream,
                "result": "closed",
                "bytes_in": a_to_b,
                "bytes_out": b_to_a,
                "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn route(sni: &str) -> PassthroughConfig {
        PassthroughConfig {
            name: None,
            sni: sni.into(),
            upstream: "127.0.0.1:9".into(),
            send_proxy_v2: false,
        }
    }

    #[test]
    fn exact_beats_tenant_beats_suffix() {
        let routes = Routes::new(&[
            route("b.example.test"),
            route("*.example.test"),
            route("*.deep.example.test"),
        ]);
        let none = |_: &str| false;
        assert_eq!(
            routes.find("B.Example.Test", none).unwrap().name,
            "b.example.test"
        );
        assert_eq!(
            routes.find("x.example.test", none).unwrap().name,
            "*.example.test"
        );
        assert_eq!(
            routes.find("a.deep.example.test", none).unwrap().name,
            "*.deep.example.test"
        );
        assert!(routes.find("example.test", none).is_none());
        assert!(routes.find("xexample.test", none).is_none());
        // A tenant's exact name wins over a passthrough suffix.
        assert!(
            routes
                .find("api.example.test", |s| s == "api.example.test")
                .is_none()
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = validate(&[route("b.example.test"), route("*.x.test")], &["a.test"]);
        assert!(ok.is_ok(), "{ok:?}");
        let cases = [
            (vec![route("")], "DNS name"),
            (vec![route("*.")], "DNS name"),
            (vec![route("a b")], "DNS name"),
            (vec![route("c.test"), route("C.test")], "two passthrough"),
            (vec![route("a.test")], "belongs to a tenant"),
            (
                vec![PassthroughConfig {
                    upstream: "nowhere".into(),
                    ..route("c.test")
                }],
                "HOST:PORT",
            ),
            (
                vec![PassthroughConfig {
                    upstream: "tcp://h:1".into(),
                    ..route("c.test")
                }],
                "HOST:PORT",
            ),
        ];
        for (routes, want) in cases {
            let err = validate(&routes, &["a.test"]).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }
}
