//! The accept loop: ClientHello (with a timeout) → tenant by SNI → TLS
//! handshake (classified on failure) → identity → HTTP or TCP → drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use ward_tls::server::lifetime::{Streams, Tracked};

use crate::Shared;
use crate::identity::Identity;
use crate::pipeline::ConnContext;
use crate::policy::{Access, IdentityInput, PolicyInput, Verdict};
use crate::revocation::Tracking;
use crate::runtime::TenantKind;

pub(crate) mod h1;
mod linger;
mod prefixed;

#[derive(Serialize)]
struct HandshakeEvent<'a> {
    event: &'static str,
    remote: String,
    sni: Option<&'a str>,
    tenant: Option<&'a str>,
    tls_version: Option<&'static str>,
    cipher: Option<&'static str>,
    group: Option<&'static str>,
    alpn: Option<&'static str>,
    subject: Option<&'a str>,
    spiffe_id: Option<&'a str>,
    sans: Option<Vec<&'a str>>,
    serial: Option<&'a str>,
    fingerprint: Option<&'a str>,
    result: &'static str,
    reason: Option<&'a str>,
    duration_ms: f64,
    /// Audit mode: what strict mode would have refused this client for.
    #[serde(skip_serializing_if = "Option::is_none")]
    would_refuse: Option<&'static str>,
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Counts an open connection for as long as it lives.
struct ActiveGuard(ward_telemetry::Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accepts until `stop` turns true, then drains for the configured time.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let max = shared.runtime.load().config.listen.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = stopped(&mut stop) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => break,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop.clone();
        // Measured (release): this task's future is about 1 KiB; the TLS
        // stream (1.2 KiB) and the HTTP server (2.6 KiB) are boxed apart.
        tasks.spawn(async move {
            let gauge = shared.metrics.connections_active_all.clone();
            gauge.inc();
            let _guard = ActiveGuard(gauge);
            connection(tcp, remote, shared, stop).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let drain = shared.runtime.load().config.timeouts.drain.0;
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, all_done).await.is_err() {
        tracing::warn!("drain timeout: closing remaining connections");
        tasks.abort_all();
    }
}

/// Static names for the negotiated parameters, for metric labels and
/// audit lines (no formatting per handshake).
fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        other => other.as_str().unwrap_or("other"),
    }
}

fn alpn_name(alpn: &[u8]) -> &'static str {
    match alpn {
        b"h2" => "h2",
        b"http/1.1" => "http/1.1",
        // The server offers only the two above.
        _ => "other",
    }
}

/// Whether a ClientHello offers any TLS 1.3 cipher suite (0x1301–0x1305).
pub(crate) fn offers_tls13(suites: &[rustls::CipherSuite]) -> bool {
    suites
        .iter()
        .any(|s| matches!(u16::from(*s), 0x1301..=0x1305))
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    // PROXY header and SNI passthrough (nothing to do without either).
    let Some((tcp, remote)) = crate::edge::front(tcp, remote, &shared, &stop).await else {
        return;
    };
    // Boxed: the handshake's state is freed once it is done, and the task
    // holds only what the connection still needs.
    let Some((tls, conn)) = Box::pin(handshake(tcp, remote, shared, stop)).await else {
        return;
    };
    let tenant = conn.ctx.tenant.clone();
    match &tenant.kind {
        TenantKind::Http(_) => {
            let h2 = conn.ctx.tls.alpn == Some("h2");
            serve_http(tls, conn, h2).await;
        }
        TenantKind::Tcp {
            upstream,
            access,
            send_proxy_v2,
            balancer,
        } => {
            let allowed = tcp_allowed(access, &conn.ctx, &conn.shared);
            Box::pin(tcp_proxy(
                tls,
                conn,
                upstream,
                balancer.as_deref(),
                allowed,
                *send_proxy_v2,
            ))
            .await;
        }
    }
}

