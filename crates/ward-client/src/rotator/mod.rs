//! [`Rotator`]: a workload identity that keeps itself fresh, and what the
//! rest of a process needs from it (the current [`Svid`], a watch channel of
//! updates, rustls resolvers and configurations, a status).
//!
//! Two sources feed it: the CA ([`Rotator::bootstrap`], [`ca_source`]) and a
//! SPIFFE Workload API socket ([`Rotator::from_workload_api`],
//! [`workload_source`]). Either way a background task owns the watch senders
//! and publishes into the [`Credentials`] store before the watch channel, so a subscriber that
//! sees a new identity can rely on new handshakes already using it. The task
//! stops when the last handle is dropped.

mod ca_source;
mod workload_source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ward_pki::KeyType;
use ward_tls::config::{ClientAuth, ClientCert, ServerAuth, client_config, server_config};

use crate::schedule::Backoff;
use crate::{CaTrust, ClientError, Credentials, Svid, Token};

/// Everything [`Rotator::bootstrap`] needs.
#[derive(Clone, Debug)]
pub struct BootstrapConfig {
    /// `https://host[:port]` of the CA.
    pub ca_url: String,
    /// How the CA is authenticated.
    pub trust: CaTrust,
    /// The bootstrap token for `POST /v1/sign` (used once).
    pub token: Token,
    /// Type of the keys generated here (a fresh one at every renewal).
    pub key_type: KeyType,
    /// Retry delays after a failed bootstrap or renewal.
    pub backoff: Backoff,
    /// How long bootstrap keeps retrying an unreachable CA before giving up.
    pub bootstrap_timeout: Duration,
}

impl BootstrapConfig {
    /// Defaults: ECDSA P-256 keys, backoff 1 s doubling up to 60 s,
    /// bootstrap retried for up to 60 s.
    pub fn new(ca_url: impl Into<String>, trust: CaTrust, token: Token) -> Self {
        BootstrapConfig {
            ca_url: ca_url.into(),
            trust,
            token,
            key_type: KeyType::EcdsaP256,
            backoff: Backoff::default(),
            bootstrap_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything [`Rotator::from_workload_api`] needs.
#[derive(Clone, Debug)]
pub struct WorkloadApiConfig {
    /// The socket; `None` reads `SPIFFE_ENDPOINT_SOCKET`.
    pub socket: Option<PathBuf>,
    /// Reconnection delays after the stream broke.
    pub backoff: Backoff,
    /// How long to wait for the first identity.
    pub first_timeout: Duration,
}

impl Default for WorkloadApiConfig {
    fn default() -> Self {
        WorkloadApiConfig {
            socket: None,
            backoff: Backoff::default(),
            first_timeout: Duration::from_secs(30),
        }
    }
}

/// A definitive "no" from the identity source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The CA's error code (`certificate_revoked`, `token_revoked`, …) or
    /// the gRPC status of the Workload API.
    pub code: String,
    /// The human message.
    pub message: String,
}

impl Refusal {
    /// Whether the refusal says the identity was revoked.
    pub fn is_revocation(&self) -> bool {
        matches!(self.code.as_str(), "certificate_revoked" | "token_revoked")
    }
}

/// Where rotation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationState {
    /// The identity is current; the next renewal is scheduled.
    Healthy,
    /// Renewals have failed this many times in a row; retrying with backoff
    /// while the current identity stays in use.
    Retrying {
        /// Consecutive failures.
        failures: u32,
    },
    /// The source refused definitively (e.g. the certificate was revoked);
    /// no more renewals are attempted. The current identity stays available
    /// until it expires.
    Refused(Refusal),
    /// The identity expired before it could be renewed.
    Expired,
}

/// Rotation counters and state, for health checks and metrics.
#[derive(Clone, Debug)]
pub struct RotationStatus {
    /// Where rotation stands.
    pub state: RotationState,
    /// Successful renewals (not counting the first identity).
    pub renewals: u64,
    /// Failed renewal attempts that will be retried.
    pub failures: u64,
    /// The last failure, without secrets.
    pub last_error: Option<String>,
    /// When the next renewal or retry is due.
    pub next_attempt: Option<SystemTime>,
}

impl RotationStatus {
    fn healthy() -> Self {
        RotationStatus {
            state: RotationState::Healthy,
            renewals: 0,
            failures: 0,
            last_error: None,
            next_attempt: None,
        }
    }
}

/// The background task's side of the channels.
pub(crate) struct Publisher {
    svid: watch::Sender<Arc<Svid>>,
    status: watch::Sender<RotationStatus>,
    resolver: Arc<Credentials>,
}

impl Publisher {
    /// Makes `next` current: resolver first, then subscribers.
    fn publish(&self, next: Svid) {
        let next = Arc::new(next);
        self.resolver.publish(next.certified_key());
        self.svid.send_replace(next);
    }

