//! Federated trust domains on the Workload API: the agent follows each
//! partner's SPIFFE bundle endpoint named on its command line (`--federate
//! TD=URL`, `https_web` or `https_spiffe` profile) and takes the partners
//! its CA follows (`GET /v1/federation`), through
//! [`ward_client::federated::Federation`]; it serves the partner bundles
//! in `federated_bundles` of X509-SVID responses and beside its own bundle
//! in FetchX509Bundles and FetchJWTBundles, sent again whenever one
//! changes (a partner the CA drops disappears at the next ask).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use ward_client::federated::{BundleSet, Federation, FromCa};
use ward_client::federation::{Endpoint, FederatedBundle, Refresh};

use crate::AgentError;

/// The partner bundles by bundle map key (`spiffe://<trust domain>`).
pub type Federated = Arc<BTreeMap<String, Arc<FederatedBundle>>>;

/// A receiver that never sees a partner bundle (no federation).
pub fn none() -> watch::Receiver<Federated> {
    watch::channel(Federated::default()).1
}

/// Checks the endpoints' settings (URLs, files) before anything starts.
pub fn validate(endpoints: &[Endpoint]) -> Result<(), AgentError> {
    for (i, endpoint) in endpoints.iter().enumerate() {
        if endpoints[..i]
            .iter()
            .any(|e| e.trust_domain == endpoint.trust_domain)
        {
            return Err(AgentError::Config(format!(
                "--federate: trust domain {} is federated twice",
                endpoint.trust_domain
            )));
        }
        endpoint.validate().map_err(|e| {
            AgentError::Config(format!("--federate {}: {e}", endpoint.trust_domain))
        })?;
    }
    Ok(())
}

fn served(set: &BundleSet) -> Federated {
    Arc::new(
        set.iter()
            .filter_map(|(td, b)| Some((format!("spiffe://{}", td.as_str()), b.clone()?)))
            .collect(),
    )
}

/// Follows `endpoints` and the CA's partners (`from_ca`) until the returned
/// task is aborted, publishing the set of last good partner bundles on `tx`.
pub fn follow(
    endpoints: Vec<Endpoint>,
    refresh: Refresh,
    from_ca: Option<FromCa>,
    tx: watch::Sender<Federated>,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let federation = Federation::start(endpoints, refresh, from_ca)
        .map_err(|e| AgentError::Config(format!("--federate: {e}")))?;
    let mut rx = federation.subscribe();
    Ok(tokio::spawn(async move {
        // Holding `federation` keeps its followers running.
        let _federation = federation;
        loop {
            let next = served(&rx.borrow_and_update());
            tx.send_if_modified(|cur| {
                if *cur == next {
                    return false;
                }
                *cur = next;
                true
            });
            if rx.changed().await.is_err() {
                return;
            }
        }
    }))
}

/// The X.509 roots of each partner, concatenated DER, by bundle map key.
pub fn x509_roots(federated: &Federated) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    federated
        .iter()
        .map(|(k, b)| (k.clone(), b.roots.iter().flat_map(|r| r.to_vec()).collect()))
}

/// The JWT keys of each partner (a JWK set document), by bundle map key.
pub fn jwt_sets(federated: &Federated) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    federated
        .iter()
        .map(|(k, b)| (k.clone(), b.set.jwt_only().to_json()))
}
