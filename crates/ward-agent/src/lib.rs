//! Ward's agent: obtains and rotates a workload's identity and hands it to
//! the workload as files and over the SPIFFE Workload API.
//!
//! The identity comes from `ward-client`'s [`Rotator`] (key made here, CSR
//! and bootstrap token, renewal over mTLS at two thirds of the lifetime with
//! backoff). On every new identity the agent writes the files ([`files`]),
//! publishes it to Workload API streams ([`workload`]), then runs the
//! `--on-rotate` command ([`hook`]).
//!
//! A definitive refusal of renewal (the CA answers 401/403, e.g. the
//! certificate was revoked) is not retried: it is logged as an error,
//! counted in `ward_agent_renewals_total{result="revoked"|"refused"}`,
//! `/readyz` turns 503, Workload API streams end with `PermissionDenied`,
//! and the agent keeps the files in place until the certificate expires,
//! then exits with an error ([`AgentError::Refused`]). Staying up until then
//! keeps the refusal visible to monitoring; exiting at expiry hands the
//! problem to the supervisor, since only a new token can help.
//!
//! The agent never logs the token or a private key.

#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod attest;
mod authority;
pub mod federation;
pub mod files;
pub mod hook;
pub mod jwt;
pub mod metrics;
pub mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use ward_client::{BootstrapConfig, ClientError, RotationState, Rotator, Svid};

use crate::metrics::Metrics;
use crate::workload::Published;

/// Everything `ward agent run` configures.
#[derive(Debug)]
pub struct AgentConfig {
    /// CA, trust, token, key type and backoff.
    pub bootstrap: BootstrapConfig,
    /// Directory for `svid.pem`, `svid_key.pem`, `svid_bundle.pem`.
    pub out_dir: Option<PathBuf>,
    /// Unix socket for the SPIFFE Workload API.
    pub socket: Option<PathBuf>,
    /// Shell command run after each new identity was written.
    pub on_rotate: Option<String>,
    /// Longest the command may run before it is killed.
    pub on_rotate_timeout: Duration,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin: Option<String>,
    /// Serve several attested workloads on the socket ([`attest`]).
    pub attestation: Option<Registrations>,
    /// Partner trust domains whose bundle endpoints the agent follows and
    /// serves on the Workload API (see `docs/federation.md`).
    pub federation: Vec<ward_client::federation::Endpoint>,
    /// Refresh bounds of the partner bundles (and of asking the CA).
    pub federation_refresh: ward_client::federation::Refresh,
    /// Also serve the partner bundles the CA follows (`GET /v1/federation`).
    pub federation_from_ca: bool,
}

/// Where a node agent's registration entries come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Registrations {
    /// Entries read from a file at start-up (the CA still authorizes each ID).
    File(PathBuf),
    /// The entries the CA keeps for this agent's SPIFFE ID, fetched once the
    /// agent has its own identity and again every [`ENTRIES_REFRESH`].
    FromCa,
}

