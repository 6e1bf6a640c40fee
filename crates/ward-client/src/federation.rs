//! SPIFFE federation: following another trust domain's bundle endpoint
//! (SPIFFE Trust Domain and Bundle specification, `https_web` and
//! `https_spiffe` profiles).
//!
//! A [`Follower`] fetches the partner's bundle (a JWK set) over HTTPS and
//! publishes it on a `watch` channel whenever it changes. How the endpoint
//! is authenticated is its [`Profile`]:
//!
//! - `https_web`: the endpoint's certificate is verified against the
//!   configured `ca_bundle` (a private CA) or the web PKI roots, with its
//!   server name;
//! - `https_spiffe`: the endpoint presents an X509-SVID; it must chain to
//!   the roots of the partner's bundle as this follower holds it (the
//!   bootstrap bundle until the first fetch, then the last bundle fetched,
//!   so a partner's root change is followed) and carry exactly the
//!   configured `endpoint_spiffe_id`. No server name is checked.
//!
//! It fetches again after the bundle's `spiffe_refresh_hint`, clamped to
//! [`Refresh`]'s bounds. An answer that is not a `200 OK`, is larger than
//! [`MAX_BUNDLE_LEN`], is not a SPIFFE bundle, or carries an unusable root
//! is refused with a log line naming the trust domain and the reason, and
//! the last good bundle stays.
//!
//! Must never: let a bad answer replace a good bundle, follow a redirect,
//! read an unbounded answer, or take an `https_spiffe` endpoint's word
//! without its SVID chaining to the partner's own roots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use rustls::{CertificateError, OtherError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::sync::watch;
use ward_pki::jwt::{self, JwkSet};
use ward_pki::{SpiffeId, TrustDomain};
use ward_tls::config::ServerAuth;
use ward_tls::http::{HttpClient, Pooling};
use ward_tls::verifier::{ServerCheck, ServerVerifier};

/// Largest bundle endpoint answer read.
pub const MAX_BUNDLE_LEN: u64 = jwt::MAX_JWKS_LEN as u64;
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Refresh interval when the bundle names none.
const DEFAULT_HINT: Duration = Duration::from_secs(300);

/// Bounds on the refresh interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    /// Shortest interval (also the retry delay after a failure).
    pub floor: Duration,
    /// Longest interval.
    pub ceiling: Duration,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            floor: Duration::from_secs(5),
            ceiling: Duration::from_secs(3600),
        }
    }
}

impl Refresh {
    /// The wait before the next fetch for a bundle's `spiffe_refresh_hint`.
    pub fn interval(&self, hint: Option<u64>) -> Duration {
        let hint = hint.map_or(DEFAULT_HINT, Duration::from_secs);
        hint.min(self.ceiling).max(self.floor)
    }
}

/// How a bundle endpoint is authenticated (the SPIFFE endpoint profile).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `https_web`: a TLS server certificate for the URL's host.
    HttpsWeb {
        /// Roots for the endpoint's certificate; web PKI roots when `None`.
        ca_bundle: Option<PathBuf>,
    },
    /// `https_spiffe`: an X509-SVID of the partner trust domain.
    HttpsSpiffe {
        /// The SPIFFE ID the endpoint's SVID must carry.
        endpoint_spiffe_id: SpiffeId,
        /// The partner's bundle obtained out of band (PEM roots or a SPIFFE
        /// bundle JWK set): authenticates the first fetch.
        bundle: PathBuf,
    },
}

impl Profile {
    /// The profile's name in configuration files (`https_web`, `https_spiffe`).
    pub fn name(&self) -> &'static str {
        match self {
            Profile::HttpsWeb { .. } => "https_web",
            Profile::HttpsSpiffe { .. } => "https_spiffe",
        }
    }
}

/// One federation relationship: a trust domain and where its bundle is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The partner trust domain.
    pub trust_domain: TrustDomain,
    /// Its bundle endpoint (`https://…`).
    pub url: String,
    /// How the endpoint is authenticated.
    pub profile: Profile,
}

impl Endpoint {
    /// An `https_web` endpoint.
    pub fn web(
        trust_domain: TrustDomain,
        url: impl Into<String>,
        ca_bundle: Option<PathBuf>,
    ) -> Self {
        Endpoint {
            trust_domain,
            url: url.into(),
            profile: Profile::HttpsWeb { ca_bundle },
        }
    }

