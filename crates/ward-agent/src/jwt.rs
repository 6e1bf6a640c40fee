//! The JWT profile of the Workload API: `FetchJWTSVID` (minted by the CA
//! for the agent's identity, cached per audience by `ward-client`),
//! `FetchJWTBundles` (the CA's `jwt-svid` keys, re-sent when they change)
//! and `ValidateJWTSVID` (checked here against those keys).
//!
//! The bundle is fetched from the CA's `GET /v1/bundle` after the first
//! identity, again after every rotation of the X.509-SVID, and every
//! `spiffe_refresh_hint` seconds in between (clamped to
//! [`MIN_REFRESH`]..[`MAX_REFRESH`]); a failed fetch keeps the last bundle
//! and retries after [`MIN_REFRESH`]. Streams get the bundle again only
//! when its keys changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tonic::Status;
use ward_client::JwtSvids;
use ward_client::workload_api::proto::{
    JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse,
};
use ward_pki::jwt::{self, JwkSet};
use ward_pki::{SpiffeId, TrustDomain};

/// Shortest wait between two bundle fetches.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// Longest wait between two bundle fetches.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);

/// The CA's bundle as last fetched, with the trust domain it belongs to.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// The agent's trust domain.
    pub trust_domain: TrustDomain,
    /// The CA's SPIFFE bundle.
    pub set: Arc<JwkSet>,
}

/// What the JWT handlers read.
#[derive(Clone, Debug)]
pub struct JwtContext {
    /// The minting client, once the agent has an identity.
    pub svids: watch::Receiver<Option<JwtSvids>>,
    /// The bundle, once fetched.
    pub bundle: watch::Receiver<Option<Bundle>>,
    /// Partner trust domains' bundles (`--federate`), served beside ours.
    pub federated: watch::Receiver<crate::federation::Federated>,
}

impl JwtContext {
    /// A context with nothing yet and the senders that fill it.
    pub fn new() -> (
        JwtContext,
        watch::Sender<Option<JwtSvids>>,
        watch::Sender<Option<Bundle>>,
    ) {
        let (svids_tx, svids) = watch::channel(None);
        let (bundle_tx, bundle) = watch::channel(None);
        (
            JwtContext {
                svids,
                bundle,
                federated: crate::federation::none(),
            },
            svids_tx,
            bundle_tx,
        )
    }
}

/// Keeps `bundle` up to date from the CA until the task is aborted or
/// rotation ends (`rotations` closed).
pub async fn follow_bundle(
    svids: JwtSvids,
    trust_domain: TrustDomain,
    bundle: watch::Sender<Option<Bundle>>,
    mut rotations: watch::Receiver<Arc<ward_client::Svid>>,
) {
    loop {
        let wait = match svids.bundle().await {
            Ok(set) => {
                let hint = Duration::from_secs(set.spiffe_refresh_hint.unwrap_or(300));
                let set = Arc::new(set);
                bundle.send_if_modified(|current| {
                    let changed = current.as_ref().is_none_or(|b| b.set.keys != set.keys);
                    if changed {
                        tracing::info!(keys = set.keys.len(), "trust bundle updated");
                        *current = Some(Bundle {
                            trust_domain: trust_domain.clone(),
                            set: set.clone(),
                        });
                    }
                    changed
                });
                hint.clamp(MIN_REFRESH, MAX_REFRESH)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the trust bundle; keeping the last one");
                MIN_REFRESH
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = rotations.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// `FetchJWTSVID`.
pub async fn fetch_svid(
    ctx: &JwtContext,
    own: Option<SpiffeId>,
    req: JwtsvidRequest,
) -> Result<JwtsvidResponse, Status> {
    jwt::check_audience(&req.audience).map_err(Status::invalid_argument)?;
    let (Some(svids), Some(own)) = (ctx.svids.borrow().clone(), own) else {
        return Err(Status::unavailable(
            "the agent has no identity yet; retry with backoff",
        ));
    };
    if !req.spiffe_id.is_empty() && req.spiffe_id != own.as_str() {
        return Err(Status::permission_denied(format!(
            "this agent serves {own} only"
        )));
    }
    let token = svids.fetch(&req.audience).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot obtain a JWT-SVID from the CA");
        if e.is_definitive_refusal() {
            Status::permission_denied(format!("the CA refused a JWT-SVID: {e}"))
        } else {
            Status::unavailable(format!("cannot obtain a JWT-SVID: {e}"))
        }
    })?;
    Ok(JwtsvidResponse {
        svids: vec![Jwtsvid {
            spiffe_id: own.to_string(),
            svid: token,
            hint: String::new(),
        }],
    })
}

/// The `FetchJWTBundles` message for `bundle`.
pub fn bundles_response(bundle: &Bundle) -> JwtBundlesResponse {
    JwtBundlesResponse {
        bundles: HashMap::from([(
            format!("spiffe://{}", bundle.trust_domain),
            bundle.set.jwt_only().to_json(),
        )]),
    }
}

/// `ValidateJWTSVID`.
pub fn validate(
    ctx: &JwtContext,
    req: &ValidateJwtsvidRequest,
) -> Result<ValidateJwtsvidResponse, Status> {
    if req.audience.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if req.svid.is_empty() {
        return Err(Status::invalid_argument("svid must be specified"));
    }
    let Some(bundle) = ctx.bundle.borrow().clone() else {
        return Err(Status::unavailable(
            "the agent has no trust bundle yet; retry with backoff",
        ));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let svid = bundle
        .set
        .verify(&req.svid, &bundle.trust_domain, &req.audience, now)
        .map_err(|e| Status::invalid_argument(format!("invalid JWT-SVID: {e}")))?;
    Ok(ValidateJwtsvidResponse {
        spiffe_id: svid.spiffe_id.to_string(),
        claims: Some(to_struct(&svid.claims)),
    })
}

fn to_struct(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
