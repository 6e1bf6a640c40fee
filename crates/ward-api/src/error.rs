//! The one error body of the API: `{"error": "<code>", "message": "<text>"}`.

use serde::{Deserialize, Serialize};

/// Every refusal the CA answers with, whatever the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable snake_case code (`token_expired`, `bad_csr`, …); clients
    /// branch on it.
    pub error: String,
    /// Human text, safe to show; never a secret. Optional on reading.
    #[serde(default)]
    pub message: String,
}
