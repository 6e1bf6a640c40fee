//! Tenants whose server certificate comes from an ACME CA
//! (`[tenants.acme]`): their credentials in the state directory, the
//! managers that renew them, the tls-alpn-01 answer on the gate's own
//! listener, the http-01 listeners, metrics (`ward_gate_acme_*`) and audit
//! lines. The protocol lives in `ward-acme`; this module is glue.
//!
//! A tls-alpn-01 validation is recognised by its ClientHello (ALPN offers
//! `acme-tls/1` only, RFC 8737 §3) before the tenant's configuration is
//! chosen, and answered with a configuration that asks for no client
//! certificate: tenants that require client certificates renew too.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::StartHandshake;
use ward_acme::state::{CERT_FILE, KEY_FILE, StateDir};
use ward_acme::{AcmeSettings, ChallengeKind, Issued, Manager, Observer};
use ward_telemetry::{CounterVec, GaugeVec};

use crate::{Error, Shared};

/// The server certificate of an ACME tenant: the one in its state
/// directory, or a self-signed stand-in until the first order completes.
pub(crate) fn tenant_credentials(
    acme: &AcmeSettings,
    allow_insecure: bool,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    // Only look: `--check-config` must not create the directory.
    if acme.state_dir.is_dir() {
        let state = StateDir::open(&acme.state_dir).map_err(|e| Error::Config(e.to_string()))?;
        if state.current(&acme.domains).is_some() {
            return Ok((
                crate::runtime::read_certs(&state.file(CERT_FILE))?,
                crate::runtime::read_key(&state.file(KEY_FILE), allow_insecure)?,
            ));
        }
    }
    let (cert, key) =
        ward_acme::state::placeholder(&acme.domains).map_err(|e| Error::Config(e.to_string()))?;
    use rustls_pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("placeholder certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| Error::Config(format!("placeholder key: {e}")))?;
    Ok((chain, key))
}

/// Whether a ClientHello is a tls-alpn-01 validation: its only ALPN
/// protocol is `acme-tls/1`.
pub(crate) fn is_validation(hello: &rustls::server::ClientHello<'_>) -> bool {
    let Some(mut alpn) = hello.alpn() else {
        return false;
    };
    alpn.next() == Some(ward_acme::ACME_TLS_ALPN) && alpn.next().is_none()
}

#[derive(Serialize)]
struct ValidationEvent<'a> {
    event: &'static str,
    remote: String,
    sni: Option<&'a str>,
    result: &'static str,
}

/// Answers a tls-alpn-01 validation with the pending challenge
/// certificate for its server name, then closes; refuses it when none is
/// pending.
pub(crate) async fn answer(
    start: StartHandshake<TcpStream>,
    sni: Option<&str>,
    shared: &Shared,
    remote: SocketAddr,
    timeout: Duration,
) {
    let config = sni.and_then(|s| shared.acme.tls_alpn(s));
    let result = match config {
        None => "no_challenge",
        Some(config) => match tokio::time::timeout(timeout, start.into_stream(config)).await {
            Ok(Ok(mut tls)) => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::io::AsyncWriteExt::shutdown(&mut tls),
                )
                .await;
                "answered"
            }
            Ok(Err(_)) => "handshake_failed",
            Err(_) => "handshake_timeout",
        },
    };
    let (outcome, reason) = match result {
        "answered" => ("success", ""),
        r => ("failure", r),
    };
    shared
        .metrics
        .handshakes
        // No tenant: the validation is answered before one is chosen.
        .with(&[outcome, reason, "", "", "", "", "acme-tls/1"])
        .inc();
    tracing::info!(peer = %remote, sni = sni.unwrap_or(""), result, "tls-alpn-01 validation");
    if shared.audit.is_enabled() {
        shared.audit.record(&ValidationEvent {
            event: "acme_validation",
            remote: remote.to_string(),
            sni,
            result,
        });
    }
}

/// The `ward_gate_acme_*` families.
#[derive(Clone)]
struct AcmeMetrics {
    orders: CounterVec,
    next_renewal: GaugeVec,
    expiry: GaugeVec,
}

