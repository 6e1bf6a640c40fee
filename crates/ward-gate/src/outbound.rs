//! Outbound mode, `ward gate client` (SPEC §4, issue 4 item 9): a plaintext
//! listener (normally on loopback) whose connections are carried over mTLS
//! to one target, so a legacy client that cannot do TLS reaches an mTLS
//! service. The client certificate and CA bundle reload on file change and
//! on SIGHUP; a bad new file is rejected and the old credentials stay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::{CertificateError, ClientConfig, OtherError};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use ward_pki::inspect::CertInfo;
use ward_pki::{SpiffeId, SpiffeIdPattern};
use ward_tls::config::{ClientCert, ServerAuth, client_config};
use ward_tls::verifier::{ServerCheck, ServerVerifier};

use crate::Error;
use crate::pipe::{PipeEnd, pipe};
use crate::runtime::{read_certs, read_key, root_store};

/// What `ward gate client` needs.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Plaintext listen address (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// The mTLS target, `HOST:PORT`.
    pub target: String,
    /// Client certificate chain presented to the target.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Roots the target's certificate must chain to.
    pub ca: PathBuf,
    /// Server name to send and verify; the target's host when absent.
    pub sni: Option<String>,
    /// SPIFFE ID (exact or `prefix/*`) the target's certificate must carry.
    pub verify_spiffe_id: Option<String>,
    /// Time allowed to connect and complete the handshake.
    pub connect_timeout: Duration,
    /// A connection with no bytes either way for this long is closed.
    pub idle: Duration,
    /// Most plaintext connections open at once.
    pub max_connections: usize,
    /// Load a private key that group or others can access.
    pub allow_insecure_permissions: bool,
}

impl ClientOptions {
    /// Options with the default timeouts and limits.
    pub fn new(listen: String, target: String, cert: PathBuf, key: PathBuf, ca: PathBuf) -> Self {
        ClientOptions {
            listen,
            target,
            cert,
            key,
            ca,
            sni: None,
            verify_spiffe_id: None,
            connect_timeout: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            max_connections: 1024,
            allow_insecure_permissions: false,
        }
    }

    /// The name the target's certificate is verified against.
    pub fn server_name(&self) -> Result<ServerName<'static>, Error> {
        let name = match &self.sni {
            Some(s) => s.clone(),
            None => target_host(&self.target)?,
        };
        ServerName::try_from(name.clone())
            .map_err(|e| Error::Config(format!("server name {name:?}: {e}")))
    }

    fn pattern(&self) -> Result<Option<SpiffeIdPattern>, Error> {
        self.verify_spiffe_id
            .as_deref()
            .map(|p| {
                SpiffeIdPattern::from_str(p)
                    .map_err(|e| Error::Config(format!("--verify-spiffe-id {p:?}: {e}")))
            })
            .transpose()
    }

    /// Reads the files and builds the TLS configuration (TLS 1.3, client
    /// certificate, roots from `ca`, optional SPIFFE ID check).
    pub fn tls_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let roots = Arc::new(root_store(&self.ca)?);
        let webpki = ServerVerifier::webpki(roots)
            .map_err(|e| Error::Config(format!("{}: {e}", self.ca.display())))?;
        let verifier = match self.pattern()? {
            Some(pattern) => webpki.with_check(Arc::new(CheckSpiffeId { pattern })),
            None => webpki,
        };
        let cert = ClientCert::Fixed(
            read_certs(&self.cert)?,
            read_key(&self.key, self.allow_insecure_permissions)?,
        );
        let config = client_config(ServerAuth::Verifier(Arc::new(verifier)), cert)
            .map_err(|e| Error::Config(format!("client certificate: {e}")))?;
        Ok(Arc::new(config))
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn target_host(target: &str) -> Result<String, Error> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("--target {target:?}: expected HOST:PORT")))?;
    if port.parse::<u16>().is_err() || host.is_empty() {
        return Err(Error::Config(format!(
            "--target {target:?}: expected HOST:PORT"
        )));
    }
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned())
}

/// After the standard WebPKI server check, the leaf's SPIFFE ID against a
/// pattern. Failing here aborts the handshake before the client
/// certificate is sent to a server that is not the expected workload.
#[derive(Debug)]
struct CheckSpiffeId {
    pattern: SpiffeIdPattern,
}

