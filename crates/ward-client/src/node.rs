//! Node-scoped issuance for node agents (attestation): SVIDs for the
//! registration entries the CA keeps for this agent's SPIFFE ID, obtained
//! with the agent's own certificate as the client identity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::Method;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use ward_api::{
    EntryList, EntryView, Issued, JwtSvidResponse, NodeJwtSvidRequest, NodeSignRequest, paths,
};
use ward_pki::{KeyType, SpiffeId};

use crate::csr::{key_and_csr, pkcs8};
use crate::{CaClient, ClientError, Identity, Svid};

/// Talks to the CA as a node agent.
#[derive(Clone)]
pub struct NodeClient {
    ca_url: String,
    anchors: Vec<CertificateDer<'static>>,
    own: watch::Receiver<Arc<Svid>>,
    key_type: KeyType,
    /// JWT-SVIDs per (SPIFFE ID, sorted audience set).
    jwts: Arc<Mutex<JwtCache>>,
}

/// JWT-SVIDs keyed by (SPIFFE ID, sorted audience set).
type JwtCache = HashMap<(String, Vec<String>), CachedJwt>;

/// Most (ID, audience set) pairs cached at once; past it, expired and then
/// all entries are dropped.
const MAX_CACHED_JWTS: usize = 1024;

/// A JWT-SVID minted for a workload, with its validity.
#[derive(Clone, Debug)]
struct CachedJwt {
    token: Arc<str>,
    issued_at: i64,
    expiry: i64,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("ca_url", &self.ca_url)
            .finish_non_exhaustive()
    }
}

impl NodeClient {
    pub(crate) fn new(
        ca_url: String,
        anchors: Vec<CertificateDer<'static>>,
        own: watch::Receiver<Arc<Svid>>,
        key_type: KeyType,
    ) -> Self {
        NodeClient {
            ca_url,
            anchors,
            own,
            key_type,
            jwts: Arc::default(),
        }
    }

    fn client(&self) -> Result<CaClient, ClientError> {
        let svid = self.own.borrow().clone();
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

    /// The registration entries the CA keeps for this node agent.
    pub async fn entries(&self) -> Result<Vec<EntryView>, ClientError> {
        let list: EntryList = self
            .client()?
            .json(Method::GET, paths::NODE_ENTRIES, None::<&()>)
            .await?;
        Ok(list.entries)
    }

    /// A new SVID (fresh key) for `id`, an entry of this node agent.
    pub async fn svid_for(&self, id: &SpiffeId) -> Result<Svid, ClientError> {
        let (key, csr) = key_and_csr(self.key_type)?;
        let issued: Issued = self
            .client()?
            .json(
                Method::POST,
                paths::NODE_SIGN,
                Some(&NodeSignRequest {
                    spiffe_id: id.to_string(),
                    csr,
                }),
            )
            .await?;
        let chain = ward_pki::pem::parse_certs(issued.chain.as_bytes())
            .map_err(|e| ClientError::Protocol(format!("chain: {e}")))?;
        let bundle = ward_pki::pem::parse_certs(issued.ca_bundle.as_bytes())
            .map_err(|e| ClientError::Protocol(format!("ca_bundle: {e}")))?;
        let svid = Svid::new(chain, pkcs8(&key)?, bundle, SystemTime::now())?;
        if svid.spiffe_id() != id {
            return Err(ClientError::Protocol(format!(
                "the CA issued {} instead of {id}",
                svid.spiffe_id()
            )));
        }
        Ok(svid)
    }

    /// A JWT-SVID for `id` (an entry of this node agent) and `audience`,
    /// from the cache while less than half of its lifetime has passed, else
    /// minted by the CA (`POST /v1/node/jwt-svid`).
    pub async fn jwt_svid(
        &self,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<String, ClientError> {
        ward_pki::jwt::check_audience(audience).map_err(ClientError::Config)?;
        let mut aud = audience.to_vec();
        aud.sort();
        aud.dedup();
        let key = (id.to_string(), aud);
        let now = unix_now();
        if let Ok(cache) = self.jwts.lock()
            && let Some(c) = cache.get(&key)
            && now < c.issued_at + (c.expiry - c.issued_at) / 2
        {
            return Ok(c.token.to_string());
        }
        let answer: JwtSvidResponse = self
            .client()?
            .json(
                Method::POST,
                paths::NODE_JWT_SVID,
                Some(&NodeJwtSvidRequest {
                    spiffe_id: key.0.clone(),
                    audience: key.1.clone(),
                    ttl_secs: None,
                }),
            )
            .await?;
        let claims = ward_pki::jwt::peek(&answer.token)
            .map_err(|e| ClientError::Protocol(format!("JWT-SVID from the CA: {e}")))?;
        if &claims.spiffe_id != id {
            return Err(ClientError::Protocol(format!(
                "the CA minted a JWT-SVID for {} instead of {id}",
                claims.spiffe_id
            )));
        }
        let cached = CachedJwt {
            token: answer.token.into(),
            issued_at: claims.issued_at.unwrap_or(now),
            expiry: claims.expiry,
        };
        if let Ok(mut cache) = self.jwts.lock() {
            if cache.len() >= MAX_CACHED_JWTS {
                cache.retain(|_, c| c.expiry > now);
                if cache.len() >= MAX_CACHED_JWTS {
                    cache.clear();
                }
            }
            cache.insert(key, cached.clone());
        }
        Ok(cached.token.to_string())
    }
}
