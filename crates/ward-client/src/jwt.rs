//! JWT-SVIDs from the CA, cached per audience, and the CA's SPIFFE bundle.
//!
//! [`JwtSvids`] asks the CA (`POST /v1/jwt-svid`) over mTLS with the
//! current X.509-SVID of a [`crate::Rotator`], and hands out a cached token
//! until half of its lifetime has passed, so a busy caller costs the CA one
//! request per audience set every couple of minutes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use ward_api::{JwtSvidRequest, JwtSvidResponse, paths};
use ward_pki::jwt::{self, JwkSet};

use crate::ca::{CaClient, Identity};
use crate::{ClientError, Svid};

/// Most audience sets cached at once; past it, expired and then all
/// entries are dropped.
const MAX_CACHED: usize = 256;

/// A cached JWT-SVID.
#[derive(Clone, Debug)]
struct Cached {
    token: Arc<str>,
    spiffe_id: String,
    issued_at: i64,
    expiry: i64,
}

/// JWT-SVIDs for the identity of a rotator; cheap to clone.
#[derive(Clone)]
pub struct JwtSvids {
    ca_url: String,
    anchors: Vec<CertificateDer<'static>>,
    svid: watch::Receiver<Arc<Svid>>,
    cache: Arc<Mutex<HashMap<Vec<String>, Cached>>>,
}

impl std::fmt::Debug for JwtSvids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvids")
            .field("ca_url", &self.ca_url)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl JwtSvids {
    pub(crate) fn new(
        ca_url: String,
        anchors: Vec<CertificateDer<'static>>,
        svid: watch::Receiver<Arc<Svid>>,
    ) -> Self {
        JwtSvids {
            ca_url,
            anchors,
            svid,
            cache: Arc::default(),
        }
    }

    fn client(&self) -> Result<CaClient, ClientError> {
        let svid = self.svid.borrow().clone();
        if svid.is_expired(SystemTime::now()) {
            return Err(ClientError::Expired);
        }
        let identity = Identity {
            chain: svid.chain().to_vec(),
            key: svid.private_key(),
        };
        let anchors = crate::trust::followed_anchors(&self.anchors, svid.bundle());
        CaClient::new(&self.ca_url, &anchors, Some(identity))
    }

    /// A JWT-SVID for `audience` (one or more values), from the cache while
    /// less than half of its lifetime has passed, else fresh from the CA.
    pub async fn fetch(&self, audience: &[String]) -> Result<String, ClientError> {
        jwt::check_audience(audience).map_err(ClientError::Config)?;
        let mut key = audience.to_vec();
        key.sort();
        key.dedup();
        let now = unix_now();
        let current_id = self.svid.borrow().spiffe_id().to_string();
        if let Ok(cache) = self.cache.lock()
            && let Some(c) = cache.get(&key)
            && c.spiffe_id == current_id
            && now < c.issued_at + (c.expiry - c.issued_at) / 2
        {
            return Ok(c.token.to_string());
        }
        let answer: JwtSvidResponse = self
            .client()?
            .json(
                Method::POST,
                paths::JWT_SVID,
                Some(&JwtSvidRequest {
                    audience: key.clone(),
                    ttl_secs: None,
                }),
            )
            .await?;
        let claims = jwt::peek(&answer.token)
            .map_err(|e| ClientError::Protocol(format!("JWT-SVID from the CA: {e}")))?;
        if claims.spiffe_id.as_str() != current_id {
            return Err(ClientError::Protocol(format!(
                "the CA minted a JWT-SVID for {} instead of {current_id}",
                claims.spiffe_id
            )));
        }
        let cached = Cached {
            token: answer.token.into(),
            spiffe_id: current_id,
            issued_at: claims.issued_at.unwrap_or(now),
            expiry: claims.expiry,
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, c| c.expiry > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, cached.clone());
        }
        Ok(cached.token.to_string())
    }

    /// The CA's trust bundle in SPIFFE format (X.509 roots and JWT keys).
    pub async fn bundle(&self) -> Result<JwkSet, ClientError> {
        let (status, body) = self
            .client()?
            .send(Method::GET, paths::BUNDLE, None)
            .await?;
        if status != StatusCode::OK {
            return Err(ClientError::Protocol(format!(
                "GET {}: status {status}",
                paths::BUNDLE
            )));
        }
        JwkSet::parse(&body).map_err(|e| ClientError::Protocol(format!("the CA's bundle: {e}")))
    }
}