/// Why a target was refused.
#[derive(Debug, thiserror::Error)]
#[error("the target's SPIFFE ID {found} does not match --verify-spiffe-id {wanted}")]
struct SpiffeMismatch {
    found: String,
    wanted: String,
}

impl ServerCheck for CheckSpiffeId {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let found = CertInfo::from_der(end_entity, OffsetDateTime::now_utc())
            .ok()
            .and_then(|info| info.spiffe_id);
        let matches = found
            .as_deref()
            .and_then(|s| s.parse::<SpiffeId>().ok())
            .is_some_and(|id| self.pattern.matches(&id));
        if !matches {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(SpiffeMismatch {
                    found: found.unwrap_or_else(|| "(none)".into()),
                    wanted: self.pattern.to_string(),
                })),
            )));
        }
        Ok(())
    }
}

/// A handshake error for the log; a SPIFFE ID mismatch in its own words
/// (rustls would print the wrapped error's `Debug`).
fn handshake_error(e: &std::io::Error) -> String {
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) = tls
    {
        return inner.to_string();
    }
    e.to_string()
}

/// Live state: the options and the current TLS configuration.
struct Outbound {
    options: ClientOptions,
    server_name: ServerName<'static>,
    tls: ArcSwap<ClientConfig>,
}

impl Outbound {
    /// Rebuilds the client configuration from the files; whether it worked.
    fn reload(&self) -> bool {
        match self.options.tls_config() {
            Ok(tls) => {
                self.tls.store(tls);
                tracing::info!("client credentials reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "reload rejected; the previous credentials stay in force");
                false
            }
        }
    }

    async fn connection(&self, plain: TcpStream, peer: SocketAddr) {
        let connector = TlsConnector::from(self.tls.load_full());
        let target = &self.options.target;
        let connect = async {
            let tcp = TcpStream::connect(target)
                .await
                .map_err(|e| format!("connecting to {target}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake with {target}: {}", handshake_error(&e)))
        };
        let tls = match tokio::time::timeout(self.options.connect_timeout, connect).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(reason)) => {
                tracing::warn!(%peer, %reason, "refusing the connection: target not usable");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, %target, "refusing the connection: target timed out");
                return;
            }
        };
        tracing::debug!(%peer, %target, "connected");
        match pipe(plain, tls, self.options.idle).await {
            Ok(PipeEnd::Idle) => tracing::debug!(%peer, "idle: closed"),
            Ok(PipeEnd::Closed { a_to_b, b_to_a }) => {
                tracing::debug!(%peer, sent = a_to_b, received = b_to_a, "closed");
            }
            Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        }
    }
}

/// Listens on `options.listen` and carries each connection to the target
/// over mTLS until `shutdown` resolves; `on_ready` gets the bound address.
/// Each message on `reload` (SIGHUP) re-reads the credentials, as does a
/// change to the certificate, key or CA file.
pub async fn run(
    options: ClientOptions,
    on_ready: impl FnOnce(SocketAddr),
    mut reload: tokio::sync::mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let state = Arc::new(Outbound {
        server_name: options.server_name()?,
        tls: ArcSwap::new(options.tls_config()?),
        options,
    });
    let listener = TcpListener::bind(&state.options.listen)
        .await
        .map_err(|source| Error::Io {
            context: format!("binding {}", state.options.listen),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Io {
        context: "listener address".into(),
        source,
    })?;
    let _watcher = watch(state.clone());
    let slots = Arc::new(Semaphore::new(state.options.max_connections.max(1)));
    let mut tasks = JoinSet::new();
    on_ready(bound);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = reload.recv() => { state.reload(); }
            accepted = listener.accept() => {
                let (plain, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing");
                    continue;
                };
                let _ = plain.set_nodelay(true);
                let state = state.clone();
                tasks.spawn(async move {
                    state.connection(plain, peer).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    tracing::info!("shutting down");
    tasks.abort_all();
    Ok(())
}

/// Reloads, debounced, when the certificate, key or CA file changes.
fn watch(state: Arc<Outbound>) -> Option<ward_tls::watch::FileWatcher> {
    let o = &state.options;
    let files: Vec<_> = [&o.cert, &o.key, &o.ca].into_iter().cloned().collect();
    ward_tls::watch::watch_files(files, move || state.reload())
}

#[cfg(test)]
mod tests;