/// ClientHello → tenant → handshake → identity → revocation registration,
/// with metrics and audit; `None` when the connection was refused.
async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Option<(Tls, Conn)> {
    let started = Instant::now();
    let runtime = shared.runtime.load_full();
    let timeouts = &runtime.config.timeouts;
    // `presented`: the client's certificate when one was shown and refused,
    // so the audit line says whose it was.
    let refuse = |sni: Option<&str>,
                  tenant: Option<&str>,
                  reason: &'static str,
                  presented: Option<&Identity>| {
        shared
            .metrics
            .handshakes
            .with(&[
                "failure",
                reason,
                tenant.unwrap_or_default(),
                "",
                "",
                "",
                "",
            ])
            .inc();
        shared
            .metrics
            .handshake_seconds
            .with(&[tenant.unwrap_or_default(), "failure"])
            .observe(started.elapsed().as_secs_f64());
        if !shared.audit.is_enabled() {
            return None;
        }
        shared.audit.record(&HandshakeEvent {
            event: "handshake",
            remote: remote.to_string(),
            sni,
            tenant,
            tls_version: None,
            cipher: None,
            group: None,
            alpn: None,
            subject: presented.map(|i| i.subject.as_str()),
            spiffe_id: presented.and_then(Identity::spiffe_str),
            sans: presented.map(Identity::sans),
            serial: presented.map(|i| i.serial.as_str()),
            fingerprint: presented.map(|i| i.fingerprint.as_str()),
            result: "refused",
            reason: Some(reason),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            would_refuse: None,
        });
        None
    };

    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = match tokio::time::timeout(timeouts.client_hello.0, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            let reason = crate::tls::classify(&e);
            let reason = if reason == "other" {
                "bad_client_hello"
            } else {
                reason
            };
            return refuse(None, None, reason, None);
        }
        Err(_) => return refuse(None, None, "client_hello_timeout", None),
    };
    let hello = start.client_hello();
    let sni = hello.server_name().map(str::to_owned);
    let tls13 = offers_tls13(hello.cipher_suites());
    if crate::acme::is_validation(&hello) {
        let timeout = timeouts.handshake.0;
        crate::acme::answer(start, sni.as_deref(), &shared, remote, timeout).await;
        return None;
    }
    let Some(tenant) = runtime.tenant_for(sni.as_deref()) else {
        return refuse(sni.as_deref(), None, "unknown_sni", None);
    };
    if !tls13 && !runtime.config.tls.allow_tls12 {
        // Let rustls send the protocol_version alert, but name the reason.
        let _ =
            tokio::time::timeout(timeouts.handshake.0, start.into_stream(tenant.tls.clone())).await;
        return refuse(sni.as_deref(), Some(&tenant.name), "protocol_version", None);
    }
    let presented = crate::tls::Presented::default();
    let accept = presented.scope(start.into_stream(tenant.tls.clone()).into_fallible());
    let tls = match tokio::time::timeout(timeouts.handshake.0, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err((e, tcp))) => {
            let refused = presented
                .take()
                .and_then(|leaf| Identity::from_chain(&[leaf]));
            let reason = crate::tls::classify(&e);
            refuse(sni.as_deref(), Some(&tenant.name), reason, refused.as_ref());
            linger_close(tcp).await;
            return None;
        }
        Err(_) => {
            return refuse(
                sni.as_deref(),
                Some(&tenant.name),
                "handshake_timeout",
                None,
            );
        }
    };
    shared
        .metrics
        .handshake_seconds
        .with(&[&tenant.name, "success"])
        .observe(started.elapsed().as_secs_f64());
    let (_, conn) = tls.get_ref();
    let negotiated = crate::pipeline::Negotiated {
        version: conn.protocol_version().map(version_name),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| c.suite().as_str().unwrap_or("other")),
        group: conn
            .negotiated_key_exchange_group()
            .map(|g| g.name().as_str().unwrap_or("other")),
        alpn: conn.alpn_protocol().map(alpn_name),
    };
    // An audit-mode (or per-route) tenant's verifier lets refused
    // certificates through and says so: such a chain is never an identity.
    let verified = match presented.would_refuse() {
        None => conn.peer_certificates().and_then(Identity::from_chain),
        Some(_) => None,
    };
    let mut would_refuse = None;
    let identity = match verified {
        Some(identity) => identity,
        None if tenant.lenient_handshake() => {
            let reason = presented.would_refuse().unwrap_or("no_certificate");
            would_refuse = Some(reason);
            Identity::anonymous()
        }
        // The verifier demands a certificate; this is a defensive check.
        None => return refuse(sni.as_deref(), Some(&tenant.name), "no_certificate", None),
    };
    // Resumed TLS 1.3 sessions skip the verifier (ARCHITECTURE.md trap 6):
    // every connection's chain is checked against the CRLs in force here,
    // and registered so that a later CRL update can close it.
    let tracked = if identity.is_verified() {
        shared.revocation.track(&identity.chain)
    } else {
        Ok(Tracking::untracked())
    };
    let tracking = match tracked {
        Ok(t) => t,
        Err(reason) => {
            refuse(sni.as_deref(), Some(&tenant.name), reason, Some(&identity));
            let mut tls = tls;
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncWriteExt::shutdown(&mut tls),
            )
            .await;
            return None;
        }
    };
    let n = &negotiated;
    shared
        .metrics
        .handshakes
        .with(&[
            "success",
            "",
            &tenant.name,
            n.version.unwrap_or_default(),
            n.cipher.unwrap_or_default(),
            n.group.unwrap_or_default(),
            n.alpn.unwrap_or_default(),
        ])
        .inc();
    if shared.audit.is_enabled() {
        shared.audit.record(&HandshakeEvent {
            event: "handshake",
            remote: remote.to_string(),
            sni: sni.as_deref(),
            tenant: Some(&tenant.name),
            tls_version: n.version,
            cipher: n.cipher,
            group: n.group,
            alpn: n.alpn,
            subject: verified_field(&identity, &identity.subject),
            spiffe_id: identity.spiffe_str(),
            sans: identity.is_verified().then(|| identity.sans()),
            serial: verified_field(&identity, &identity.serial),
            fingerprint: verified_field(&identity, &identity.fingerprint),
            result: "accepted",
            reason: None,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            would_refuse,
        });
    }
    // A per-route tenant's requests are refused or counted by their route.
    if let Some(reason) = would_refuse
        && !tenant.per_route
    {
        crate::audit_mode::would_refuse(&shared, &tenant.name, remote, reason, None);
    }
    // HTTP/1.1 clients send one request at a time: they get their own
    // upstream connection; HTTP/2 clients multiplex over the pooled client.
    let own_upstream = matches!(tenant.kind, TenantKind::Http(_)) && n.alpn != Some("h2");
    let ctx = ConnContext::new(
        remote,
        sni,
        tenant,
        Arc::new(identity),
        runtime.clone(),
        negotiated,
        own_upstream,
    )
    .unverified(would_refuse);
    Some((
        Box::new(tls),
        Conn {
            ctx: Arc::new(ctx),
            shared,
            stop,
            tracking,
        },
    ))
}

