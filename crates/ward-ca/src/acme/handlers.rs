//! The directory, nonces, accounts and key rollover; and [`signed`], the
//! one path every POST goes through: size limit → JWS → url → key →
//! signature → nonce → rate limit.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use ward_store::{AcmeAccount, StoreError};
use ward_tls::server::PeerInfo;

use super::jws::{Jwk, Jws, KeyRef, eab_kid, verify_eab};
use super::{Acme, AcmeProvisioner, Base, MAX_JWS, Problem, random_id};
use crate::http::AppState;

/// Which key a request must be signed with (RFC 8555 §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRule {
    /// An embedded `jwk` (newAccount).
    Jwk,
    /// An account `kid` (everything else).
    Kid,
    /// Either (revokeCert).
    Either,
}

/// A verified request.
pub(crate) struct Signed {
    /// The ACME server.
    pub acme: Arc<Acme>,
    /// The directory it was sent to.
    pub base: Base,
    /// The JWS (signature checked).
    pub jws: Jws,
    /// The signing key.
    pub jwk: Jwk,
    /// The account, when signed with `kid`.
    pub account: Option<AcmeAccount>,
}

impl Signed {
    /// The provisioner's policy.
    pub(crate) fn provisioner(&self) -> Result<&AcmeProvisioner, Problem> {
        self.acme
            .config
            .provisioners
            .get(&self.base.name)
            .ok_or_else(|| Problem::not_found("ACME directory"))
    }

    /// The account (requests with [`KeyRule::Kid`] always have one).
    pub(crate) fn account(&self) -> Result<&AcmeAccount, Problem> {
        self.account
            .as_ref()
            .ok_or_else(|| Problem::malformed("this request must be signed with an account kid"))
    }

    /// The payload as JSON (`{}` rules: an empty payload is POST-as-GET).
    pub(crate) fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, Problem> {
        serde_json::from_slice(&self.jws.payload)
            .map_err(|e| Problem::malformed(format!("bad payload: {e}")))
    }
}

/// The ACME server of a provisioner, or 404.
pub(crate) fn acme_for(state: &AppState, p: &str) -> Result<Arc<Acme>, Problem> {
    let acme = state
        .acme
        .clone()
        .ok_or_else(|| Problem::not_found("ACME directory"))?;
    if !acme.config.provisioners.contains_key(p) {
        return Err(Problem::not_found("ACME directory"));
    }
    Ok(acme)
}

