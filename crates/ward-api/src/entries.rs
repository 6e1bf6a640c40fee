//! Registration entries (`/v1/admin/entries`, admin only) and node-scoped
//! issuance (`/v1/node/…`, a node agent's own client certificate).

use serde::{Deserialize, Serialize};

/// `POST /v1/admin/entries`: the options of `ward entry create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEntryRequest {
    /// The SPIFFE ID a matching workload gets.
    pub spiffe_id: String,
    /// Selectors (`unix:uid:1000`, `unix:sha256:…`); all must match.
    pub selectors: Vec<String>,
    /// The SPIFFE ID of the node agent allowed to serve this entry.
    pub node: String,
    /// Allow a reserved SPIFFE ID (`spiffe://TD/ward/...`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_reserved: bool,
}

/// An entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    /// Public id (`ent_…`).
    pub id: String,
    /// The SPIFFE ID a matching workload gets.
    pub spiffe_id: String,
    /// Canonical selectors.
    pub selectors: Vec<String>,
    /// The node agent allowed to serve it.
    pub node: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// `GET /v1/admin/entries` and `GET /v1/node/entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryList {
    /// The entries, oldest first.
    pub entries: Vec<EntryView>,
}

/// `POST /v1/node/sign`: an SVID for a workload this node agent serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSignRequest {
    /// The SPIFFE ID asked for: an entry registered for the caller's node.
    pub spiffe_id: String,
    /// The PKCS#10 CSR, PEM, carrying that SPIFFE ID.
    pub csr: String,
}