/// How often entries fetched from the CA are fetched again.
pub const ENTRIES_REFRESH: Duration = Duration::from_secs(60);

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The output directory or a file in it could not be written.
    #[error(transparent)]
    Files(#[from] files::WriteError),
    /// The Workload API socket could not be set up.
    #[error(transparent)]
    Socket(#[from] workload::SocketError),
    /// The first identity could not be obtained.
    #[error("cannot obtain an identity: {0}")]
    Bootstrap(ClientError),
    /// The CA refused renewal for good and the certificate has now expired.
    #[error("the CA refused renewal ({code}: {message}); the certificate has expired")]
    Refused {
        /// The CA's error code.
        code: String,
        /// The CA's message.
        message: String,
    },
    /// The certificate expired before it could be renewed.
    #[error("the certificate expired before it could be renewed (is the CA reachable?)")]
    Expired,
}

/// Milestones, for the caller's readiness lines.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The Workload API accepts connections on this socket.
    WorkloadApi(&'a std::path::Path),
    /// The admin listener accepts connections.
    Admin(SocketAddr),
    /// A new identity was delivered (files written, streams updated, hook run).
    Delivered {
        /// The identity.
        svid: &'a Svid,
        /// Whether it is the first one.
        first: bool,
    },
}

/// Runs the agent until `shutdown` resolves (`Ok`) or the identity is lost
/// for good (`Err`).
pub async fn run(
    config: AgentConfig,
    notify: impl Fn(Event<'_>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let metrics =
        Arc::new(Metrics::new().map_err(|e| AgentError::Config(format!("metrics: {e}")))?);
    if let Some(dir) = &config.out_dir {
        files::prepare_dir(dir)?;
    }
    let (published_tx, published_rx) = watch::channel(Published::Pending);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    let (mut jwt_ctx, jwt_svids_tx, bundle_tx) = jwt::JwtContext::new();
    let (entries_tx, entries_rx) = watch::channel(Arc::new(Vec::new()));
    let (node_svids_tx, node_svids_rx) = watch::channel(attest::NodeSvids::default());
    let node_svids_tx = Arc::new(node_svids_tx);
    let (node_client_tx, node_client_rx) = watch::channel(None);
    let attestation = match &config.attestation {
        None => None,
        Some(_) if config.socket.is_none() => {
            return Err(AgentError::Config(
                "attestation (--registrations, --entries-from-ca) needs --socket".into(),
            ));
        }
        Some(source) => {
            if let Registrations::File(path) = source {
                entries_tx.send_replace(Arc::new(
                    attest::load_file(path).map_err(AgentError::Config)?,
                ));
            }
            Some(attest::Attestation {
                entries: entries_rx,
                svids: node_svids_rx,
                node: node_client_rx,
            })
        }
    };
    federation::validate(&config.federation)?;
    let (federated_tx, federated_rx) = watch::channel(federation::Federated::default());
    jwt_ctx.federated = federated_rx;
    let mut federated_tx = Some(federated_tx);
    let mut federation_task = None;
    if let Some(path) = &config.socket {
        let listener = if attestation.is_some() {
            workload::bind_with_mode(path, workload::ATTESTED_SOCKET_MODE)?
        } else {
            workload::bind(path)?
        };
        notify(Event::WorkloadApi(path));
        let published = published_rx.clone();
        let stop = stopped();
        let attestation = attestation.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = workload::serve(listener, published, jwt_ctx, attestation, stop).await {
                tracing::error!(error = %e, "workload API server stopped");
            }
        }));
    }
    if let Some(addr) = &config.admin {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| AgentError::Config(format!("--admin {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| AgentError::Config(format!("--admin {addr}: {e}")))?;
        notify(Event::Admin(local));
        tasks.push(tokio::spawn(admin::serve(
            listener,
            published_rx.clone(),
            metrics.clone(),
            stopped(),
        )));
    }
    let mut agent = Agent {
        config: &config,
        metrics,
        published: published_tx,
    };
    tokio::pin!(shutdown);
    let mut bundle_task = None;
    let mut node_task = None;
    let result = tokio::select! {
        started = Rotator::bootstrap(config.bootstrap.clone()) => match started {
            Ok(rotator) => {
                if let (Some(source), Some(node)) = (
                    &config.attestation,
                    rotator.node_client(config.bootstrap.key_type),
                ) {
                    node_client_tx.send_replace(Some(node.clone()));
                    node_task = Some(tokio::spawn(attest::serve_entries(
                        node,
                        source.clone(),
                        entries_tx,
                        node_svids_tx,
                        config.bootstrap.backoff,
                    )));
                }
                // JWT-SVIDs and the bundle only matter to Workload API clients.
                if config.socket.is_some()
                    && let Some(svids) = rotator.jwt_svids()
                {
                    let td = rotator.current().spiffe_id().trust_domain();
                    jwt_svids_tx.send_replace(Some(svids.clone()));
                    bundle_task = Some(tokio::spawn(jwt::follow_bundle(
                        svids,
                        td,
                        bundle_tx,
                        rotator.subscribe(),
                    )));
                }
                // Partner bundles only matter to Workload API clients.
                let from_ca = rotator
                    .federation_from_ca()
                    .filter(|_| config.federation_from_ca);
                if config.socket.is_some()
                    && (from_ca.is_some() || !config.federation.is_empty())
                    && let Some(tx) = federated_tx.take()
                {
                    match federation::follow(
                        config.federation.clone(),
                        config.federation_refresh,
                        from_ca,
                        tx,
                    ) {
                        Ok(task) => federation_task = Some(task),
                        Err(e) => tracing::error!(error = %e, "federation not started"),
                    }
                }
                agent.follow(rotator, &notify, &mut shutdown).await
            }
            Err(e) => Err(AgentError::Bootstrap(e)),
        },
        () = &mut shutdown => Ok(()),
    };
    if let Some(task) = bundle_task {
        task.abort();
    }
    if let Some(task) = node_task {
        task.abort();
    }
    if let Some(task) = federation_task {
        task.abort();
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if let Some(path) = &config.socket {
        let _ = std::fs::remove_file(path);
    }
    result
}

struct Agent<'a> {
    config: &'a AgentConfig,
    metrics: Arc<Metrics>,
    published: watch::Sender<Published>,
}

impl Agent<'_> {
    /// Files, then Workload API streams, then the hook.
    async fn deliver(&self, svid: &Arc<Svid>, first: bool) -> Result<(), AgentError> {
        if let Some(dir) = &self.config.out_dir {
            match files::write_svid(dir, svid) {
                Ok(()) => self.metrics.writes.with(&["ok"]).inc(),
                Err(e) if first => return Err(e.into()),
                Err(e) => {
                    self.metrics.writes.with(&["error"]).inc();
                    tracing::error!(error = %e, "cannot write the renewed identity; the old files stay");
                }
            }
        }
        self.published.send_replace(Published::Ready(svid.clone()));
        if let Some(cmd) = &self.config.on_rotate {
            let outcome = hook::run(cmd, self.config.on_rotate_timeout).await;
            self.metrics.on_rotate.with(&[outcome.as_str()]).inc();
        }
        tracing::info!(
            spiffe_id = %svid.spiffe_id(),
            serial = %svid.serial(),
            not_after = ?svid.not_after(),
            "identity delivered"
        );
        Ok(())
    }

    async fn follow(
        &mut self,
        rotator: Rotator,
        notify: &impl Fn(Event<'_>),
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), AgentError> {
        let mut svids = rotator.subscribe();
        let mut status = rotator.status();
        let first = svids.borrow_and_update().clone();
        self.deliver(&first, true).await?;
        notify(Event::Delivered {
            svid: &first,
            first: true,
        });
        let mut current = first;
        let (mut svids_open, mut status_open) = (true, true);
        let (mut seen_ok, mut seen_failed) = (0u64, 0u64);
        let mut refused: Option<(String, String)> = None;
        loop {
            let expiry = current.not_after();
            tokio::select! {
                () = shutdown.as_mut() => return Ok(()),
                changed = svids.changed(), if svids_open => {
                    if changed.is_err() {
                        svids_open = false;
                        continue;
                    }
                    let next = svids.borrow_and_update().clone();
                    self.deliver(&next, false).await?;
                    notify(Event::Delivered { svid: &next, first: false });
                    current = next;
                }
                changed = status.changed(), if status_open => {
                    if changed.is_err() {
                        status_open = false;
                        continue;
                    }
                    let s = status.borrow_and_update().clone();
                    self.metrics.renewals.with(&["ok"]).inc_by(s.renewals.saturating_sub(seen_ok));
                    self.metrics.renewals.with(&["error"]).inc_by(s.failures.saturating_sub(seen_failed));
                    (seen_ok, seen_failed) = (s.renewals, s.failures);
                    match s.state {
                        RotationState::Refused(r) if refused.is_none() => {
                            let label = if r.is_revocation() { "revoked" } else { "refused" };
                            self.metrics.renewals.with(&[label]).inc();
                            tracing::error!(
                                code = %r.code,
                                message = %r.message,
                                serial = %current.serial(),
                                "renewal refused for good: serving nothing new; exiting when the certificate expires"
                            );
                            self.published.send_replace(Published::Refused(format!(
                                "the CA refused renewal: {}", r.code
                            )));
                            refused = Some((r.code, r.message));
                        }
                        RotationState::Expired => return Err(AgentError::Expired),
                        _ => {}
                    }
                }
                () = sleep_until(expiry), if refused.is_some() || !svids_open => {
                    return Err(match refused.take() {
                        Some((code, message)) => AgentError::Refused { code, message },
                        None => AgentError::Expired,
                    });
                }
            }
        }
    }
}

async fn sleep_until(at: SystemTime) {
    tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
}