/// Authenticates a POST: see the module doc.
async fn signed(
    state: &AppState,
    peer: &PeerInfo,
    p: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    rule: KeyRule,
) -> Result<Signed, Problem> {
    let acme = acme_for(state, p)?;
    let base = Base::of(p, uri, headers)?;
    if !state.limits.allow_address(peer.remote_addr.ip()) {
        state.metrics.rate_limited.with(&["address"]).inc();
        return Err(Problem::rate_limited("too many requests from this address"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some("application/jose+json") {
        return Err(Problem::new(
            "malformed",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "ACME requests are application/jose+json",
        ));
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Problem::new(
            "malformed",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_JWS} bytes"),
        )
    };
    if announced.is_some_and(|n| n > MAX_JWS as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, MAX_JWS).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => return Err(Problem::malformed(format!("could not read the body: {e}"))),
    };
    let jws = Jws::parse(&bytes)?;
    let expected_url = base.request_url(uri.path());
    if jws.header.url != expected_url {
        return Err(Problem::unauthorized(format!(
            "the JWS url {:?} is not the request URL {expected_url:?}",
            jws.header.url
        )));
    }
    let (jwk, account) = match (&jws.header.key, rule) {
        (KeyRef::Jwk(jwk), KeyRule::Jwk | KeyRule::Either) => (jwk.clone(), None),
        (KeyRef::Kid(kid), KeyRule::Kid | KeyRule::Either) => {
            let id = base.account_id(kid).ok_or_else(|| {
                Problem::unauthorized("kid is not an account URL of this directory")
            })?;
            let account = acme
                .authority
                .store()
                .acme()
                .account(id)
                .await?
                .filter(|a| a.provisioner == base.name)
                .ok_or_else(|| {
                    Problem::new(
                        "accountDoesNotExist",
                        StatusCode::BAD_REQUEST,
                        "no such account",
                    )
                })?;
            let value: Value = serde_json::from_str(&account.jwk).map_err(Problem::internal)?;
            (Jwk::from_value(&value)?, Some(account))
        }
        (KeyRef::Jwk(_), KeyRule::Kid) => {
            return Err(Problem::malformed(
                "this request must be signed with an account kid, not a jwk",
            ));
        }
        (KeyRef::Kid(_), KeyRule::Jwk) => {
            return Err(Problem::malformed(
                "this request must carry a jwk, not a kid",
            ));
        }
    };
    jws.verify(&jwk)?;
    let nonce = jws.header.nonce.as_deref().ok_or_else(|| {
        Problem::new(
            "badNonce",
            StatusCode::BAD_REQUEST,
            "the JWS carries no nonce",
        )
    })?;
    let now = OffsetDateTime::now_utc();
    if !acme.take_nonce(nonce, now).await? {
        return Err(Problem::new(
            "badNonce",
            StatusCode::BAD_REQUEST,
            "unknown, used or expired nonce",
        ));
    }
    if let Some(a) = &account {
        if a.status != "valid" {
            return Err(Problem::unauthorized(format!(
                "the account is {}",
                a.status
            )));
        }
        if !state.limits.allow_token(&format!("acme-account:{}", a.id)) {
            state.metrics.rate_limited.with(&["acme_account"]).inc();
            return Err(Problem::rate_limited("too many requests from this account"));
        }
    }
    Ok(Signed {
        acme,
        base,
        jws,
        jwk,
        account,
    })
}

/// Takes a request apart for [`signed`]: the provisioner is the `{p}`
/// path segment every ACME route has; the peer comes from the listener.
async fn extract(request: Request, state: &AppState, rule: KeyRule) -> Result<Signed, Problem> {
    let (mut parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<PeerInfo>()
        .cloned()
        .ok_or_else(|| Problem::internal("no peer information on the request"))?;
    let params = RawPathParams::from_request_parts(&mut parts, state)
        .await
        .map_err(|e| Problem::malformed(format!("bad request path: {e}")))?;
    let p = params
        .iter()
        .find(|(k, _)| *k == "p")
        .map(|(_, v)| v.to_owned())
        .ok_or_else(|| Problem::not_found("ACME directory"))?;
    signed(state, &peer, &p, &parts.uri, &parts.headers, body, rule).await
}

/// A POST signed with an account `kid` ([`KeyRule::Kid`]).
pub(crate) struct ByKid(pub Signed);
/// A POST signed with an embedded `jwk` ([`KeyRule::Jwk`]).
pub(crate) struct ByJwk(pub Signed);
/// A POST signed with either ([`KeyRule::Either`]).
pub(crate) struct ByEither(pub Signed);

macro_rules! signed_extractor {
    ($name:ident, $rule:expr) => {
        impl FromRequest<AppState> for $name {
            type Rejection = Problem;

            async fn from_request(request: Request, state: &AppState) -> Result<Self, Problem> {
                extract(request, state, $rule).await.map($name)
            }
        }
    };
}
signed_extractor!(ByKid, KeyRule::Kid);
signed_extractor!(ByJwk, KeyRule::Jwk);
signed_extractor!(ByEither, KeyRule::Either);

/// `Link: <directory>;rel="index"` on every answer.
pub(crate) fn with_index(base: &Base, mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("<{}>;rel=\"index\"", base.url("directory"))) {
        response.headers_mut().append(header::LINK, v);
    }
    response
}

/// A JSON answer with a status and optional Location.
pub(crate) fn json_response(
    base: &Base,
    status: StatusCode,
    location: Option<String>,
    body: Value,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, l);
    }
    with_index(base, response)
}

