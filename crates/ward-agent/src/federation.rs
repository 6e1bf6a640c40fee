//! Federated trust domains on the Workload API: the agent follows each
//! partner's SPIFFE bundle endpoint (`--federate TD=URL`) and serves the
//! partner bundles in `federated_bundles` of X509-SVID responses and beside
//! its own bundle in FetchX509Bundles and FetchJWTBundles, sent again
//! whenever one changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use ward_client::federation::{Endpoint, FederatedBundle, Follower, Refresh};

use crate::AgentError;

/// The partner bundles by bundle map key (`spiffe://<trust domain>`).
pub type Federated = Arc<BTreeMap<String, Arc<FederatedBundle>>>;

/// A receiver that never sees a partner bundle (no federation).
pub fn none() -> watch::Receiver<Federated> {
    watch::channel(Federated::default()).1
}

/// Follows `endpoints` until the returned task is aborted; the receiver
/// sees the set of last good partner bundles.
pub fn follow(
    endpoints: &[(Endpoint, Refresh)],
) -> Result<(watch::Receiver<Federated>, tokio::task::JoinHandle<()>), AgentError> {
    let mut followers = Vec::new();
    for (endpoint, refresh) in endpoints {
        followers.push(
            Follower::spawn(endpoint.clone(), *refresh)
                .map_err(|e| AgentError::Config(format!("--federate: {e}")))?,
        );
    }
    let (tx, rx) = watch::channel(Federated::default());
    let changed = Arc::new(Notify::new());
    let mut forwards = Vec::new();
    for f in &followers {
        let mut sub = f.subscribe();
        let changed = changed.clone();
        forwards.push(tokio::spawn(async move {
            while sub.changed().await.is_ok() {
                changed.notify_one();
            }
        }));
    }
    let task = tokio::spawn(async move {
        struct AbortAll(Vec<tokio::task::JoinHandle<()>>);
        impl Drop for AbortAll {
            fn drop(&mut self) {
                self.0.iter().for_each(tokio::task::JoinHandle::abort);
            }
        }
        let _forwards = AbortAll(forwards);
        loop {
            changed.notified().await;
            let map: BTreeMap<String, Arc<FederatedBundle>> = followers
                .iter()
                .filter_map(|f| f.current())
                .map(|b| (format!("spiffe://{}", b.trust_domain.as_str()), b))
                .collect();
            tx.send_replace(Arc::new(map));
        }
    });
    Ok((rx, task))
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