/// `field` of a verified identity; nothing for an unverified one.
fn verified_field<'a>(identity: &Identity, field: &'a str) -> Option<&'a str> {
    identity.is_verified().then_some(field)
}

/// An established TLS stream, boxed: it lives in one place while the
/// connection's futures change around it.
type Tls = Box<TlsStream<TcpStream>>;

/// An accepted connection and what ends it.
struct Conn {
    ctx: Arc<ConnContext>,
    shared: Arc<Shared>,
    /// Turns true on shutdown.
    stop: watch::Receiver<bool>,
    /// Fires when a CRL update refuses the client's certificate.
    tracking: Tracking,
}

impl Conn {
    /// Accounts for a connection closed because of revocation.
    fn closed_by_revocation(&self, reason: &'static str, upstream: Option<&str>) {
        let id = &self.ctx.identity;
        self.shared.metrics.revocation_closed.with(&[reason]).inc();
        tracing::info!(
            peer = %self.ctx.remote,
            serial = %id.serial,
            spiffe_id = id.spiffe_str().unwrap_or("-"),
            reason,
            "closing a connection: a CRL update refused its client certificate"
        );
        self.shared.audit.record(&serde_json::json!({
            "event": "connection",
            "remote": self.ctx.remote.to_string(),
            "tenant": self.ctx.tenant.name,
            "spiffe_id": id.spiffe_id,
            "serial": id.serial,
            "fingerprint": id.fingerprint,
            "upstream": upstream,
            "result": "closed",
            "reason": reason,
        }));
    }
}

