//! What every request of a connection shares: the client's identity, the
//! tenant and runtime it was accepted under, the negotiated TLS
//! parameters, and the identity header values built once per connection.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use tokio::sync::watch;

use crate::config::IdentityHeaders;
use crate::identity::Identity;
use crate::proxy::Upstreams;
use crate::runtime::{Runtime, Tenant};

static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static WARD_SPIFFE_ID: HeaderName = HeaderName::from_static("x-ward-spiffe-id");
static CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
static CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");

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
    /// Its upgraded connections (WebSocket and others), which outlive the
    /// HTTP exchange that made them.
    pub tunnels: Tunnels,
    /// Why strict mode would refuse the client's certificate
    /// (`no_certificate`, `unknown_ca`, …) when an audit-mode or per-route
    /// tenant let it in unverified; `None`: verified.
    pub unverified: Option<&'static str>,
    /// Set when a request was answered with its body unread: closing then
    /// lingers (see `server::linger`).
    pub linger: AtomicBool,
}

/// A connection's upgraded tunnels: each holds a subscription, and ends
/// when the connection ends them (revocation of the client certificate,
/// the drain, the connection's task going away).
#[derive(Debug)]
pub struct Tunnels {
    end: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            end: watch::channel(false).0,
        }
    }
}

impl Tunnels {
    /// A new tunnel's signal: resolves (see [`Tunnels::ended`]) once the
    /// connection ends its tunnels.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.end.subscribe()
    }

    /// Resolves once `signal` says the tunnel must end (or its connection
    /// is gone).
    pub(crate) async fn ended(signal: &mut watch::Receiver<bool>) {
        let _ = signal.wait_for(|end| *end).await;
    }

    /// Whether any tunnel is open.
    pub fn open(&self) -> bool {
        self.end.receiver_count() > 0
    }

    /// Resolves once no tunnel is open.
    pub async fn closed(&self) {
        self.end.closed().await;
    }

    /// Ends every tunnel, open or yet to be made.
    pub fn end(&self) {
        self.end.send_replace(true);
    }
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
            tunnels: Tunnels::default(),
            unverified: None,
            linger: AtomicBool::new(false),
        }
    }

    /// The context of a client let in unverified for `reason` (`None`:
    /// verified).
    pub fn unverified(mut self, reason: Option<&'static str>) -> Self {
        self.unverified = reason;
        self
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
            // An unverified client (audit mode) sends no identity upstream.
            xfcc: id
                .is_verified()
                .then(|| shared_value(id.xfcc(tenant.by.as_deref())))
                .flatten(),
            spiffe: id.spiffe_str().and_then(|s| shared_value(s.to_owned())),
            client_ip_value: shared_value(client_ip.clone()),
            client_ip,
            rfc9440: OnceLock::new(),
            trusted,
        }
    }
}

impl ConnHeaders {
    /// The client's IP address.
    pub(crate) fn client_ip(&self) -> &str {
        &self.client_ip
    }

    /// The client's IP address as a header value (`x-forwarded-for` when
    /// the client sent none).
    pub(crate) fn client_ip_value(&self) -> Option<&HeaderValue> {
        self.client_ip_value.as_ref()
    }

    /// Whether the client is a trusted proxy (`[listen] trusted_proxies`).
    pub(crate) fn trusted(&self) -> bool {
        self.trusted
    }

    /// Calls `each` with every identity field the upstream receives on a
    /// route with `mode`, in the order they are written: the one place
    /// that decides which identity fields go upstream. RFC 9440 values are
    /// built on first use.
    pub(crate) fn identity_fields<'s>(
        &'s self,
        id: &Identity,
        mode: IdentityHeaders,
        mut each: impl FnMut(&'static HeaderName, &'s HeaderValue),
    ) {
        if let Some(v) = &self.xfcc {
            each(&XFCC, v);
        }
        if let Some(v) = &self.spiffe {
            each(&WARD_SPIFFE_ID, v);
        }
        if mode == IdentityHeaders::Rfc9440 {
            let (cert, chain) = self.rfc9440.get_or_init(|| {
                (
                    id.rfc9440_cert().and_then(shared_value),
                    id.rfc9440_chain().and_then(shared_value),
                )
            });
            if let Some(v) = cert {
                each(&CLIENT_CERT, v);
            }
            if let Some(v) = chain {
                each(&CLIENT_CERT_CHAIN, v);
            }
        }
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
