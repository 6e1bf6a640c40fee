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
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use ward_telemetry::{Counter, CounterVec};

use crate::Shared;
use crate::edge::{Peeked, peek_until};
use crate::sni::Sni;

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
    /// This route's metric children, looked up once (not per connection).
    counters: RouteCounters,
}

/// The metric children of one route, each found on its first use.
#[derive(Debug, Clone, Default)]
struct RouteCounters {
    forwarded: OnceLock<Counter>,
    refused: OnceLock<Counter>,
    bytes_in: OnceLock<Counter>,
    bytes_out: OnceLock<Counter>,
}

impl Route {
    /// The child of `family` labelled with this route and `label`, cached
    /// in `cell` (a label lookup hashes and takes a lock).
    fn counter<'a>(
        &'a self,
        cell: &'a OnceLock<Counter>,
        family: &CounterVec,
        label: &str,
    ) -> &'a Counter {
        cell.get_or_init(|| family.with(&[&self.name, label]))
    }
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
                counters: RouteCounters::default(),
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

/// Peeks at the ClientHello without consuming it. The passthrough path's
/// own reader ([`crate::sni`]) answers for an ordinary ClientHello; rustls
/// decides the rest.
pub(crate) async fn peek_hello(tcp: &TcpStream, timeout: Duration) -> Result<Hello, Peeked> {
    let decided = peek_until(tcp, MAX_HELLO, timeout, |bytes| {
        match crate::sni::read(bytes) {
            Sni::Incomplete => None,
            Sni::Found(name) => Some(Hello::Sni(name)),
            Sni::Unsure => rustls_hello(bytes),
        }
    })
    .await;
    match decided {
        Ok(hello) => Ok(hello),
        Err(Peeked::TooLong) => Ok(Hello::Unreadable),
        Err(e) => Err(e),
    }
}

/// rustls' reading of the first bytes: `None` while it needs more.
fn rustls_hello(mut bytes: &[u8]) -> Option<Hello> {
    let mut acceptor = rustls::server::Acceptor::default();
    while !bytes.is_empty() {
        match acceptor.read_tls(&mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(None) => None,
        Ok(Some(accepted)) => Some(Hello::Sni(
            accepted.client_hello().server_name().map(str::to_owned),
        )),
        Err(_) => Some(Hello::Unreadable),
    }
}

/// One `passthrough` audit event.
#[derive(Serialize)]
struct AuditEvent<'a> {
    event: &'static str,
    remote: SocketAddr,
    sni: &'a str,
    route: &'a str,
    upstream: &'a str,
    result: &'static str,
    /// Absent from `closed` events; `null` or a reason in the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Option<&'static str>>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
}

/// Forwards the raw connection to `route`'s upstream until either side
/// closes, the connection idles out or the gate stops; counts and audits.
pub(crate) async fn forward(
    mut tcp: TcpStream,
    remote: SocketAddr,
    sni: &str,
    route: &Route,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let runtime = shared.runtime.load_full();
    let metrics = &shared.metrics;
    let audit = |result: &'static str, reason: Option<&'static str>, sent: u64, received: u64| {
        // Nothing is built when the audit log is off.
        if shared.audit.is_enabled() {
            shared.audit.record(&AuditEvent {
                event: "passthrough",
                remote,
                sni,
                route: &route.name,
                upstream: &route.upstream,
                result,
                reason: (result != "closed").then_some(reason),
                bytes_in: sent,
                bytes_out: received,
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            });
        }
    };
    let refused = |reason: &'static str| {
        route
            .counter(&route.counters.refused, &metrics.passthrough, "refused")
            .inc();
        audit("refused", Some(reason), 0, 0);
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
            refused("upstream_unreachable");
            return;
        }
        Err(_) => {
            refused("upstream_timeout");
            return;
        }
    };
    let _ = up.set_nodelay(true);
    if route.send_proxy_v2 {
        let dest = tcp.local_addr().unwrap_or(remote);
        let header = crate::proxy_protocol::encode_v2(remote, dest);
        if up.write_all(&header).await.is_err() {
            refused("upstream_unreachable");
            return;
        }
    }
    route
        .counter(&route.counters.forwarded, &metrics.passthrough, "forwarded")
        .inc();
    audit("forwarded", None, 0, 0);
    let idle = runtime.config.timeouts.idle.0;
    drop(runtime);
    let end = tokio::select! {
        end = crate::pipe::pipe_tcp(&mut tcp, &mut up, idle) => Some(end),
        () = crate::server::stopped(&mut stop) => None,
    };
    if let Some(Ok(crate::pipe::PipeEnd::Closed { a_to_b, b_to_a })) = end {
        route
            .counter(&route.counters.bytes_in, &metrics.passthrough_bytes, "in")
            .inc_by(a_to_b);
        route
            .counter(&route.counters.bytes_out, &metrics.passthrough_bytes, "out")
            .inc_by(b_to_a);
        audit("closed", None, a_to_b, b_to_a);
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