/// Serves HTTP: HTTP/1.1 on the fast path ([`h1`]) until it hands the
/// connection over, HTTP/2 with hyper once the first byte arrives. Until a
/// request starts, the connection holds no HTTP buffers.
async fn serve_http(tls: Tls, mut conn: Conn, h2: bool) {
    if !h2 {
        if let h1::End::Handoff(tls, read) = h1::serve(tls, &mut conn).await {
            // A client without ALPN may still speak HTTP/2 (prior knowledge).
            let h2 = read.starts_with(h1::H2_PREFACE);
            let io = prefixed::Prefixed::new(tls, read);
            Box::pin(serve_hyper(io, conn, h2)).await;
        }
        return;
    }
    let mut stop = conn.stop.clone();
    // HTTP/2: a connection that sends nothing is idle from the start.
    let wait = conn
        .ctx
        .runtime
        .config
        .timeouts
        .idle_limit()
        .unwrap_or(Duration::MAX);
    let first = async {
        match tokio::time::timeout(wait, prefixed::first_byte(tls)).await {
            Ok(Ok(Some(io))) => Some(io),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, peer = %conn.ctx.remote, "connection ended with an error");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %conn.ctx.remote, "HTTP/2 connection idle from the start: closed");
                None
            }
        }
    };
    let io = tokio::select! {
        io = first => io,
        () = stopped(&mut stop) => None,
        reason = conn.tracking.revoked() => {
            conn.closed_by_revocation(reason, None);
            None
        }
    };
    if let Some(io) = io {
        // Boxed: allocated only once a request starts (with hyper's buffers).
        Box::pin(serve_hyper(io, conn, h2)).await;
    }
}

async fn serve_hyper(io: prefixed::Prefixed<Tls>, mut conn_state: Conn, h2: bool) {
    let ctx = conn_state.ctx.clone();
    let shared = conn_state.shared.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.runtime.config.timeouts.header_read.0)
        .writev(false)
        .keep_alive(true);
    // RFC 8441: clients may open WebSockets with extended CONNECT.
    builder.http2().enable_connect_protocol();
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    // Requests in flight, for the idle and age limits (hyper has none
    // for HTTP/2).
    let streams = Streams::new();
    let service = hyper::service::service_fn({
        let ctx = ctx.clone();
        let streams = streams.clone();
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            let guard = streams.open();
            // For upgrades: a tunnel holds its own place in flight.
            req.extensions_mut().insert(streams.clone());
            // Boxed where it is made: hyper moves the service's future
            // into the stream's task (and tokio boxes a large task
            // again), so an unboxed request future is copied whole
            // several times per request.
            let response = Box::pin(crate::proxy::handle(shared.clone(), ctx.clone(), req));
            async move {
                let response = response.await?;
                Ok::<_, hyper::Error>(response.map(|body| Tracked::new(body, guard)))
            }
        }
    });
    // A close after an answer that left the request's body unread lingers.
    let io = linger::Lingering::new(io, ctx.clone());
    // Upgrades (WebSocket) pass through: the proxy answers 101 and joins
    // the two upgraded streams.
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stop = conn_state.stop.clone();
    let timeouts = &ctx.runtime.config.timeouts;
    let expired = streams.expired(timeouts.idle_limit(), timeouts.max_age());
    // The connection's own upstream connection is driven here, in the
    // same task as the requests that use it.
    let upstream = async {
        match &ctx.upstreams {
            Some(u) => u.drive().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(upstream);
    // However this task ends (even aborted at the end of the drain), the
    // connection's upgraded tunnels end with it.
    let _tunnels = EndTunnels(&ctx);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, peer = %ctx.remote, "connection ended with an error");
            }
            // An upgrade ends the HTTP exchange; its tunnel lives on
            // under this connection's revocation and drain.
            if ctx.tunnels.open() {
                tunnels(&ctx, &mut conn_state).await;
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                () = upstream.as_mut() => {}
                reason = conn_state.tracking.revoked() => {
                    conn_state.closed_by_revocation(reason, None);
                }
            }
        }
        why = expired => {
            tracing::debug!(peer = %ctx.remote, reason = why.as_str(), in_flight = streams.in_flight(), "closing the connection gracefully");
            conn.as_mut().graceful_shutdown();
            let finish = async {
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = upstream.as_mut() => {}
                    reason = conn_state.tracking.revoked() => {
                        conn_state.closed_by_revocation(reason, None);
                    }
                }
            };
            if tokio::time::timeout(timeouts.drain.0, finish).await.is_err() {
                tracing::debug!(peer = %ctx.remote, "in-flight requests did not finish in time; closing");
            }
        }
        () = upstream.as_mut() => {}
        reason = conn_state.tracking.revoked() => {
            // A revoked client gets no further request through: the
            // connection is dropped, in-flight requests included.
            conn_state.closed_by_revocation(reason, None);
        }
    }
}