impl AcmeMetrics {
    fn register(r: &ward_telemetry::Registry) -> Result<Self, Error> {
        let e = |e: ward_telemetry::Error| Error::Config(e.to_string());
        Ok(AcmeMetrics {
            orders: r
                .counter(
                    "ward_gate_acme_orders_total",
                    "ACME orders by tenant and result (success, failure).",
                    &["tenant", "result"],
                )
                .map_err(e)?,
            next_renewal: r
                .gauge(
                    "ward_gate_acme_next_renewal_timestamp_seconds",
                    "When each ACME tenant's certificate is next renewed (Unix time).",
                    &["tenant"],
                )
                .map_err(e)?,
            expiry: r
                .gauge(
                    "ward_gate_acme_cert_expiry_timestamp_seconds",
                    "When each ACME tenant's current certificate expires (Unix time).",
                    &["tenant"],
                )
                .map_err(e)?,
        })
    }
}

#[derive(Serialize)]
struct AcmeEvent<'a> {
    event: &'static str,
    tenant: &'a str,
    result: &'static str,
    serial: Option<&'a str>,
    not_after: Option<i64>,
    error: Option<String>,
    retry_in_seconds: Option<u64>,
}

/// Hears one tenant's manager: metrics, audit, and a rebuild of the
/// runtime when a new certificate is stored.
struct GateObserver {
    tenant: String,
    shared: Weak<Shared>,
    metrics: AcmeMetrics,
}

impl GateObserver {
    fn audit(&self, event: &AcmeEvent<'_>) {
        if let Some(shared) = self.shared.upgrade()
            && shared.audit.is_enabled()
        {
            shared.audit.record(event);
        }
    }
}

impl Observer for GateObserver {
    fn installed(&self, current: &Issued) {
        self.metrics
            .expiry
            .with(&[&self.tenant])
            .set(current.not_after.unix_timestamp());
        self.audit(&AcmeEvent {
            event: "acme_certificate",
            tenant: &self.tenant,
            result: "installed",
            serial: Some(&current.serial),
            not_after: Some(current.not_after.unix_timestamp()),
            error: None,
            retry_in_seconds: None,
        });
        if let Some(shared) = self.shared.upgrade() {
            let _ = shared.put_in_service("renewed ACME certificate");
        }
    }

    fn order_finished(&self, result: &'static str) {
        self.metrics.orders.with(&[&self.tenant, result]).inc();
    }

    fn next_renewal(&self, at: OffsetDateTime) {
        self.metrics
            .next_renewal
            .with(&[&self.tenant])
            .set(at.unix_timestamp());
    }

    fn retrying(&self, error: &ward_acme::Error, wait: Duration) {
        self.audit(&AcmeEvent {
            event: "acme_certificate",
            tenant: &self.tenant,
            result: "failed",
            serial: None,
            not_after: None,
            error: Some(error.to_string()),
            retry_in_seconds: Some(wait.as_secs()),
        });
    }
}

/// Starts the http-01 listeners and one manager per ACME tenant of the
/// configuration in force. Tenants added by a later reload get no
/// manager until the gate restarts.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let runtime = shared.runtime.load_full();
    let tenants: Vec<_> = runtime
        .config
        .tenants
        .iter()
        .filter_map(|t| t.acme.clone().map(|a| (t.name.clone(), a)))
        .collect();
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    let metrics = AcmeMetrics::register(&shared.registry)?;
    let mut tasks = Vec::new();
    let mut listening = Vec::new();
    for (_, acme) in &tenants {
        if acme.challenge != ChallengeKind::Http01 {
            continue;
        }
        let Some(addr) = &acme.http01_listen else {
            continue;
        };
        if listening.contains(addr) {
            continue;
        }
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            context: format!("binding the http-01 listener {addr}"),
            source,
        })?;
        tracing::info!(address = %addr, "http-01 challenge listener");
        listening.push(addr.clone());
        tasks.push(tokio::spawn(ward_acme::http01::serve(
            listener,
            shared.acme.clone(),
            stop.clone(),
        )));
    }
    for (tenant, acme) in tenants {
        let observer = GateObserver {
            tenant: tenant.clone(),
            shared: Arc::downgrade(shared),
            metrics: metrics.clone(),
        };
        let manager = Manager::new(acme, shared.acme.clone(), Arc::new(observer))
            .map_err(|e| Error::Config(format!("tenant {tenant:?}: {e}")))?;
        if let Some(current) = manager.current() {
            metrics
                .expiry
                .with(&[&tenant])
                .set(current.not_after.unix_timestamp());
            tracing::info!(%tenant, serial = %current.serial, not_after = %current.not_after, "serving the stored ACME certificate");
        }
        tasks.push(tokio::spawn(manager.run(stop.clone())));
    }
    Ok(tasks)
}
