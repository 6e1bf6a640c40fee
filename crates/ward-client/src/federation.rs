//! SPIFFE federation: following another trust domain's bundle endpoint
//! (SPIFFE Trust Domain and Bundle specification, `https_web` profile).
//!
//! A [`Follower`] fetches the partner's bundle (a JWK set) over HTTPS,
//! verifying the endpoint's certificate against the configured `ca_bundle`
//! (a private CA) or the web PKI roots, and publishes it on a
//! `watch` channel whenever it changes. It fetches again after the bundle's
//! `spiffe_refresh_hint`, clamped to [`Refresh`]'s bounds. An answer that
//! is not a `200 OK`, is larger than [`MAX_BUNDLE_LEN`], is not a SPIFFE
//! bundle, or carries an unusable root is refused with a log line naming
//! the trust domain and the reason, and the last good bundle stays.
//!
//! Must never: let a bad answer replace a good bundle, follow a redirect,
//! or read an unbounded answer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use ward_pki::TrustDomain;
use ward_pki::jwt::{self, JwkSet};
use ward_tls::http::{HttpClient, Pooling};

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

/// One federation relationship: a trust domain and where its bundle is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The partner trust domain.
    pub trust_domain: TrustDomain,
    /// Its bundle endpoint (`https://…`).
    pub url: String,
    /// Roots for the endpoint's TLS certificate; web PKI roots when `None`.
    pub ca_bundle: Option<PathBuf>,
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
    /// only on configuration errors (URL, `ca_bundle` file).
    pub fn spawn(endpoint: Endpoint, refresh: Refresh) -> Result<Follower, FederationError> {
        let client = client_for(&endpoint)?;
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(follow(client, endpoint.clone(), refresh, tx));
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

fn client_for(endpoint: &Endpoint) -> Result<HttpClient, FederationError> {
    let uri: hyper::Uri = endpoint.url.parse().map_err(|e| {
        FederationError::Config(format!("bundle_endpoint_url {:?}: {e}", endpoint.url))
    })?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(FederationError::Config(format!(
            "bundle_endpoint_url {:?}: must be an https:// URL",
            endpoint.url
        )));
    }
    let mut roots = RootCertStore::empty();
    match &endpoint.ca_bundle {
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

/// Fetches and checks the bundle once.
async fn fetch_once(
    client: &HttpClient,
    endpoint: &Endpoint,
) -> Result<FederatedBundle, FederationError> {
    let fetch_err = |reason: String| FederationError::Fetch {
        url: endpoint.url.clone(),
        reason,
    };
    let req = Request::get(endpoint.url.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| fetch_err(e.to_string()))?;
    let fetched = client
        .fetch(req, MAX_BUNDLE_LEN, Some(FETCH_TIMEOUT))
        .await
        .map_err(|e| fetch_err(e.to_string()))?;
    if fetched.status != StatusCode::OK {
        return Err(fetch_err(format!("status {}", fetched.status)));
    }
    parse_bundle(&endpoint.trust_domain, &fetched.body).map_err(|reason| FederationError::Bundle {
        url: endpoint.url.clone(),
        reason,
    })
}

async fn follow(
    client: HttpClient,
    endpoint: Endpoint,
    refresh: Refresh,
    tx: watch::Sender<Option<Arc<FederatedBundle>>>,
) {
    loop {
        let wait = match fetch_once(&client, &endpoint).await {
            Ok(bundle) => {
                let wait = refresh.interval(bundle.set.spiffe_refresh_hint);
                let changed = tx.send_if_modified(|slot| {
                    if slot.as_deref() == Some(&bundle) {
                        return false;
                    }
                    tracing::info!(
                        trust_domain = %endpoint.trust_domain,
                        roots = bundle.roots.len(),
                        sequence = ?bundle.set.spiffe_sequence,
                        "federated bundle updated"
                    );
                    *slot = Some(Arc::new(bundle));
                    true
                });
                let _ = changed;
                wait
            }
            Err(e) => {
                tracing::warn!(
                    trust_domain = %endpoint.trust_domain,
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
mod tests {
    use super::*;

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
}