    fn current(&self) -> Arc<Svid> {
        self.svid.borrow().clone()
    }

    fn status(&self, update: impl FnOnce(&mut RotationStatus)) {
        self.status.send_modify(update);
    }
}

struct Shared {
    svid: watch::Receiver<Arc<Svid>>,
    status: watch::Receiver<RotationStatus>,
    resolver: Arc<Credentials>,
    /// CA URL and anchors, for an identity obtained from a Ward CA.
    ca: Option<(String, Vec<CertificateDer<'static>>)>,
    task: JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A self-renewing workload identity; clones share one background task.
///
/// See the crate documentation for how a server or proxy plugs it in.
#[derive(Clone)]
pub struct Rotator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Rotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotator")
            .field("current", &*self.shared.svid.borrow())
            .field("state", &self.shared.status.borrow().state)
            .finish()
    }
}

impl Rotator {
    /// Obtains a first identity from the CA (key made here, CSR + token to
    /// `POST /v1/sign`), retrying an unreachable CA with backoff for up to
    /// `bootstrap_timeout`, then renews it in the background over mTLS.
    ///
    /// Fails at once on a definitive refusal (token unknown, used up or
    /// revoked), a CA that does not match the trust, or bad configuration.
    pub async fn bootstrap(config: BootstrapConfig) -> Result<Rotator, ClientError> {
        let (first, renewer) = ca_source::bootstrap(config).await?;
        let ca = renewer.endpoint();
        Ok(Rotator::spawn(first, Some(ca), |publisher| {
            renewer.run(publisher)
        }))
    }

    /// Takes the identity from a SPIFFE Workload API socket (the configured
    /// one, else `SPIFFE_ENDPOINT_SOCKET`) and follows its updates,
    /// reconnecting with backoff when the stream breaks.
    pub async fn from_workload_api(config: WorkloadApiConfig) -> Result<Rotator, ClientError> {
        let (first, follower) = workload_source::connect(config).await?;
        Ok(Rotator::spawn(first, None, |publisher| {
            follower.run(publisher)
        }))
    }

    pub(crate) fn spawn<F, Fut>(
        first: Svid,
        ca: Option<(String, Vec<CertificateDer<'static>>)>,
        run: F,
    ) -> Rotator
    where
        F: FnOnce(Publisher) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let first = Arc::new(first);
        let resolver = Arc::new(Credentials::of(first.certified_key()));
        let (svid_tx, svid_rx) = watch::channel(first);
        let (status_tx, status_rx) = watch::channel(RotationStatus::healthy());
        let publisher = Publisher {
            svid: svid_tx,
            status: status_tx,
            resolver: resolver.clone(),
        };
        let task = tokio::spawn(run(publisher));
        Rotator {
            shared: Arc::new(Shared {
                svid: svid_rx,
                status: status_rx,
                resolver,
                ca,
                task,
            }),
        }
    }

    /// The identity in force now.
    pub fn current(&self) -> Arc<Svid> {
        self.shared.svid.borrow().clone()
    }

    /// A receiver that sees every new identity. Its `changed()` fails once
    /// rotation has stopped for good (refused or expired).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Svid>> {
        self.shared.svid.clone()
    }

    /// JWT-SVIDs for this identity, minted by the CA it came from; `None`
    /// for an identity taken from a Workload API.
    pub fn jwt_svids(&self) -> Option<crate::JwtSvids> {
        let (url, anchors) = self.shared.ca.clone()?;
        Some(crate::JwtSvids::new(url, anchors, self.subscribe()))
    }

