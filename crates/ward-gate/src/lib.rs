//! Ward's gate: an mTLS-enforcing proxy (SPEC §6).
//!
//! Flow: accept → ClientHello (SNI → tenant) → handshake (chain, EKU,
//! validity, CRL) → revocation re-check (resumed sessions) → identity → route → authorize (default deny) → sanitize and
//! set identity headers → upstream (HTTP or TCP) → audit + metrics. The
//! request steps are [`pipeline`]'s, called by both HTTP transports (the
//! fast path in `server/h1.rs` and the hyper path in [`proxy`]); idle
//! upstream connections are the runtime's pool.
//! Configuration lives in one [`runtime::Runtime`] behind an `ArcSwap`: a
//! reload builds a new one and swaps it; connections keep the one they
//! started with.

#![forbid(unsafe_code)]

mod acme;
pub mod admin;
mod audit_mode;
pub mod authz;
pub mod balance;
pub mod check;
pub mod config;
mod edge;
mod error;
pub mod federation;
pub mod forwarding;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod jwt_svid;
pub mod metrics;
pub mod ocsp;
pub mod outbound;
pub mod passthrough;
pub mod pipe;
pub mod pipeline;
pub mod policy;
mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod revocation;
pub mod runtime;
pub mod server;
mod shared;
mod sni;
pub mod tls;

pub use error::Error;
pub use shared::{Shared, Source};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use ward_telemetry::{AuditLog, Registry};

use crate::metrics::GateMetrics;
use crate::ocsp::Stapler;
use crate::revocation::Revocation;
use crate::runtime::Runtime;
use crate::runtime::Services;

/// Addresses the gate listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The mTLS listener.
    pub listen: SocketAddr,
    /// The admin listener, if any.
    pub admin: Option<SocketAddr>,
}

/// Builds the gate from `source` and serves until `shutdown` resolves,
/// calling `on_ready` once the listeners accept. `reload` fires a reload
/// each time it yields (SIGHUP); files named by the configuration are also
/// watched.
pub async fn run(
    source: Source,
    on_ready: impl FnOnce(&Bound),
    mut reload: tokio::sync::mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let config = source.load()?;
    let audit = match config.audit_log.as_str() {
        "off" => AuditLog::disabled(),
        spec => AuditLog::from_spec(spec).map_err(|e| Error::Config(format!("audit log: {e}")))?,
    };
    let registry = Registry::new();
    let metrics = GateMetrics::register(&registry).map_err(|e| Error::Config(e.to_string()))?;
    let revocation = Revocation::new(metrics.clone());
    let stapler = Stapler::new(metrics.clone());
    let identity = match &config.identity {
        Some(settings) => Some(obtain_identity(settings).await?),
        None => None,
    };
    let federation = Arc::new(federation::Federation::default());
    federation.configure(&config)?;
    if let (Some(rotator), Some(settings)) = (&identity, &config.identity)
        && settings.federation
        && let Some(source) = rotator.federation_from_ca()
    {
        federation.follow_ca(source)?;
    }
    let runtime = Runtime::build_with(
        config,
        &Services {
            revocation: Some(revocation.clone()),
            stapler: Some(stapler.clone()),
            identity: identity.as_ref().map(ward_client::Rotator::current),
            pool: None,
            verify_cache: None,
            metrics: Some(metrics.clone()),
            federation: Some(federation.clone()),
        },
    )?;
    let listen_addr = runtime.config.listen.address.clone();
    let admin_addr = runtime.config.listen.admin.clone();
    let shared = Arc::new(Shared {
        runtime: ArcSwap::from_pointee(runtime),
        metrics,
        registry,
        audit,
        source,
        revocation,
        stapler,
        identity,
        acme: ward_acme::Challenges::default(),
        federation,
        rebuilding: std::sync::Mutex::new(()),
    });
    shared.update_expiry(&shared.runtime.load());
    let rotations = follow_identity(&shared);
    let federated = follow_federation(&shared);

    let listener = TcpListener::bind(&listen_addr)
        .await
        .map_err(|source| Error::Io {
            context: format!("binding {listen_addr}"),
            source,
        })?;
    let admin = match &admin_addr {
        Some(a) => Some(TcpListener::bind(a).await.map_err(|source| Error::Io {
            context: format!("binding {a}"),
            source,
        })?),
        None => None,
    };
    let bound = Bound {
        listen: listener.local_addr().map_err(|source| Error::Io {
            context: "listener address".into(),
            source,
        })?,
        admin: admin.as_ref().and_then(|l| l.local_addr().ok()),
    };
    {
        let runtime = shared.runtime.load();
        shared
            .revocation
            .configure(&runtime.config.revocation, runtime.client_roots.clone());
        // Ready means the first CRLs are in (or failed): no handshake is
        // refused for a CRL that was merely still on its way.
        let limit = runtime.config.revocation.crl_fetch_timeout.0 + Duration::from_secs(1);
        shared.revocation.first_round(limit).await;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = admin::watch_files(shared.clone());
    let server = tokio::spawn(server::run(listener, shared.clone(), stop_rx.clone()));
    let admin_task = admin.map(|l| tokio::spawn(admin::serve(l, shared.clone(), stop_rx.clone())));
    let acme_tasks = acme::start(&shared, &stop_rx).await?;
    on_ready(&bound);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = reload.recv() => { let _ = shared.reload(); }
        }
    }
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    drop(watcher);
    if let Some(task) = rotations {
        task.abort();
    }
    for task in acme_tasks {
        task.abort();
    }
    federated.abort();
    shared.revocation.shutdown();
    shared.stapler.shutdown();
    Ok(())
}

