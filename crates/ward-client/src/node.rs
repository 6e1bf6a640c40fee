//! Node-scoped issuance for node agents (attestation): SVIDs for the
//! registration entries the CA keeps for this agent's SPIFFE ID, obtained
//! with the agent's own certificate as the client identity.

use std::sync::Arc;
use std::time::SystemTime;

use hyper::Method;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use ward_api::{EntryList, EntryView, Issued, NodeSignRequest, paths};
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
        CaClient::new(&self.ca_url, &self.anchors, Some(identity))
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
}