/// Ends a connection's tunnels when dropped.
struct EndTunnels<'a>(&'a ConnContext);

impl Drop for EndTunnels<'_> {
    fn drop(&mut self) {
        self.0.tunnels.end();
    }
}

/// Waits for the upgraded tunnels of a connection whose HTTP exchange is
/// over: until they close, or the client's certificate is revoked (closed
/// at once), or the gate stops (closed after the drain time).
async fn tunnels(ctx: &ConnContext, conn: &mut Conn) {
    let mut stop = conn.stop.clone();
    tokio::select! {
        () = ctx.tunnels.closed() => {}
        reason = conn.tracking.revoked() => {
            conn.closed_by_revocation(reason, None);
        }
        () = stopped(&mut stop) => {
            let drain = ctx.runtime.config.timeouts.drain.0;
            tokio::select! {
                () = ctx.tunnels.closed() => {}
                () = tokio::time::sleep(drain) => {
                    tracing::debug!(peer = %ctx.remote, "drain over: closing upgraded connections");
                }
                reason = conn.tracking.revoked() => {
                    conn.closed_by_revocation(reason, None);
                }
            }
        }
    }
    ctx.tunnels.end();
}

/// Closes a connection whose handshake failed without resetting it: rustls
/// has written its alert; the client may already have sent its first
/// request behind its Finished, and closing a socket with unread data
/// sends a TCP reset that can destroy the alert before the client reads
/// it. So: FIN first, then drain briefly.
async fn linger_close(mut tcp: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tcp.shutdown().await;
    drain_briefly(&mut tcp, 64 * 1024, Duration::from_millis(250)).await;
}

