//! State every connection shares ([`Shared`]) and where the configuration
//! comes from ([`Source`]): reloads and identity renewals build a new
//! runtime here and swap it in.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use ward_telemetry::{AuditLog, Registry};

use crate::Error;
use crate::config::GateConfig;
use crate::metrics::GateMetrics;
use crate::ocsp::Stapler;
use crate::revocation::Revocation;
use crate::runtime::{Runtime, Services};

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
    /// Pending ACME challenge answers of the `[tenants.acme]` tenants.
    pub acme: ward_acme::Challenges,
    /// Followed partner bundles.
    pub federation: Arc<crate::federation::Federation>,
    /// Held while a runtime is built and swapped in, so a reload that read
    /// the old identity cannot land after a renewal that installed the new.
    pub(crate) rebuilding: std::sync::Mutex<()>,
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
        let result = self.source.load().and_then(|config| {
            // Followers change only with a configuration that builds: a
            // rejected reload leaves federation as it was. A new partner's
            // first bundle arrives later and triggers a rebuild of its own.
            let runtime = Runtime::build_with(config, &self.services())?;
            self.federation.configure(&runtime.config)?;
            Ok(runtime)
        });
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
        self.put_in_service("renewed identity")
    }

    /// Puts changed federated bundles into service, like
    /// [`Shared::renew_identity`]; on failure the previous roots stay.
    pub fn renew_federation(&self) -> Result<(), Error> {
        self.put_in_service("federated bundles")
    }

    /// Rebuilds the configuration in force (without reading the
    /// configuration file) so that a renewed certificate or bundle, `what`,
    /// serves new handshakes; on failure the previous one stays.
    pub fn put_in_service(&self, what: &str) -> Result<(), Error> {
        let _one_at_a_time = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.runtime.load().config.clone();
        match Runtime::build_with(config, &self.services()) {
            Ok(runtime) => {
                self.install(runtime);
                tracing::info!("{what} in service");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot put the {what} into service; the previous one stays");
                Err(e)
            }
        }
    }

    /// Swaps `runtime` in; new handshakes and requests use it.
    fn install(&self, runtime: Runtime) {
        let old = self.runtime.load();
        if old.client_roots != runtime.client_roots {
            // New verifiers key by the new anchors; what the old ones
            // remembered can only take room.
            runtime.verify_cache.clear();
        }
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
            pool: Some(self.runtime.load().pool.clone()),
            verify_cache: Some(self.runtime.load().verify_cache.clone()),
            metrics: Some(self.metrics.clone()),
            federation: Some(self.federation.clone()),
        }
    }

    pub(crate) fn update_expiry(&self, runtime: &Runtime) {
        let now = OffsetDateTime::now_utc();
        for t in &runtime.tenants {
            self.metrics
                .cert_expiry
                .with(&[&t.name])
                .set((t.cert_not_after - now).whole_seconds());
            self.metrics
                .cert_lifetime
                .with(&[&t.name])
                .set(t.cert_lifetime);
        }
    }
}
