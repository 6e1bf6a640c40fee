//! The order document: identifiers, authorizations and challenges as the
//! store keeps them (JSON in the order row), their state machines, and how
//! they are rendered as RFC 8555 objects.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use ward_store::AcmeOrder;

use super::Base;
use super::problem::Problem;

/// An identifier (`dns` or `ip`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identifier {
    /// `dns` or `ip`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name or address.
    pub value: String,
}

/// A challenge of an authorization.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Challenge {
    /// `http-01`, `dns-01` or `tls-alpn-01`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The token (base64url, 128 bits of randomness).
    pub token: String,
    /// `pending`, `processing`, `valid` or `invalid`.
    pub status: String,
    /// When it was validated (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated: Option<String>,
    /// Why validation failed (a problem document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// An authorization: one identifier, its challenges.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Authz {
    /// The identifier (without `*.` for a wildcard).
    pub identifier: Identifier,
    /// Whether the order asked for `*.` + identifier.
    pub wildcard: bool,
    /// `pending`, `valid`, `invalid`, `deactivated`.
    pub status: String,
    /// The challenges offered.
    pub challenges: Vec<Challenge>,
    /// When a valid authorization stops being reusable (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl Authz {
    /// The key of this authorization among an account's reusable ones:
    /// `dns:NAME`, `dns:*.NAME` or `ip:ADDRESS`.
    pub(crate) fn reuse_key(&self) -> String {
        let star = if self.wildcard { "*." } else { "" };
        format!("{}:{star}{}", self.identifier.kind, self.identifier.value)
    }
}

/// Everything about an order beyond its row's columns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct OrderDoc {
    /// The identifiers as ordered (wildcards with `*.`).
    pub identifiers: Vec<Identifier>,
    /// One authorization per identifier, same order.
    pub authzs: Vec<Authz>,
    /// The profile the certificate is issued with.
    pub profile: String,
    /// ARI: the certID of the certificate this order replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Why the order became invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl OrderDoc {
    /// Reads the document of a stored order.
    pub(crate) fn of(order: &AcmeOrder) -> Result<OrderDoc, Problem> {
        serde_json::from_str(&order.doc).map_err(Problem::internal)
    }

    /// The JSON text to store.
    pub(crate) fn to_text(&self) -> Result<String, Problem> {
        serde_json::to_string(self).map_err(Problem::internal)
    }
}

/// RFC 3339 without fractions.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    ward_pki::issue::rfc3339(t)
}

/// The status an order has now: its stored status when final or
/// processing, else derived from its authorizations and expiry.
pub(crate) fn order_status(order: &AcmeOrder, doc: &OrderDoc, now: OffsetDateTime) -> &'static str {
    match order.status.as_str() {
        "valid" => return "valid",
        "invalid" => return "invalid",
        "processing" => return "processing",
        _ => {}
    }
    if order.expires_at <= now {
        return "invalid";
    }
    if doc
        .authzs
        .iter()
        .any(|a| a.status != "valid" && a.status != "pending")
    {
        "invalid"
    } else if doc.authzs.iter().all(|a| a.status == "valid") {
        "ready"
    } else {
        "pending"
    }
}

/// The authorization's status now (expired when its order expired unused).
pub(crate) fn authz_status(order: &AcmeOrder, authz: &Authz, now: OffsetDateTime) -> String {
    if authz.status == "pending" && order.expires_at <= now {
        "expired".into()
    } else {
        authz.status.clone()
    }
}

/// Renders an order object.
pub(crate) fn order_json(
    base: &Base,
    order: &AcmeOrder,
    doc: &OrderDoc,
    now: OffsetDateTime,
) -> Value {
    let authorizations: Vec<String> = (0..doc.authzs.len())
        .map(|i| base.url(&format!("authz/{}/{i}", order.id)))
        .collect();
    let mut v = json!({
        "status": order_status(order, doc, now),
        "expires": rfc3339(order.expires_at),
        "identifiers": doc.identifiers,
        "authorizations": authorizations,
        "finalize": base.url(&format!("order/{}/finalize", order.id)),
        "profile": doc.profile,
    });
    if order.cert_serial.is_some() {
        v["certificate"] = Value::String(base.url(&format!("cert/{}", order.id)));
    }
    if let Some(r) = &doc.replaces {
        v["replaces"] = Value::String(r.clone());
    }
    if let Some(e) = &doc.error {
        v["error"] = e.clone();
    }
    v
}

/// Renders a challenge object.
pub(crate) fn challenge_json(base: &Base, order_id: &str, index: usize, c: &Challenge) -> Value {
    let mut v = json!({
        "type": c.kind,
        "url": base.url(&format!("chall/{order_id}/{index}/{}", c.kind)),
        "status": c.status,
        "token": c.token,
    });
    if let Some(t) = &c.validated {
        v["validated"] = Value::String(t.clone());
    }
    if let Some(e) = &c.error {
        v["error"] = e.clone();
    }
    v
}

/// Renders an authorization object.
pub(crate) fn authz_json(
    base: &Base,
    order: &AcmeOrder,
    index: usize,
    authz: &Authz,
    now: OffsetDateTime,
) -> Value {
    let challenges: Vec<Value> = authz
        .challenges
        .iter()
        .map(|c| challenge_json(base, &order.id, index, c))
        .collect();
    let expires = match (&authz.expires, authz.status.as_str()) {
        (Some(e), "valid") => e.clone(),
        _ => rfc3339(order.expires_at),
    };
    let mut v = json!({
        "identifier": authz.identifier,
        "status": authz_status(order, authz, now),
        "expires": expires,
        "challenges": challenges,
    });
    if authz.wildcard {
        v["wildcard"] = Value::Bool(true);
    }
    v
}