/// GET `/acme/NAME/directory`.
pub(crate) async fn directory(
    State(state): State<AppState>,
    Path(p): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let acme = acme_for(&state, &p)?;
    let base = Base::of(&p, &uri, &headers)?;
    let prov = &acme.config.provisioners[&p];
    let profiles: serde_json::Map<String, Value> = prov
        .profiles
        .iter()
        .map(|(name, ttl)| {
            (
                name.clone(),
                Value::String(format!("certificates valid for {ttl}")),
            )
        })
        .collect();
    let body = json!({
        "newNonce": base.url("new-nonce"),
        "newAccount": base.url("new-account"),
        "newOrder": base.url("new-order"),
        "revokeCert": base.url("revoke-cert"),
        "keyChange": base.url("key-change"),
        "renewalInfo": base.url("renewal-info"),
        "meta": {
            "externalAccountRequired": prov.eab_required,
            "profiles": profiles,
        },
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// HEAD `/acme/NAME/new-nonce` (the middleware adds the nonce).
pub(crate) async fn new_nonce_head(
    State(state): State<AppState>,
    Path(p): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    acme_for(&state, &p)?;
    let base = Base::of(&p, &uri, &headers)?;
    Ok(with_index(&base, StatusCode::OK.into_response()))
}

/// GET `/acme/NAME/new-nonce`.
pub(crate) async fn new_nonce_get(
    State(state): State<AppState>,
    Path(p): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    acme_for(&state, &p)?;
    let base = Base::of(&p, &uri, &headers)?;
    Ok(with_index(&base, StatusCode::NO_CONTENT.into_response()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewAccount {
    #[serde(default)]
    contact: Option<Vec<String>>,
    #[serde(default)]
    only_return_existing: bool,
    #[serde(default)]
    external_account_binding: Option<Value>,
    #[serde(default, rename = "termsOfServiceAgreed")]
    _tos: Option<bool>,
}

/// Largest number of contacts an account may list.
const MAX_CONTACTS: usize = 10;

fn check_contacts(contact: &[String]) -> Result<String, Problem> {
    if contact.len() > MAX_CONTACTS {
        return Err(Problem::new(
            "invalidContact",
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_CONTACTS} contacts"),
        ));
    }
    for c in contact {
        let Some(addr) = c.strip_prefix("mailto:") else {
            return Err(Problem::new(
                "unsupportedContact",
                StatusCode::BAD_REQUEST,
                "only mailto: contacts are supported",
            ));
        };
        let ok = addr.len() <= 254
            && addr
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
            && !addr.contains([',', '?', ' ', '\r', '\n', '<', '>']);
        if !ok {
            return Err(Problem::new(
                "invalidContact",
                StatusCode::BAD_REQUEST,
                format!("{c:?} is not a valid mailto: address"),
            ));
        }
    }
    serde_json::to_string(contact).map_err(Problem::internal)
}

fn account_json(base: &Base, a: &AcmeAccount) -> Value {
    let contact: Value = serde_json::from_str(&a.contact).unwrap_or_else(|_| json!([]));
    let mut v = json!({
        "status": a.status,
        "contact": contact,
        "orders": base.url(&format!("account/{}/orders", a.id)),
    });
    if let Some(kid) = &a.eab_key_id {
        v["externalAccountBinding"] = json!({ "kid": kid });
    }
    v
}

/// POST `/acme/NAME/new-account`.
pub(crate) async fn new_account(ByJwk(s): ByJwk) -> Result<Response, Problem> {
    let p = s.base.name.clone();
    let req: NewAccount = s.payload()?;
    let store = s.acme.authority.store().acme();
    let thumbprint = s.jwk.thumbprint();
    if let Some(existing) = store.account_by_thumbprint(&p, &thumbprint).await? {
        let url = s.base.url(&format!("account/{}", existing.id));
        return Ok(json_response(
            &s.base,
            StatusCode::OK,
            Some(url),
            account_json(&s.base, &existing),
        ));
    }
    if req.only_return_existing {
        return Err(Problem::new(
            "accountDoesNotExist",
            StatusCode::BAD_REQUEST,
            "no account exists with this key",
        ));
    }
    let contact = check_contacts(req.contact.as_deref().unwrap_or_default())?;
    let prov = s.provisioner()?;
    let eab_key_id = match &req.external_account_binding {
        Some(eab) => {
            let kid = eab_kid(eab)?;
            let key = store
                .eab_key(&kid)
                .await?
                .filter(|k| k.provisioner == p)
                .ok_or_else(|| Problem::unauthorized("unknown external account binding key"))?;
            if key.revoked_at.is_some() {
                return Err(Problem::unauthorized(
                    "this external account binding key is revoked",
                ));
            }
            if key.account_id.is_some() {
                return Err(Problem::unauthorized(
                    "this external account binding key is used",
                ));
            }
            verify_eab(eab, &key.hmac_key, &s.jws.header.url, &s.jwk)?;
            Some(kid)
        }
        None if prov.eab_required => {
            return Err(Problem::new(
                "externalAccountRequired",
                StatusCode::UNAUTHORIZED,
                "this directory requires an external account binding",
            ));
        }
        None => None,
    };
    let account = AcmeAccount {
        id: random_id()?,
        provisioner: p.clone(),
        thumbprint,
        jwk: s.jwk.canonical(),
        status: "valid".into(),
        contact,
        eab_key_id,
        created_at: OffsetDateTime::now_utc(),
    };
    match store.create_account(&account).await {
        Ok(()) => {}
        Err(StoreError::Conflict(m)) => return Err(Problem::unauthorized(m)),
        Err(e) => return Err(e.into()),
    }
    let url = s.base.url(&format!("account/{}", account.id));
    Ok(json_response(
        &s.base,
        StatusCode::CREATED,
        Some(url),
        account_json(&s.base, &account),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountUpdate {
    #[serde(default)]
    contact: Option<Vec<String>>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, rename = "termsOfServiceAgreed")]
    _tos: Option<bool>,
}

/// POST `/acme/NAME/account/ID`: read (POST-as-GET), update contacts, deactivate.
pub(crate) async fn account(
    Path((_, id)): Path<(String, String)>,
    ByKid(s): ByKid,
) -> Result<Response, Problem> {
    let mut account = s.account()?.clone();
    if account.id != id {
        return Err(Problem::unauthorized("the account URL is not the signer's"));
    }
    if !s.jws.is_post_as_get() {
        let update: AccountUpdate = s.payload()?;
        if let Some(contact) = &update.contact {
            account.contact = check_contacts(contact)?;
        }
        match update.status.as_deref() {
            None | Some("valid") => {}
            Some("deactivated") => account.status = "deactivated".into(),
            Some(other) => {
                return Err(Problem::malformed(format!(
                    "an account can only be deactivated, not set to {other:?}"
                )));
            }
        }
        s.acme
            .authority
            .store()
            .acme()
            .update_account(&account)
            .await?;
    }
    Ok(json_response(
        &s.base,
        StatusCode::OK,
        None,
        account_json(&s.base, &account),
    ))
}

/// POST `/acme/NAME/account/ID/orders`: the account's order URLs.
pub(crate) async fn account_orders(
    Path((_, id)): Path<(String, String)>,
    ByKid(s): ByKid,
) -> Result<Response, Problem> {
    if s.account()?.id != id {
        return Err(Problem::unauthorized("the account URL is not the signer's"));
    }
    let ids = s
        .acme
        .authority
        .store()
        .acme()
        .orders_of_account(&id)
        .await?;
    let orders: Vec<String> = ids
        .iter()
        .map(|o| s.base.url(&format!("order/{o}")))
        .collect();
    Ok(json_response(
        &s.base,
        StatusCode::OK,
        None,
        json!({ "orders": orders }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyChange {
    account: String,
    old_key: Value,
}

/// POST `/acme/NAME/key-change` (RFC 8555 §7.3.5).
pub(crate) async fn key_change(ByKid(s): ByKid) -> Result<Response, Problem> {
    let p = s.base.name.clone();
    let mut account = s.account()?.clone();
    let inner = Jws::parse(&s.jws.payload)?;
    let KeyRef::Jwk(new_key) = &inner.header.key else {
        return Err(Problem::malformed(
            "the inner JWS must carry the new key as jwk",
        ));
    };
    if inner.header.nonce.is_some() {
        return Err(Problem::malformed("the inner JWS must not carry a nonce"));
    }
    if inner.header.url != s.jws.header.url {
        return Err(Problem::malformed(
            "the inner JWS url differs from the outer",
        ));
    }
    inner.verify(new_key)?;
    let change: KeyChange = serde_json::from_slice(&inner.payload)
        .map_err(|e| Problem::malformed(format!("bad keyChange payload: {e}")))?;
    let account_url = s.base.url(&format!("account/{}", account.id));
    if change.account != account_url {
        return Err(Problem::unauthorized("keyChange names another account"));
    }
    if Jwk::from_value(&change.old_key)? != s.jwk {
        return Err(Problem::unauthorized("oldKey is not the account's key"));
    }
    let store = s.acme.authority.store().acme();
    let thumbprint = new_key.thumbprint();
    if let Some(other) = store.account_by_thumbprint(&p, &thumbprint).await? {
        let url = s.base.url(&format!("account/{}", other.id));
        let mut response = Problem::new(
            "malformed",
            StatusCode::CONFLICT,
            "another account uses the new key",
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&url) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(response);
    }
    account.thumbprint = thumbprint;
    account.jwk = new_key.canonical();
    match store.update_account(&account).await {
        Ok(()) => {}
        Err(StoreError::Conflict(m)) => {
            return Err(Problem::new("malformed", StatusCode::CONFLICT, m));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(json_response(
        &s.base,
        StatusCode::OK,
        Some(account_url),
        account_json(&s.base, &account),
    ))
}