    /// The bundles of the partner trust domains the CA of this identity
    /// follows (`GET /v1/federation`), for [`crate::federated::Federation::start`];
    /// `None` for an identity taken from a Workload API.
    pub fn federation_from_ca(&self) -> Option<crate::federated::FromCa> {
        let (url, anchors) = self.shared.ca.clone()?;
        Some(crate::federated::FromCa::new(
            url,
            anchors,
            self.subscribe(),
        ))
    }

    /// A client for node-scoped issuance with this identity (node agents);
    /// `None` for an identity taken from a Workload API.
    pub fn node_client(&self, key_type: KeyType) -> Option<crate::node::NodeClient> {
        let (url, anchors) = self.shared.ca.clone()?;
        Some(crate::node::NodeClient::new(
            url,
            anchors,
            self.subscribe(),
            key_type,
        ))
    }

    /// A receiver of the rotation status.
    pub fn status(&self) -> watch::Receiver<RotationStatus> {
        self.shared.status.clone()
    }

    /// The resolver presenting the current identity, for any rustls config.
    pub fn resolver(&self) -> Arc<Credentials> {
        self.shared.resolver.clone()
    }

    /// Ward's TLS 1.3 client configuration: presents the current identity,
    /// verifies servers (chain and DNS/IP name) against the current trust
    /// bundle. The certificate follows rotations; the bundle is fixed when
    /// this is called (call it again after a bundle change).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        let roots = root_store(self.current().bundle())?;
        let config = client_config(
            ServerAuth::Roots(roots),
            ClientCert::Resolver(self.resolver()),
        )
        .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Arc::new(config))
    }

    /// Ward's TLS 1.3 server configuration: presents the current identity and
    /// requires a client certificate that chains to the current trust
    /// bundle. Authorization by SPIFFE ID is the caller's (read the peer
    /// certificate after the handshake). No ALPN is set.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, ClientError> {
        let roots = Arc::new(root_store(self.current().bundle())?);
        let config = server_config(self.resolver(), ClientAuth::Required(roots))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

impl Rotator {
    /// [`Rotator::client_config`] that also verifies servers of the
    /// partner trust domains `federation` follows, each against its own
    /// domain's roots only ([`crate::federated::DomainBinding`]). The
    /// bundles are those present now: build again after
    /// [`crate::federated::Federation::changed`].
    pub fn client_config_federated(
        &self,
        federation: &crate::federated::Federation,
    ) -> Result<Arc<ClientConfig>, ClientError> {
        let binding = Arc::new(federation.binding(self.current().bundle()));
        let roots = Arc::new(root_store(binding.all_roots())?);
        let verifier = ward_tls::verifier::ServerVerifier::webpki(roots)
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_check(binding);
        let config = client_config(
            ServerAuth::Verifier(Arc::new(verifier)),
            ClientCert::Resolver(self.resolver()),
        )
        .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Arc::new(config))
    }

    /// [`Rotator::server_config`] that also accepts clients of the partner
    /// trust domains `federation` follows, each verified against its own
    /// domain's roots only. Build again after
    /// [`crate::federated::Federation::changed`].
    pub fn server_config_federated(
        &self,
        federation: &crate::federated::Federation,
    ) -> Result<Arc<ServerConfig>, ClientError> {
        let binding = Arc::new(federation.binding(self.current().bundle()));
        let roots = Arc::new(root_store(binding.all_roots())?);
        let verifier = ward_tls::verifier::ClientVerifier::required(roots)
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_check(binding);
        let config = server_config(self.resolver(), ClientAuth::Custom(Arc::new(verifier)))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

fn root_store(bundle: &[CertificateDer<'static>]) -> Result<RootCertStore, ClientError> {
    let mut store = RootCertStore::empty();
    for root in bundle {
        store
            .add(root.clone())
            .map_err(|e| ClientError::Identity(format!("unusable bundle root: {e}")))?;
    }
    Ok(store)
}

/// Sleeps until the wall-clock time `at` (at once if it has passed).
async fn sleep_until(at: SystemTime) {
    let delay = at.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(delay).await;
}