    /// An `https_spiffe` endpoint.
    pub fn spiffe(
        trust_domain: TrustDomain,
        url: impl Into<String>,
        endpoint_spiffe_id: SpiffeId,
        bundle: PathBuf,
    ) -> Self {
        Endpoint {
            trust_domain,
            url: url.into(),
            profile: Profile::HttpsSpiffe {
                endpoint_spiffe_id,
                bundle,
            },
        }
    }

    /// Checks the URL and the profile's settings, reading the files they
    /// name, without contacting the endpoint.
    pub fn validate(&self) -> Result<(), FederationError> {
        Auth::new(self).map(|_| ())
    }
}

/// A partner's bundle as last fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedBundle {
    /// Its trust domain.
    pub trust_domain: TrustDomain,
    /// The X.509 roots (DER), in the bundle's order.
    pub roots: Vec<CertificateDer<'static>>,
    /// The whole bundle document.
    pub set: JwkSet,
}

/// Why a bundle endpoint answer was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The fetch failed (connection, TLS, status, size, time).
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The endpoint.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer is not a usable SPIFFE bundle.
    #[error("bundle from {url}: {reason}")]
    Bundle {
        /// The endpoint.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks and splits a bundle document.
pub fn parse_bundle(trust_domain: &TrustDomain, bytes: &[u8]) -> Result<FederatedBundle, String> {
    if bytes.len() as u64 > MAX_BUNDLE_LEN {
        return Err(format!(
            "{} bytes is more than {MAX_BUNDLE_LEN}",
            bytes.len()
        ));
    }
    let set = JwkSet::parse(bytes).map_err(|e| e.to_string())?;
    let roots = jwt::x509_roots(&set).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(roots.len());
    for der in roots {
        let cert = CertificateDer::from(der);
        webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| format!("an x509-svid root is not a usable certificate: {e:?}"))?;
        out.push(cert);
    }
    Ok(FederatedBundle {
        trust_domain: trust_domain.clone(),
        roots: out,
        set,
    })
}

/// Follows one partner's bundle endpoint until dropped.
#[derive(Debug)]
pub struct Follower {
    endpoint: Endpoint,
    rx: watch::Receiver<Option<Arc<FederatedBundle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Starts following `endpoint` (the first fetch starts at once). Fails
    /// only on configuration errors (URL, `ca_bundle` or bootstrap bundle
    /// file, an endpoint SPIFFE ID outside the trust domain).
    pub fn spawn(endpoint: Endpoint, refresh: Refresh) -> Result<Follower, FederationError> {
        let auth = Auth::new(&endpoint)?;
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(follow(auth, endpoint.clone(), refresh, tx));
        Ok(Follower { endpoint, rx, task })
    }

    /// The relationship followed.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The last good bundle, if any arrived yet.
    pub fn current(&self) -> Option<Arc<FederatedBundle>> {
        self.rx.borrow().clone()
    }

    /// Sees every change of the bundle.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<FederatedBundle>>> {
        self.rx.clone()
    }
}

