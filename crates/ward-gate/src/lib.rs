//! Ward's gate: an mTLS-enforcing proxy (SPEC §6).
//!
//! Flow: accept → ClientHello (SNI → tenant) → handshake (chain, EKU,
//! validity, CRL) → revocation re-check (resumed sessions) → identity → route → authorize (default deny) → sanitize and
//! set identity headers → upstream (HTTP or TCP) → audit + metrics.
//! Configuration lives in one [`runtime::Runtime`] behind an `ArcSwap`: a
//! reload builds a new one and swaps it; connections keep the one they
//! started with.

#![forbid(unsafe_code)]

pub mod admin;
pub mod authz;
pub mod check;
pub mod config;
pub mod forwarding;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod metrics;
pub mod ocsp;
pub mod outbound;
pub mod pipe;
pub mod policy;
pub mod proxy;
pub mod revocation;
pub mod runtime;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use ward_telemetry::{AuditLog, Registry};

use crate::config::GateConfig;
use crate::metrics::GateMetrics;
use crate::ocsp::Stapler;
use crate::revocation::Revocation;
use crate::runtime::Runtime;
use crate::runtime::Services;

/// Errors of the gate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration or a file it names is invalid.
    #[error("{0}")]
    Config(String),
    /// A listener failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Where the configuration comes from, for reloads.
#[derive(Debug, Clone)]
pub enum Source {
    /// A TOML file, re-read on reload.
    File(PathBuf),
    /// A fixed configuration (the flag form); reload re-reads its files.
    Fixed(Box<GateConfig>),
}

impl Source {
    /// The configuration as it is now.
    pub fn load(&self) -> Result<GateConfig, Error> {
        match self {
            Source::File(path) => GateConfig::load(path),
            Source::Fixed(config) => Ok((**config).clone()),
        }
    }
}

/// State shared by every connection.
pub struct Shared {
    /// The live configuration.
    pub runtime: ArcSwap<Runtime>,
    /// Metrics.
    pub metrics: GateMetrics,
    /// Their registry.
    pub registry: Registry,
    /// Audit lines.
    pub audit: AuditLog,
    /// Where the configuration comes from.
    pub source: Source,
    /// CRLs and the registry of open connections they may close.
    pub revocation: Arc<Revocation>,
    /// OCSP stapling for the tenants' server certificates.
    pub stapler: Arc<Stapler>,
    /// The gate's own identity from the CA, when `[identity]` is set.
    pub identity: Option<ward_client::Rotator>,
    /// Held while a runtime is built and swapped in, so a reload that read
    /// the old identity cannot land after a renewal that installed the new.
    rebuilding: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Rebuilds the runtime from the source; on failure the old one stays,
    /// and the failure is logged and counted.
    pub fn reload(&self) -> Result<(), Error> {
        let _one_at_a_time = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        let result = self
            .source
            .load()
            .and_then(|config| Runtime::build_with(config, &self.services()));
        match result {
            Ok(runtime) => {
                self.install(runtime);
                self.metrics.reloads.with(&["success"]).inc();
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics.reloads.with(&["failure"]).inc();
                tracing::error!(error = %e, "reload rejected; the previous configuration stays in force");
                Err(e)
            }
        }
    }

    /// Puts the current `[identity]` certificate into service: the
    /// configuration in force is rebuilt with it (tenants, upstream client,
    /// stapler), without reading the configuration file, which may be
    /// mid-edit or invalid just then. A renewal must not wait for it.
    pub fn renew_identity(&self) -> Result<(), Error> {
        let _one_at_a_time = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.runtime.load().config.clone();
        match Runtime::build_with(config, &self.services()) {
            Ok(runtime) => {
                self.install(runtime);
                tracing::info!("renewed identity in service");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot put the renewed identity into service; the previous certificate stays");
                Err(e)
            }
        }
    }

    /// Swaps `runtime` in; new handshakes and requests use it.
    fn install(&self, runtime: Runtime) {
        self.revocation
            .configure(&runtime.config.revocation, runtime.client_roots.clone());
        self.update_expiry(&runtime);
        let staples = runtime.staples.clone();
        self.runtime.store(Arc::new(runtime));
        self.stapler.retain(&staples);
    }

    /// What runtimes are built against.
    pub fn services(&self) -> Services {
        Services {
            revocation: Some(self.revocation.clone()),
            stapler: Some(self.stapler.clone()),
            identity: self.identity.as_ref().map(ward_client::Rotator::current),
        }
    }

    fn update_expiry(&self, runtime: &Runtime) {
        let now = OffsetDateTime::now_utc();
        for t in &runtime.tenants {
            self.metrics
                .cert_expiry
                .with(&[&t.name])
                .set((t.cert_not_after - now).whole_seconds());
        }
    }
}

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
    let runtime = Runtime::build_with(
        config,
        &Services {
            revocation: Some(revocation.clone()),
            stapler: Some(stapler.clone()),
            identity: identity.as_ref().map(ward_client::Rotator::current),
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
        rebuilding: std::sync::Mutex::new(()),
    });
    shared.update_expiry(&shared.runtime.load());
    let rotations = follow_identity(&shared);

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
