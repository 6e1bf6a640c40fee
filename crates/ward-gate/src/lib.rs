//! Ward's gate: an mTLS-enforcing proxy (SPEC §6).
//!
//! Flow: accept → ClientHello (SNI → tenant) → handshake (chain, EKU,
//! validity) → identity → route → authorize (default deny) → sanitize and
//! set identity headers → upstream (HTTP or TCP) → audit + metrics.
//! Configuration lives in one [`runtime::Runtime`] behind an `ArcSwap`: a
//! reload builds a new one and swaps it; connections keep the one they
//! started with.

#![forbid(unsafe_code)]

pub mod admin;
pub mod authz;
pub mod config;
pub mod identity;
pub mod metrics;
pub mod outbound;
pub mod pipe;
pub mod policy;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use ward_telemetry::{AuditLog, Registry};

use crate::config::GateConfig;
use crate::metrics::GateMetrics;
use crate::runtime::Runtime;

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
        let result = self.source.load().and_then(Runtime::build);
        match result {
            Ok(runtime) => {
                self.update_expiry(&runtime);
                self.runtime.store(Arc::new(runtime));
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
    let runtime = Runtime::build(config)?;
    let registry = Registry::new();
    let metrics = GateMetrics::register(&registry).map_err(|e| Error::Config(e.to_string()))?;
    let listen_addr = runtime.config.listen.address.clone();
    let admin_addr = runtime.config.listen.admin.clone();
    let shared = Arc::new(Shared {
        runtime: ArcSwap::from_pointee(runtime),
        metrics,
        registry,
        audit,
        source,
    });
    shared.update_expiry(&shared.runtime.load());

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
    Ok(())
}
