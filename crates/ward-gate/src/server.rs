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

use crate::Shared;
use crate::identity::Identity;
use crate::policy::{Access, IdentityInput, PolicyInput, Verdict};
use crate::proxy::{ConnContext, handle};
use crate::runtime::TenantKind;

#[derive(Serialize)]
struct HandshakeEvent<'a> {
    event: &'static str,
    remote: String,
    sni: Option<&'a str>,
    tenant: Option<&'a str>,
    tls_version: Option<String>,
    cipher: Option<String>,
    group: Option<String>,
    alpn: Option<String>,
    subject: Option<&'a str>,
    spiffe_id: Option<&'a str>,
    sans: Option<Vec<&'a str>>,
    serial: Option<&'a str>,
    fingerprint: Option<&'a str>,
    result: &'static str,
    reason: Option<&'a str>,
    duration_ms: f64,
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
        tasks.spawn(async move {
            let gauge = shared.metrics.connections_active.with(&[]);
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

fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let runtime = shared.runtime.load_full();
    let timeouts = runtime.config.timeouts.clone();
    let refuse = |sni: Option<&str>, tenant: Option<&str>, reason: &'static str| {
        shared
            .metrics
            .handshakes
            .with(&["failure", reason, "", "", "", ""])
            .inc();
        shared.audit.record(&HandshakeEvent {
            event: "handshake",
            remote: remote.to_string(),
            sni,
            tenant,
            tls_version: None,
            cipher: None,
            group: None,
            alpn: None,
            subject: None,
            spiffe_id: None,
            sans: None,
            serial: None,
            fingerprint: None,
            result: "refused",
            reason: Some(reason),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
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
            return refuse(None, None, reason);
        }
        Err(_) => return refuse(None, None, "client_hello_timeout"),
    };
    let hello = start.client_hello();
    let sni = hello.server_name().map(str::to_owned);
    let offers_tls13 = hello
        .cipher_suites()
        .iter()
        .any(|s| format!("{s:?}").starts_with("TLS13_"));
    let Some(tenant) = runtime.tenant_for(sni.as_deref()) else {
        return refuse(sni.as_deref(), None, "unknown_sni");
    };
    if !offers_tls13 && !runtime.config.tls.allow_tls12 {
        // Let rustls send the protocol_version alert, but name the reason.
        let _ =
            tokio::time::timeout(timeouts.handshake.0, start.into_stream(tenant.tls.clone())).await;
        return refuse(sni.as_deref(), Some(&tenant.name), "protocol_version");
    }
    let tls =
        match tokio::time::timeout(timeouts.handshake.0, start.into_stream(tenant.tls.clone()))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                return refuse(sni.as_deref(), Some(&tenant.name), crate::tls::classify(&e));
            }
            Err(_) => return refuse(sni.as_deref(), Some(&tenant.name), "handshake_timeout"),
        };
    shared
        .metrics
        .handshake_seconds
        .with(&[])
        .observe(started.elapsed().as_secs_f64());
    let (_, conn) = tls.get_ref();
    let version = conn.protocol_version().map(version_name);
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()));
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()));
    let alpn = conn
        .alpn_protocol()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let identity = conn.peer_certificates().and_then(|chain| {
        let owned: Vec<_> = chain.iter().map(|c| c.clone().into_owned()).collect();
        Identity::from_chain(&owned)
    });
    let Some(identity) = identity else {
        // The verifier demands a certificate; this is a defensive check.
        return refuse(sni.as_deref(), Some(&tenant.name), "no_certificate");
    };
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    shared
        .metrics
        .handshakes
        .with(&[
            "success",
            "",
            &s(&version),
            &s(&cipher),
            &s(&group),
            &s(&alpn),
        ])
        .inc();
    let sans = identity.sans();
    shared.audit.record(&HandshakeEvent {
        event: "handshake",
        remote: remote.to_string(),
        sni: sni.as_deref(),
        tenant: Some(&tenant.name),
        tls_version: version.clone(),
        cipher: cipher.clone(),
        group: group.clone(),
        alpn: alpn.clone(),
        subject: Some(&identity.subject),
        spiffe_id: identity.spiffe_id.as_deref(),
        sans: Some(sans),
        serial: Some(&identity.serial),
        fingerprint: Some(&identity.fingerprint),
        result: "accepted",
        reason: None,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
    let negotiated = Arc::new(crate::proxy::Negotiated {
        version,
        cipher,
        group,
        alpn: alpn.clone(),
    });
    let ctx = ConnContext {
        remote,
        sni,
        tenant: tenant.clone(),
        identity: Arc::new(identity),
        runtime: runtime.clone(),
        tls: negotiated,
    };
    match &tenant.kind {
        TenantKind::Http(_) => {
            serve_http(tls, ctx, shared, alpn.as_deref() == Some("h2"), stop).await
        }
        TenantKind::Tcp { upstream, access } => {
            let upstream = upstream.clone();
            let allowed = tcp_allowed(access, &ctx);
            tcp_proxy(tls, ctx, shared, &upstream, allowed, stop).await;
        }
    }
}

async fn serve_http(
    tls: TlsStream<TcpStream>,
    ctx: ConnContext,
    shared: Arc<Shared>,
    h2: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.runtime.config.timeouts.header_read.0)
        .keep_alive(true);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let service = hyper::service::service_fn({
        let shared = shared.clone();
        let ctx = ctx.clone();
        move |req| handle(shared.clone(), ctx.clone(), req)
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, peer = %ctx.remote, "connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Allow rules and policy for a TCP tenant (the policy sees `request: null`).
fn tcp_allowed(access: &Access, ctx: &ConnContext) -> bool {
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
                spiffe_id = ctx.identity.spiffe_id.as_deref().unwrap_or("-"),
                error = %reason,
                "policy evaluation failed; connection refused"
            );
            false
        }
        Verdict::DeniedByRules | Verdict::DeniedByPolicy(_) => false,
    }
}

async fn tcp_proxy(
    mut tls: TlsStream<TcpStream>,
    ctx: ConnContext,
    shared: Arc<Shared>,
    upstream: &str,
    allowed: bool,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::io::AsyncWriteExt;
    let record = |result: &'static str, reason: Option<&str>| {
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
        record("refused", Some("forbidden"));
        let _ = tls.shutdown().await;
        return;
    }
    let connect = tokio::time::timeout(
        ctx.runtime.config.timeouts.upstream_connect.0,
        TcpStream::connect(upstream),
    )
    .await;
    let mut up = match connect {
        Ok(Ok(s)) => s,
        _ => {
            record("refused", Some("upstream_unreachable"));
            let _ = tls.shutdown().await;
            return;
        }
    };
    record("forwarded", None);
    let idle = ctx.runtime.config.timeouts.idle.0;
    tokio::select! {
        end = crate::pipe::pipe(&mut tls, &mut up, idle) => {
            if let Ok(crate::pipe::PipeEnd::Idle) = end {
                tracing::debug!(peer = %ctx.remote, ?idle, "TCP proxy idle: closed");
            }
        }
        () = stopped(&mut stop) => {}
    }
}