/// Reads PEM certificates or a SPIFFE bundle (JWK set) from `path`: the
/// roots of a partner trust domain obtained out of band.
pub fn read_bundle_file(
    trust_domain: &TrustDomain,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, FederationError> {
    let bad = |e: &dyn std::fmt::Display| {
        FederationError::Config(format!("bundle {}: {e}", path.display()))
    };
    let bytes = std::fs::read(path).map_err(|e| bad(&e))?;
    let roots = if bytes.trim_ascii_start().starts_with(b"{") {
        parse_bundle(trust_domain, &bytes)
            .map_err(|e| bad(&e))?
            .roots
    } else {
        let certs = ward_pki::pem::parse_certs(&bytes).map_err(|e| bad(&e))?;
        for c in &certs {
            webpki::anchor_from_trusted_cert(c).map_err(|e| bad(&format!("{e:?}")))?;
        }
        certs
    };
    if roots.is_empty() {
        return Err(bad(&"no X.509 roots"));
    }
    Ok(roots)
}

/// How one endpoint is reached and authenticated.
enum Auth {
    /// `https_web`: one client for every fetch.
    Web(Box<HttpClient>),
    /// `https_spiffe`: the roots in force for the partner trust domain.
    Spiffe {
        id: SpiffeId,
        trusted: Vec<CertificateDer<'static>>,
    },
}

impl Auth {
    fn new(endpoint: &Endpoint) -> Result<Auth, FederationError> {
        let uri: hyper::Uri = endpoint.url.parse().map_err(|e| {
            FederationError::Config(format!("bundle_endpoint_url {:?}: {e}", endpoint.url))
        })?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(FederationError::Config(format!(
                "bundle_endpoint_url {:?}: must be an https:// URL",
                endpoint.url
            )));
        }
        match &endpoint.profile {
            Profile::HttpsWeb { ca_bundle } => {
                web_client(ca_bundle.as_deref()).map(|c| Auth::Web(Box::new(c)))
            }
            Profile::HttpsSpiffe {
                endpoint_spiffe_id,
                bundle,
            } => {
                if endpoint_spiffe_id.trust_domain() != endpoint.trust_domain {
                    return Err(FederationError::Config(format!(
                        "endpoint_spiffe_id {endpoint_spiffe_id} is not in trust domain {}",
                        endpoint.trust_domain
                    )));
                }
                Ok(Auth::Spiffe {
                    id: endpoint_spiffe_id.clone(),
                    trusted: read_bundle_file(&endpoint.trust_domain, bundle)?,
                })
            }
        }
    }

    /// The client for the next fetch, and where an `https_spiffe` refusal
    /// reason lands.
    fn client(&self, endpoint: &Endpoint) -> Result<(HttpClient, Option<Arc<SvidCheck>>), String> {
        match self {
            Auth::Web(client) => Ok(((**client).clone(), None)),
            Auth::Spiffe { id, trusted } => {
                let check = Arc::new(SvidCheck {
                    trust_domain: endpoint.trust_domain.clone(),
                    id: id.clone(),
                    anchors: trusted
                        .iter()
                        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
                        .map(|a| a.to_owned())
                        .collect(),
                    refusal: Mutex::new(None),
                });
                let verifier = ServerVerifier::by_check(check.clone());
                let client = HttpClient::with_server_auth(
                    ServerAuth::Verifier(Arc::new(verifier)),
                    Pooling::Unpooled,
                )
                .map_err(|e| format!("TLS client: {e}"))?;
                Ok((client, Some(check)))
            }
        }
    }

    /// Takes a new good bundle: its roots authenticate the next
    /// `https_spiffe` fetch.
    fn accept(&mut self, bundle: &FederatedBundle) {
        if let Auth::Spiffe { trusted, .. } = self {
            trusted.clone_from(&bundle.roots);
        }
    }
}

fn web_client(ca_bundle: Option<&Path>) -> Result<HttpClient, FederationError> {
    let mut roots = RootCertStore::empty();
    match ca_bundle {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                FederationError::Config(format!("ca_bundle {}: {e}", path.display()))
            })?;
            let certs = ward_pki::pem::parse_certs(&pem).map_err(|e| {
                FederationError::Config(format!("ca_bundle {}: {e}", path.display()))
            })?;
            for c in certs {
                roots.add(c).map_err(|e| {
                    FederationError::Config(format!("ca_bundle {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(FederationError::Config(format!(
                    "ca_bundle {}: no certificates",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    HttpClient::new(roots, Pooling::Unpooled)
        .map_err(|e| FederationError::Config(format!("TLS client: {e}")))
}

/// The `https_spiffe` check of the endpoint's certificate: an X509-SVID
/// carrying exactly the expected SPIFFE ID, chaining to the partner's
/// roots as held now. Keeps the reason of a refusal for the log.
struct SvidCheck {
    trust_domain: TrustDomain,
    id: SpiffeId,
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    refusal: Mutex<Option<String>>,
}

impl std::fmt::Debug for SvidCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidCheck")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A refusal whose `Debug` is its text (rustls prints `Debug` of it).
struct Refused(String);

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl SvidCheck {
    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let found = match ward_pki::inspect::spiffe_id_of(end_entity) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(format!(
                    "the endpoint's certificate is not an X509-SVID (no SPIFFE ID; a web PKI certificate?), expected {}",
                    self.id
                ));
            }
            Err(e) => return Err(format!("the endpoint's certificate: {e}")),
        };
        if self.anchors.is_empty() {
            return Err(format!(
                "the bundle held for {} has no X.509 root to authenticate its endpoint",
                self.trust_domain
            ));
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| format!("the endpoint's certificate: {e:?}"))?;
        cert.verify_for_usage(
            ward_tls::provider().signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            format!(
                "the endpoint's SVID {found} does not chain to a root of {}'s bundle ({e:?})",
                self.trust_domain
            )
        })?;
        if found != self.id {
            return Err(format!(
                "the endpoint's SPIFFE ID is {found}, expected endpoint_spiffe_id {}",
                self.id
            ));
        }
        Ok(())
    }

    fn take_refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ServerCheck for SvidCheck {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.judge(end_entity, intermediates, now)
            .map_err(|reason| {
                *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    Refused(reason),
                ))))
            })
    }
}

