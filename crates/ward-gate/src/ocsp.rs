//! OCSP stapling for the gate's own server certificates (RFC 6960, RFC 6066
//! status_request).
//!
//! Each distinct served chain gets one [`Staple`]: the rustls
//! `CertifiedKey` every handshake is answered with, and, when the leaf
//! names an OCSP responder (AIA) and its issuer is in the chain, a task
//! that fetches the certificate's status, validates it (signed by the
//! issuer or by a delegated responder the issuer certified for OCSP
//! signing; CertID, status good, sane thisUpdate/nextUpdate) and swaps in a
//! `CertifiedKey` carrying the response. The response is refreshed at half
//! its validity; when the responder fails, the last good response stays
//! until its nextUpdate, then stapling stops, counted and logged.
//! Staples are keyed by chain and key, so a reload that keeps a certificate
//! keeps its staple, and a new certificate is fetched anew.
//!
//! A staple is only ever a response that validated; nothing else is sent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use ward_tls::credentials::Credentials;
use ward_tls::http::{FetchError, HttpClient, Pooling};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use ward_pki::ocsp::{self, Query};

use crate::metrics::GateMetrics;

mod validate;

use self::validate::{Good, Refused, refused, validate};

/// Largest OCSP response accepted.
const MAX_RESPONSE: u64 = 64 * 1024;
/// Time allowed for one OCSP exchange.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Allowed clock skew on thisUpdate.
const SKEW_SECONDS: i64 = 300;
/// Retry delays after a failure: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// One served chain and its stapled OCSP response: the credentials every
/// handshake of the tenants serving this chain is answered from, and the
/// task that keeps their staple fresh.
#[derive(Debug)]
pub struct Staple {
    credentials: Arc<Credentials>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Staple {
    fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Staple {
            credentials: Arc::new(Credentials::of(Arc::new(key))),
            task: Mutex::new(None),
        })
    }

    /// A staple that never staples (no stapler: `--check-config`).
    pub fn fixed(key: CertifiedKey) -> Arc<Self> {
        Self::new(key)
    }

    /// The credentials handshakes are answered from (the rustls resolver).
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.clone()
    }

    /// The DER OCSP response stapled now, if any.
    pub fn ocsp(&self) -> Option<Vec<u8>> {
        self.credentials.ocsp_staple()
    }

    fn set_ocsp(&self, ocsp: Option<Vec<u8>>) {
        self.credentials.set_ocsp_staple(ocsp);
    }

    fn abort(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

/// Every staple of the gate, by chain and key.
#[derive(Debug)]
pub struct Stapler {
    metrics: GateMetrics,
    staples: Mutex<HashMap<[u8; 32], Arc<Staple>>>,
}

/// Identifies a chain and its key.
pub type StapleId = [u8; 32];

fn staple_id(chain: &[CertificateDer<'_>], key: &CertifiedKey) -> StapleId {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for c in chain {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c);
    }
    if let Some(spki) = key.key.public_key() {
        ctx.update(spki.as_ref());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Stapler {
    /// A stapler reporting into `metrics`.
    pub fn new(metrics: GateMetrics) -> Arc<Self> {
        Arc::new(Stapler {
            metrics,
            staples: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StapleId, Arc<Staple>>> {
        self.staples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The staple for `key` (its chain and signing key), created (and its
    /// OCSP task started when `enabled` and the leaf names a responder) if
    /// this chain is new. `tenant` labels metrics and logs.
    pub fn staple(
        &self,
        tenant: &str,
        key: CertifiedKey,
        enabled: bool,
    ) -> (StapleId, Arc<Staple>) {
        let id = staple_id(&key.cert, &key);
        let mut staples = self.lock();
        if let Some(s) = staples.get(&id) {
            return (id, s.clone());
        }
        let target = if enabled {
            match Target::of(&key.cert) {
                Ok(t) => t,
                Err(why) => {
                    tracing::warn!(tenant, %why, "OCSP stapling off for this certificate");
                    None
                }
            }
        } else {
            None
        };
        let staple = Staple::new(key);
        if let Some(target) = target
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            tracing::info!(tenant, url = %target.url, "OCSP stapling: fetching the certificate's status");
            let task = handle.spawn(run(
                staple.clone(),
                target,
                tenant.to_owned(),
                self.metrics.clone(),
            ));
            *staple.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        staples.insert(id, staple.clone());
        (id, staple)
    }

    /// Forgets (and stops) every staple not in `keep`.
    pub fn retain(&self, keep: &HashSet<StapleId>) {
        self.lock().retain(|id, s| {
            let kept = keep.contains(id);
            if !kept {
                s.abort();
            }
            kept
        });
    }

    /// Stops every task.
    pub fn shutdown(&self) {
        for s in self.lock().values() {
            s.abort();
        }
    }
}

/// What to ask and whom.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    request: Vec<u8>,
    query: Query,
    /// The issuer certificate (DER).
    issuer: Vec<u8>,
}

fn err<E: std::fmt::Display>(context: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{context}: {e}")
}

impl Target {
    /// The leaf's OCSP responder and the request for it; `None` when the
    /// leaf names no responder.
    fn of(chain: &[CertificateDer<'_>]) -> Result<Option<Self>, String> {
        let leaf_der = chain.first().ok_or("empty chain")?;
        let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(err("the leaf"))?;
        let url = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityInfoAccess(aia) => aia.accessdescs.iter().find_map(|d| {
                    match (&d.access_location, d.access_method.to_id_string().as_str()) {
                        (GeneralName::URI(u), "1.3.6.1.5.5.7.48.1")
                            if u.starts_with("http://") || u.starts_with("https://") =>
                        {
                            Some((*u).to_owned())
                        }
                        _ => None,
                    }
                }),
                _ => None,
            });
        let Some(url) = url else { return Ok(None) };
        let issuer_der = chain
            .get(1)
            .ok_or("the chain holds no issuer certificate to name in the OCSP request")?;
        let query = Query::for_certificate(leaf_der, issuer_der)
            .map_err(err("the second certificate of the chain"))?;
        let request = ocsp::build_request(std::slice::from_ref(&query), None)
            .map_err(err("encoding the OCSP request"))?;
        Ok(Some(Target {
            url,
            request,
            query,
            issuer: issuer_der.to_vec(),
        }))
    }
}

/// The HTTP client of one stapling task.
fn client() -> Option<HttpClient> {
    // One request every few minutes: a pooled connection would only pin a
    // responder behind a load balancer.
    HttpClient::new(rustls::RootCertStore::empty(), Pooling::Unpooled).ok()
}

/// POSTs the request; the response body (size-limited).
async fn fetch(client: &HttpClient, target: &Target) -> Result<Vec<u8>, Refused> {
    let failed = refused("fetch_failed");
    let req = hyper::Request::post(&target.url)
        .header(header::CONTENT_TYPE, "application/ocsp-request")
        .header(header::ACCEPT, "application/ocsp-response")
        .body(Full::new(Bytes::from(target.request.clone())))
        .map_err(|e| failed(format!("building the request: {e}")))?;
    let url = &target.url;
    let fetched = client
        .fetch(req, MAX_RESPONSE, Some(FETCH_TIMEOUT))
        .await
        .map_err(|e| match e {
            FetchError::Body(_) | FetchError::TooLarge { .. } => {
                failed(format!("POST {url}: reading the response: {e}"))
            }
            _ => failed(format!("POST {url}: {e}")),
        })?;
    if fetched.status != hyper::StatusCode::OK {
        return Err(failed(format!("POST {url}: HTTP {}", fetched.status)));
    }
    Ok(fetched.body.to_vec())
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s.max(1)).unwrap_or(1))
}

/// Fetch, validate, staple, refresh; on failure keep the last good
/// response until its nextUpdate.
async fn run(staple: Arc<Staple>, target: Target, tenant: String, metrics: GateMetrics) {
    let Some(client) = client() else {
        tracing::error!(tenant, "OCSP stapling: no HTTP client");
        return;
    };
    let mut good: Option<Good> = None;
    let mut retry = RETRY_FIRST;
    loop {
        let outcome = match fetch(&client, &target).await {
            Ok(der) => validate(&target, &der, now_unix()),
            Err(e) => Err(e),
        };
        let now = now_unix();
        let delay = match outcome {
            Ok(g) => {
                metrics.ocsp_staple.with(&[&tenant, "stapled"]).inc();
                metrics.ocsp_stapled.with(&[&tenant]).set(1);
                if good.is_none() {
                    tracing::info!(tenant, next_update = g.next_update, "OCSP response stapled");
                }
                staple.set_ocsp(Some(g.der.clone()));
                retry = RETRY_FIRST;
                let half = (g.next_update - g.this_update) / 2;
                let at = (g.this_update + half).min(g.next_update - 1);
                good = Some(g);
                secs(at - now)
            }
            Err(r) => {
                metrics.ocsp_staple.with(&[&tenant, r.label]).inc();
                let delay = retry;
                retry = (retry * 2).min(RETRY_MAX);
                match &good {
                    Some(g) => {
                        tracing::warn!(tenant, reason = r.label, error = %r.why, next_update = g.next_update, "OCSP refresh failed; keeping the last good response until its nextUpdate");
                        delay.min(secs(g.next_update - now))
                    }
                    None => {
                        tracing::warn!(tenant, reason = r.label, error = %r.why, "OCSP response not stapled");
                        delay
                    }
                }
            }
        };
        if let Some(g) = &good {
            metrics
                .ocsp_next_update
                .with(&[&tenant])
                .set(g.next_update - now);
        }
        tokio::time::sleep(delay).await;
        if let Some(g) = &good
            && now_unix() >= g.next_update
        {
            // Not refreshed in time: a stale staple is worse than none.
            staple.set_ocsp(None);
            good = None;
            retry = RETRY_FIRST;
            metrics.ocsp_staple.with(&[&tenant, "expired"]).inc();
            metrics.ocsp_stapled.with(&[&tenant]).set(0);
            tracing::error!(
                tenant,
                "OCSP response past its nextUpdate and not refreshed: stopped stapling"
            );
        }
    }
}

#[cfg(test)]
mod tests;
