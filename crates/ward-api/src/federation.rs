//! `GET /v1/federation`: the SPIFFE bundles of the partner trust domains a
//! CA follows (`[federation."partner.example"]` in ca.toml), handed to its
//! agents, gates and clients so that they need no per-partner settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The answer; `B` is the bundle document type (a SPIFFE bundle, i.e. a JWK
/// set: `ward_pki::jwt::JwkSet` on both ends).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FederatedBundles<B> {
    /// Seconds a follower should wait before asking again.
    pub refresh_hint: u64,
    /// The last good bundle of each partner trust domain, by trust domain
    /// name (`partner.example`). A partner whose first bundle has not
    /// arrived is absent.
    pub bundles: BTreeMap<String, B>,
}