/// Fetches and checks the bundle once.
async fn fetch_once(auth: &Auth, endpoint: &Endpoint) -> Result<FederatedBundle, FederationError> {
    let fetch_err = |reason: String| FederationError::Fetch {
        url: endpoint.url.clone(),
        reason,
    };
    let (client, check) = auth.client(endpoint).map_err(fetch_err)?;
    let req = Request::get(endpoint.url.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| fetch_err(e.to_string()))?;
    let fetched = match client.fetch(req, MAX_BUNDLE_LEN, Some(FETCH_TIMEOUT)).await {
        Ok(f) => f,
        Err(e) => {
            // An https_spiffe refusal in its own words.
            let reason = check.and_then(|c| c.take_refusal()).map_or_else(
                || e.to_string(),
                |r| format!("{} profile: {r}", "https_spiffe"),
            );
            return Err(fetch_err(reason));
        }
    };
    if fetched.status != StatusCode::OK {
        return Err(fetch_err(format!("status {}", fetched.status)));
    }
    parse_bundle(&endpoint.trust_domain, &fetched.body).map_err(|reason| FederationError::Bundle {
        url: endpoint.url.clone(),
        reason,
    })
}

async fn follow(
    mut auth: Auth,
    endpoint: Endpoint,
    refresh: Refresh,
    tx: watch::Sender<Option<Arc<FederatedBundle>>>,
) {
    loop {
        let wait = match fetch_once(&auth, &endpoint).await {
            Ok(bundle) => {
                let wait = refresh.interval(bundle.set.spiffe_refresh_hint);
                auth.accept(&bundle);
                tx.send_if_modified(|slot| {
                    if slot.as_deref() == Some(&bundle) {
                        return false;
                    }
                    tracing::info!(
                        trust_domain = %endpoint.trust_domain,
                        profile = endpoint.profile.name(),
                        roots = bundle.roots.len(),
                        sequence = ?bundle.set.spiffe_sequence,
                        "federated bundle updated"
                    );
                    *slot = Some(Arc::new(bundle));
                    true
                });
                wait
            }
            Err(e) => {
                tracing::warn!(
                    trust_domain = %endpoint.trust_domain,
                    profile = endpoint.profile.name(),
                    error = %e,
                    "federated bundle refused; the last good bundle stays"
                );
                refresh.floor
            }
        };
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose, SanType,
    };
    use rustls::ServerConfig;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    #[test]
    fn refresh_interval_is_clamped() {
        let r = Refresh {
            floor: Duration::from_secs(1),
            ceiling: Duration::from_secs(60),
        };
        assert_eq!(r.interval(Some(0)), Duration::from_secs(1));
        assert_eq!(r.interval(Some(30)), Duration::from_secs(30));
        assert_eq!(r.interval(Some(u64::MAX)), Duration::from_secs(60));
        assert_eq!(r.interval(None), Duration::from_secs(60));
    }

    #[test]
    fn bad_bundles_are_refused() {
        let td: TrustDomain = "partner.example".parse().unwrap();
        assert!(parse_bundle(&td, b"not json").is_err());
        let big = vec![b' '; MAX_BUNDLE_LEN as usize + 1];
        assert!(parse_bundle(&td, &big).unwrap_err().contains("more than"));
        let bad_root = br#"{"keys":[{"kty":"EC","use":"x509-svid","x5c":["AAAA"]}]}"#;
        assert!(parse_bundle(&td, bad_root).is_err());
        let empty = parse_bundle(&td, br#"{"keys":[]}"#).unwrap();
        assert!(empty.roots.is_empty());
    }

    fn root(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    /// A server certificate with `san` (a SPIFFE ID URI, or a DNS name).
    fn server_config(issuer: &CertifiedIssuer<'static, KeyPair>, san: &str) -> Arc<ServerConfig> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![if san.starts_with("spiffe://") {
            SanType::URI(san.try_into().unwrap())
        } else {
            SanType::DnsName(san.try_into().unwrap())
        }];
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap().der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Arc::new(
            ServerConfig::builder_with_provider(ward_tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap(),
        )
    }

    /// What a test bundle endpoint serves: its TLS configuration and the
    /// answer body, both swappable while it runs.
    pub(crate) type Served = Arc<Mutex<(Arc<ServerConfig>, Vec<u8>)>>;

    /// A bundle endpoint at https://127.0.0.1:PORT/bundle answering every
    /// request with what `served` holds at the time; its URL and task.
    pub(crate) async fn serve_bundle(served: Served) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/bundle", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (config, body) = served.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = TlsAcceptor::from(config).accept(tcp).await else {
                        return;
                    };
                    let mut seen = Vec::new();
                    let mut buf = [0_u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (url, task)
    }

    /// A bundle endpoint whose certificate and answer the test swaps.
    async fn endpoint(served: Served) -> String {
        serve_bundle(served).await.0
    }

    fn bundle_of(roots: &[&CertifiedIssuer<'static, KeyPair>]) -> Vec<u8> {
        JwkSet {
            keys: roots
                .iter()
                .map(|r| jwt::x509_jwk(r.der()).unwrap())
                .collect(),
            spiffe_sequence: Some(1),
            spiffe_refresh_hint: Some(1),
        }
        .to_json()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_spiffe_endpoints_are_authenticated_by_their_svid_under_the_partner_roots() {
        let td: TrustDomain = "partner.example".parse().unwrap();
        let id: SpiffeId = "spiffe://partner.example/ward/ca".parse().unwrap();
        let (old, new, stranger) = (root("Old"), root("New"), root("Stranger"));
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = dir.path().join("partner.pem");
        std::fs::write(&bootstrap, old.pem()).unwrap();
        let served: Served = Arc::new(Mutex::new((
            server_config(&old, id.as_str()),
            bundle_of(&[&old, &new]),
        )));
        let url = endpoint(served.clone()).await;
        let ep = Endpoint::spiffe(td.clone(), url.clone(), id.clone(), bootstrap.clone());
        let mut auth = Auth::new(&ep).unwrap();

        // Bootstrapped with the old root: the endpoint's SVID under it passes.
        let first = fetch_once(&auth, &ep).await.unwrap();
        assert_eq!(first.roots, vec![old.der().clone(), new.der().clone()]);
        auth.accept(&first);

        // The partner moves its endpoint to the new root and drops the old
        // one: followed, because the last bundle fetched names the new root.
        *served.lock().unwrap() = (server_config(&new, id.as_str()), bundle_of(&[&new]));
        let second = fetch_once(&auth, &ep).await.unwrap();
        assert_eq!(second.roots, vec![new.der().clone()]);
        auth.accept(&second);

        // Each refusal says why.
        let refusal = |config: Arc<ServerConfig>| {
            let served = served.clone();
            let (auth, ep) = (&auth, &ep);
            async move {
                served.lock().unwrap().0 = config;
                fetch_once(auth, ep).await.unwrap_err().to_string()
            }
        };
        let e = refusal(server_config(&new, "spiffe://partner.example/other")).await;
        assert!(e.contains("SPIFFE ID is spiffe://partner.example/other, expected endpoint_spiffe_id spiffe://partner.example/ward/ca"), "{e}");
        let e = refusal(server_config(&stranger, id.as_str())).await;
        assert!(
            e.contains("does not chain to a root of partner.example's bundle"),
            "{e}"
        );
        // The old root was dropped by the partner: no longer trusted.
        let e = refusal(server_config(&old, id.as_str())).await;
        assert!(e.contains("does not chain"), "{e}");
        let e = refusal(server_config(&new, "localhost")).await;
        assert!(e.contains("not an X509-SVID"), "{e}");

        // Configuration errors: an ID of another trust domain, a missing
        // or empty bootstrap bundle.
        let other: SpiffeId = "spiffe://example.org/ward/ca".parse().unwrap();
        let bad = Endpoint::spiffe(td.clone(), url.clone(), other, bootstrap.clone());
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("not in trust domain")
        );
        let missing =
            Endpoint::spiffe(td.clone(), url.clone(), id.clone(), dir.path().join("nope"));
        assert!(missing.validate().is_err());
        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, br#"{"keys":[]}"#).unwrap();
        let e = Endpoint::spiffe(td.clone(), url.clone(), id.clone(), empty)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("no X.509 roots"), "{e}");
        // A SPIFFE bundle works as the bootstrap too.
        let json = dir.path().join("bundle.json");
        std::fs::write(&json, bundle_of(&[&new])).unwrap();
        let ep = Endpoint::spiffe(td, url, id, json);
        let auth = Auth::new(&ep).unwrap();
        *served.lock().unwrap() = (server_config(&new, ep_id(&ep)), bundle_of(&[&new]));
        assert!(fetch_once(&auth, &ep).await.is_ok());
    }

    fn ep_id(ep: &Endpoint) -> &str {
        match &ep.profile {
            Profile::HttpsSpiffe {
                endpoint_spiffe_id, ..
            } => endpoint_spiffe_id.as_str(),
            Profile::HttpsWeb { .. } => unreachable!(),
        }
    }
}