/// Most of a refused request's unread body the gate reads and drops so
/// that the client reads the answer instead of a reset (lingering close).
pub(crate) const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Longest the gate reads a refused request's unread body for.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// Reads and drops what the client still sends, up to `bytes` or for
/// `time`, whichever ends first (or until it closes): the lingering part
/// of a lingering close. The caller has sent its FIN already.
pub(crate) async fn drain_briefly(tcp: &mut TcpStream, bytes: usize, time: Duration) {
    use tokio::io::AsyncReadExt;
    // On the heap: allocated only by a connection that lingers.
    let mut buf = vec![0u8; 16 * 1024];
    let drain = async {
        let mut left = bytes;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(time, drain).await;
}

/// Allow rules and policy for a TCP tenant (the policy sees `request: null`).
fn tcp_allowed(access: &Access, ctx: &ConnContext, shared: &Shared) -> bool {
    let allowed = tcp_verdict(access, ctx);
    if !allowed && ctx.tenant.audit {
        crate::audit_mode::would_refuse(
            shared,
            &ctx.tenant.name,
            ctx.remote,
            "policy_denied",
            None,
        );
        return true;
    }
    allowed
}

fn tcp_verdict(access: &Access, ctx: &ConnContext) -> bool {
    let input = || PolicyInput {
        identity: IdentityInput::of(&ctx.identity),
        request: None,
        route: None,
        tenant: &ctx.tenant.name,
    };
    match access.decide(&ctx.identity, input) {
        Verdict::Allowed => true,
        Verdict::PolicyError(reason) => {
            tracing::warn!(
                tenant = %ctx.tenant.name,
                policy = access.policy().map_or("-", |p| p.name()),
                spiffe_id = ctx.identity.spiffe_str().unwrap_or("-"),
                error = %reason,
                "policy evaluation failed; connection refused"
            );
            false
        }
        Verdict::DeniedByRules | Verdict::DeniedByPolicy(_) => false,
    }
}

async fn tcp_proxy(
    mut tls: Tls,
    mut conn: Conn,
    upstream: &str,
    balancer: Option<&crate::balance::Balancer>,
    allowed: bool,
    send_proxy_v2: bool,
) {
    use tokio::io::AsyncWriteExt;
    let ctx = conn.ctx.clone();
    let shared = conn.shared.clone();
    let mut stop = conn.stop.clone();
    let record = |result: &'static str, reason: Option<&str>, upstream: &str| {
        shared.audit.record(&serde_json::json!({
            "event": "connection",
            "remote": ctx.remote.to_string(),
            "tenant": ctx.tenant.name,
            "spiffe_id": ctx.identity.spiffe_id,
            "serial": ctx.identity.serial,
            "fingerprint": ctx.identity.fingerprint,
            "upstream": upstream,
            "result": result,
            "reason": reason,
        }));
    };
    if !allowed {
        shared.metrics.denied.with(&[&ctx.tenant.name, "tcp"]).inc();
        record("refused", Some("forbidden"), upstream);
        let _ = tls.shutdown().await;
        return;
    }
    let connect_timeout = ctx.runtime.config.timeouts.upstream_connect.0;
    // A balanced tenant chooses its endpoint here (trying others when the
    // connection fails) and holds its slot while the connection lasts.
    let (mut up, _slot, upstream) = match balancer {
        Some(b) => match b.connect_tcp(&ctx.identity, connect_timeout).await {
            Ok((stream, slot, endpoint)) => (stream, Some(slot), endpoint),
            Err(reason) => {
                record("refused", Some(reason), upstream);
                let _ = tls.shutdown().await;
                return;
            }
        },
        None => match tokio::time::timeout(connect_timeout, TcpStream::connect(upstream)).await {
            Ok(Ok(s)) => (s, None, upstream.to_owned()),
            _ => {
                record("refused", Some("upstream_unreachable"), upstream);
                let _ = tls.shutdown().await;
                return;
            }
        },
    };
    let upstream = upstream.as_str();
    if send_proxy_v2 {
        let local = tls.get_ref().0.local_addr().unwrap_or(ctx.remote);
        let header = crate::proxy_protocol::encode_v2(ctx.remote, local);
        if up.write_all(&header).await.is_err() {
            record("refused", Some("upstream_unreachable"), upstream);
            let _ = tls.shutdown().await;
            return;
        }
    }
    record("forwarded", None, upstream);
    let idle = ctx.runtime.config.timeouts.idle.0;
    tokio::select! {
        end = crate::pipe::pipe(&mut tls, &mut up, idle) => {
            if let Ok(crate::pipe::PipeEnd::Idle) = end {
                tracing::debug!(peer = %ctx.remote, ?idle, "TCP proxy idle: closed");
            }
        }
        () = stopped(&mut stop) => {}
        reason = conn.tracking.revoked() => conn.closed_by_revocation(reason, Some(upstream)),
    }
}