/// Bootstraps the gate's own identity from the CA named by `[identity]`.
async fn obtain_identity(settings: &config::IdentityConfig) -> Result<ward_client::Rotator, Error> {
    let cfg = |e: ward_client::ClientError| Error::Config(format!("identity: {e}"));
    let trust = match (&settings.ca_fingerprint, &settings.ca_bundle) {
        (Some(fp), _) => ward_client::CaTrust::fingerprint(fp).map_err(cfg)?,
        (None, Some(bundle)) => ward_client::CaTrust::bundle_file(bundle).map_err(cfg)?,
        (None, None) => {
            return Err(Error::Config(
                "identity: one of ca_fingerprint and ca_bundle is required".into(),
            ));
        }
    };
    let text = match &settings.token_file {
        Some(path) => zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("identity: reading {}: {e}", path.display())))?,
        ),
        None => zeroize::Zeroizing::new(std::env::var("WARD_TOKEN").map_err(|_| {
            Error::Config("identity: no token_file and no WARD_TOKEN in the environment".into())
        })?),
    };
    let token = ward_client::Token::new(text.trim()).map_err(cfg)?;
    let rotator = ward_client::Rotator::bootstrap(ward_client::BootstrapConfig::new(
        settings.ca.clone(),
        trust,
        token,
    ))
    .await
    .map_err(|e| {
        Error::Config(format!(
            "identity: cannot obtain a certificate from {}: {e}",
            settings.ca
        ))
    })?;
    let svid = rotator.current();
    tracing::info!(spiffe_id = %svid.spiffe_id(), serial = %svid.serial(), "identity obtained from the CA");
    Ok(rotator)
}

/// Puts every new identity into service (without reading the
/// configuration file): new handshakes (and new upstream connections) use
/// it, open connections keep what they had.
fn follow_identity(shared: &Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    let mut updates = shared.identity.as_ref()?.subscribe();
    let shared = Arc::downgrade(shared);
    Some(tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            let svid = updates.borrow_and_update().clone();
            tracing::info!(serial = %svid.serial(), "identity renewed; rebuilding the TLS configuration");
            let _ = shared.renew_identity();
        }
    }))
}

/// Puts every changed partner bundle into service: the configuration in
/// force is rebuilt (without reading the file) with the new roots.
fn follow_federation(shared: &Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let federation = shared.federation.clone();
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            federation.changed().await;
            let Some(shared) = shared.upgrade() else {
                break;
            };
            tracing::info!("federated bundle changed; rebuilding the TLS configuration");
            let _ = shared.renew_federation();
        }
    })
}
