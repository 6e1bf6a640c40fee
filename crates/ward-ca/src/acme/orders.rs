//! Orders, authorizations, challenges, finalization, certificate download,
//! revocation and renewal information (RFC 8555 §7.4–7.6, RFC 9773).
//!
//! Every change to an order is a compare-and-swap on its version
//! ([`update_order`]), so a validation finishing on one replica and a
//! finalize arriving on another never overwrite each other.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use ward_pki::Serial;
use ward_store::{AcmeOrder, Origin};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use super::handlers::{ByEither, ByKid, Signed, acme_for, json_response, with_index};
use super::jws::b64;
use super::model::{
    Authz, Challenge, Identifier, OrderDoc, authz_json, challenge_json, order_json, order_status,
    rfc3339,
};
use super::validate::Target;
use super::{Acme, Base, ORDER_LIFETIME, Problem, random_id};
use crate::http::AppState;

/// How long a valid authorization is reused in the account's later
/// orders for the same identifier.
pub(crate) const AUTHZ_REUSE: time::Duration = time::Duration::hours(24);
/// Most identifiers one order may carry.
const MAX_IDENTIFIERS: usize = 100;
/// How many times a racing order update is retried.
const CAS_RETRIES: usize = 8;
/// How long a challenge POST waits for the validation it started before it
/// answers `processing` (the validation goes on either way).
const VALIDATION_WAIT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    identifiers: Vec<Identifier>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    replaces: Option<String>,
}

/// Checks one identifier against the provisioner; returns it normalised.
fn check_identifier(
    prov: &super::AcmeProvisioner,
    id: &Identifier,
) -> Result<(Identifier, bool), Problem> {
    match id.kind.as_str() {
        "dns" => {
            let name = ward_pki::issue::check_dns_name(&id.value)
                .map_err(|e| Problem::rejected_identifier(e.to_string()))?;
            if name.parse::<IpAddr>().is_ok() {
                return Err(Problem::rejected_identifier(format!(
                    "{name} is an IP address: use an \"ip\" identifier"
                )));
            }
            let wildcard = name.starts_with("*.");
            if wildcard && !prov.challenges.iter().any(|c| c == "dns-01") {
                return Err(Problem::rejected_identifier(
                    "wildcard names need dns-01, which this directory does not offer",
                ));
            }
            if !prov.allows_dns(&name) {
                return Err(Problem::rejected_identifier(format!(
                    "this directory may not issue for {name}"
                )));
            }
            Ok((
                Identifier {
                    kind: "dns".into(),
                    value: name,
                },
                wildcard,
            ))
        }
        "ip" => {
            let ip: IpAddr = id
                .value
                .parse()
                .map_err(|_| Problem::malformed(format!("{:?} is not an IP address", id.value)))?;
            if !prov.allows_ip(ip) {
                return Err(Problem::rejected_identifier(format!(
                    "this directory may not issue for {ip}"
                )));
            }
            Ok((
                Identifier {
                    kind: "ip".into(),
                    value: ip.to_string(),
                },
                false,
            ))
        }
        other => Err(Problem::new(
            "unsupportedIdentifier",
            StatusCode::BAD_REQUEST,
            format!("identifier type {other:?} is not supported (dns, ip)"),
        )),
    }
}

/// POST `/acme/NAME/new-order`.
pub(crate) async fn new_order(ByKid(s): ByKid) -> Result<Response, Problem> {
    let account = s.account()?.clone();
    let prov = s.provisioner()?;
    let req: NewOrder = s.payload()?;
    if req.not_before.is_some() || req.not_after.is_some() {
        return Err(Problem::malformed(
            "notBefore and notAfter are not supported: choose a profile",
        ));
    }
    if req.identifiers.is_empty() || req.identifiers.len() > MAX_IDENTIFIERS {
        return Err(Problem::malformed(format!(
            "an order needs 1 to {MAX_IDENTIFIERS} identifiers"
        )));
    }
    let profile = match &req.profile {
        Some(name) if prov.profiles.contains_key(name) => name.clone(),
        Some(name) => {
            return Err(Problem::new(
                "invalidProfile",
                StatusCode::BAD_REQUEST,
                format!("unknown profile {name:?}"),
            ));
        }
        None => prov
            .default_profile()
            .ok_or_else(|| Problem::internal("a provisioner without profiles"))?
            .to_owned(),
    };
    let store = s.acme.authority.store().acme();
    let now = OffsetDateTime::now_utc();
    let mut seen = BTreeSet::new();
    let mut identifiers = Vec::new();
    let mut authzs = Vec::new();
    for id in &req.identifiers {
        let (id, wildcard) = check_identifier(prov, id)?;
        if !seen.insert((id.kind.clone(), id.value.clone())) {
            continue;
        }
        let kinds: Vec<&str> = prov
            .challenges
            .iter()
            .map(String::as_str)
            .filter(|k| match (id.kind.as_str(), wildcard) {
                (_, true) => *k == "dns-01",
                ("ip", _) => *k != "dns-01",
                _ => true,
            })
            .collect();
        if kinds.is_empty() {
            return Err(Problem::rejected_identifier(format!(
                "no challenge this directory offers can validate {}",
                id.value
            )));
        }
        let key = format!("{}:{}", id.kind, id.value);
        if let Some(text) = store.valid_authz(&account.id, &key, now).await? {
            // A valid authorization of an earlier order (RFC 8555 §7.1.4):
            // this order starts with it valid, as at Let's Encrypt.
            let reused: Authz = serde_json::from_str(&text).map_err(Problem::internal)?;
            if reused.status == "valid" && reused.reuse_key() == key {
                identifiers.push(id);
                authzs.push(reused);
                continue;
            }
        }
        let token = random_id()?;
        let challenges = kinds
            .into_iter()
            .map(|k| Challenge {
                kind: k.to_owned(),
                token: token.clone(),
                status: "pending".into(),
                validated: None,
                error: None,
            })
            .collect();
        let bare = Identifier {
            kind: id.kind.clone(),
            value: id.value.trim_start_matches("*.").to_owned(),
        };
        identifiers.push(id);
        authzs.push(Authz {
            identifier: bare,
            wildcard,
            status: "pending".into(),
            challenges,
            expires: None,
        });
    }
    let replacing = match &req.replaces {
        Some(cert_id) => Some(check_replaces(&s, &account.id, cert_id, now).await?),
        None => None,
    };
    let doc = OrderDoc {
        identifiers,
        authzs,
        profile,
        replaces: req.replaces.clone(),
        error: None,
    };
    let order = AcmeOrder {
        id: random_id()?,
        account_id: account.id.clone(),
        provisioner: s.base.name.clone(),
        status: "pending".into(),
        expires_at: now + ORDER_LIFETIME,
        doc: doc.to_text()?,
        cert_serial: None,
        version: 1,
        created_at: now,
    };
    match replacing {
        Some((serial, previous)) => {
            match store
                .create_replacing_order(&order, &serial, previous.as_deref())
                .await
            {
                Ok(()) => {}
                Err(ward_store::StoreError::Conflict(_)) => return Err(already_replaced()),
                Err(e) => return Err(e.into()),
            }
        }
        None => store.create_order(&order).await?,
    }
    let url = s.base.url(&format!("order/{}", order.id));
    Ok(json_response(
        &s.base,
        StatusCode::CREATED,
        Some(url),
        order_json(&s.base, &order, &doc, now),
    ))
}

/// RFC 9773 §5: a second replacement of one certificate.
fn already_replaced() -> Problem {
    Problem::new(
        "alreadyReplaced",
        StatusCode::CONFLICT,
        "another order already replaces this certificate",
    )
}

/// Checks `replaces` of a new order: a certificate this account was
/// issued, not yet replaced by a live or valid order. Returns its serial
/// and the dead replacement recorded before, if any.
async fn check_replaces(
    s: &Signed,
    account_id: &str,
    cert_id: &str,
    now: OffsetDateTime,
) -> Result<(String, Option<String>), Problem> {
    let store = s.acme.authority.store().acme();
    let serial = serial_of_cert_id(&s.acme, cert_id)?.to_string();
    let replaced = store.order_by_certificate(&serial).await?;
    if replaced.is_none_or(|o| o.account_id != account_id) {
        return Err(Problem::malformed(
            "replaces names no certificate this account was issued",
        ));
    }
    let previous = store.replacement(&serial).await?;
    if let Some(id) = &previous
        && let Some(order) = store.order(id).await?
        && order_status(&order, &OrderDoc::of(&order)?, now) != "invalid"
    {
        return Err(already_replaced());
    }
    Ok((serial, previous))
}

/// Loads an order of the signing account (404 for anyone else's).
async fn own_order(s: &Signed, id: &str) -> Result<AcmeOrder, Problem> {
    let account = s.account()?;
    s.acme
        .authority
        .store()
        .acme()
        .order(id)
        .await?
        .filter(|o| o.account_id == account.id && o.provisioner == s.base.name)
        .ok_or_else(|| Problem::not_found("order"))
}

/// An order answer, with Retry-After while it is not final.
fn order_response(base: &Base, order: &AcmeOrder, doc: &OrderDoc, status: StatusCode) -> Response {
    let now = OffsetDateTime::now_utc();
    let body = order_json(base, order, doc, now);
    let mut response = json_response(
        base,
        status,
        Some(base.url(&format!("order/{}", order.id))),
        body,
    );
    if matches!(order_status(order, doc, now), "processing" | "pending") {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// POST-as-GET `/acme/NAME/order/ID`.
pub(crate) async fn order(
    Path((_, id)): Path<(String, String)>,
    ByKid(s): ByKid,
) -> Result<Response, Problem> {
    let order = own_order(&s, &id).await?;
    let doc = OrderDoc::of(&order)?;
    Ok(order_response(&s.base, &order, &doc, StatusCode::OK))
}

fn index(i: &str, doc: &OrderDoc) -> Result<usize, Problem> {
    i.parse::<usize>()
        .ok()
        .filter(|i| *i < doc.authzs.len())
        .ok_or_else(|| Problem::not_found("authorization"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthzUpdate {
    status: String,
}

/// POST `/acme/NAME/authz/ORDER/I`: read, or deactivate (RFC 8555 §7.5.2).
pub(crate) async fn authz(
    Path((_, id, i)): Path<(String, String, String)>,
    ByKid(s): ByKid,
) -> Result<Response, Problem> {
    let mut order = own_order(&s, &id).await?;
    let mut doc = OrderDoc::of(&order)?;
    let i = index(&i, &doc)?;
    if !s.jws.is_post_as_get() {
        let update: AuthzUpdate = s.payload()?;
        if update.status != "deactivated" {
            return Err(Problem::malformed(
                "an authorization can only be deactivated",
            ));
        }
        (order, doc) = update_order(&s.acme, &id, |_, doc| {
            let a = &mut doc.authzs[i];
            if a.status == "pending" || a.status == "valid" {
                a.status = "deactivated".into();
            }
            Ok(())
        })
        .await?;
        // A deactivated authorization is reused by no later order.
        s.acme
            .authority
            .store()
            .acme()
            .drop_valid_authz(&order.account_id, &doc.authzs[i].reuse_key())
            .await?;
    }
    let now = OffsetDateTime::now_utc();
    let body = authz_json(&s.base, &order, i, &doc.authzs[i], now);
    let mut response = json_response(&s.base, StatusCode::OK, None, body);
    if doc.authzs[i]
        .challenges
        .iter()
        .any(|c| c.status == "processing")
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Ok(response)
}

/// POST `/acme/NAME/chall/ORDER/I/TYPE`: `{}` starts validation; an empty
/// payload reads the challenge.
pub(crate) async fn challenge(
    Path((_, id, i, kind)): Path<(String, String, String, String)>,
    ByKid(s): ByKid,
) -> Result<Response, Problem> {
    let order = own_order(&s, &id).await?;
    let doc = OrderDoc::of(&order)?;
    let i = index(&i, &doc)?;
    let ci = doc.authzs[i]
        .challenges
        .iter()
        .position(|c| c.kind == kind)
        .ok_or_else(|| Problem::not_found("challenge"))?;
    let now = OffsetDateTime::now_utc();
    let (order, doc) = if s.jws.is_post_as_get() {
        (order, doc)
    } else {
        let _: Value = s.payload()?;
        let mut start = false;
        let (order, doc) = update_order(&s.acme, &id, |order, doc| {
            if order_status(order, doc, now) != "pending" {
                return Ok(());
            }
            let a = &mut doc.authzs[i];
            if a.status == "pending" && a.challenges.iter().all(|c| c.status == "pending") {
                a.challenges[ci].status = "processing".into();
                start = true;
            }
            Ok(())
        })
        .await?;
        if start {
            let thumbprint = s.jwk.thumbprint();
            let acme = s.acme.clone();
            let id = id.clone();
            // The validation runs on its own task (it completes even if this
            // request goes away); the answer waits for it up to
            // VALIDATION_WAIT, so a client usually finds the order ready at
            // its first poll instead of being told to come back later.
            let validation =
                tokio::spawn(async move { run_validation(acme, id, i, ci, thumbprint).await });
            match tokio::time::timeout(VALIDATION_WAIT, validation).await {
                Ok(Ok(Some(stored))) => stored,
                _ => (order, doc),
            }
        } else {
            (order, doc)
        }
    };
    let c = &doc.authzs[i].challenges[ci];
    let mut response = json_response(
        &s.base,
        StatusCode::OK,
        None,
        challenge_json(&s.base, &order.id, i, c),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "<{}>;rel=\"up\"",
        s.base.url(&format!("authz/{}/{i}", order.id))
    )) {
        response.headers_mut().append(header::LINK, v);
    }
    Ok(response)
}

/// Validates challenge `ci` of authorization `i` and records the outcome;
/// returns the order as stored afterwards (`None` if it could not be read
/// or recorded).
async fn run_validation(
    acme: std::sync::Arc<Acme>,
    id: String,
    i: usize,
    ci: usize,
    thumbprint: String,
) -> Option<(AcmeOrder, OrderDoc)> {
    let store = acme.authority.store().acme();
    let Ok(Some(order)) = store.order(&id).await else {
        tracing::warn!(order = %id, "order vanished before validation");
        return None;
    };
    let doc = OrderDoc::of(&order).ok()?;
    let authz = &doc.authzs[i];
    let c = &authz.challenges[ci];
    let key_authorization = format!("{}.{thumbprint}", c.token);
    let target = match authz.identifier.kind.as_str() {
        "ip" => Target::Ip(authz.identifier.value.parse().ok()?),
        _ => Target::Dns(&authz.identifier.value),
    };
    let outcome = acme
        .validator
        .validate(&c.kind, target, &c.token, &key_authorization)
        .await;
    if let Err((kind, detail)) = &outcome {
        tracing::info!(order = %id, identifier = %authz.identifier.value, challenge = %c.kind, problem = *kind, %detail, "ACME validation failed");
    }
    let now = OffsetDateTime::now_utc();
    // Read, apply, compare-and-swap (as update_order), except that a valid
    // authorization is recorded for reuse in the same transaction as the
    // order change: a client that finalizes and orders the same name again
    // at once finds it.
    for _ in 0..CAS_RETRIES {
        let mut order = match store.order(&id).await {
            Ok(Some(order)) => order,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(order = %id, error = %e, "recording an ACME validation failed");
                return None;
            }
        };
        let mut doc = OrderDoc::of(&order).ok()?;
        let a = &mut doc.authzs[i];
        let ch = &mut a.challenges[ci];
        if ch.status != "processing" {
            return Some((order, doc));
        }
        match &outcome {
            Ok(()) => {
                ch.status = "valid".into();
                ch.validated = Some(rfc3339(now));
                a.status = "valid".into();
                a.expires = Some(rfc3339(now + AUTHZ_REUSE));
            }
            Err((kind, detail)) => {
                let problem = Problem::new(kind, StatusCode::FORBIDDEN, detail.clone());
                ch.status = "invalid".into();
                ch.error = Some(problem.to_json());
                a.status = "invalid".into();
                doc.error = Some(problem.to_json());
                order.status = "invalid".into();
            }
        }
        order.doc = doc.to_text().ok()?;
        order.version += 1;
        let a = &doc.authzs[i];
        let stored = if a.status == "valid" {
            let text = serde_json::to_string(a).ok()?;
            store
                .update_order_with_valid_authz(&order, &a.reuse_key(), &text, now + AUTHZ_REUSE)
                .await
        } else {
            store.update_order(&order).await
        };
        match stored {
            Ok(true) => return Some((order, doc)),
            Ok(false) => continue,
            Err(e) => {
                tracing::error!(order = %id, error = %e, "recording an ACME validation failed");
                return None;
            }
        }
    }
    tracing::error!(order = %id, "recording an ACME validation failed: the order kept changing");
    None
}

/// Reads the order, applies `change`, and writes it back if nobody else
/// did meanwhile (retrying a few times); returns what was stored.
async fn update_order<F>(
    acme: &Acme,
    id: &str,
    mut change: F,
) -> Result<(AcmeOrder, OrderDoc), Problem>
where
    F: FnMut(&mut AcmeOrder, &mut OrderDoc) -> Result<(), Problem>,
{
    let store = acme.authority.store().acme();
    for _ in 0..CAS_RETRIES {
        let mut order = store
            .order(id)
            .await?
            .ok_or_else(|| Problem::not_found("order"))?;
        let mut doc = OrderDoc::of(&order)?;
        let before = (
            order.status.clone(),
            order.doc.clone(),
            order.cert_serial.clone(),
        );
        change(&mut order, &mut doc)?;
        order.doc = doc.to_text()?;
        if (
            order.status.clone(),
            order.doc.clone(),
            order.cert_serial.clone(),
        ) == before
        {
            return Ok((order, doc));
        }
        order.version += 1;
        if store.update_order(&order).await? {
            return Ok((order, doc));
        }
    }
    Err(Problem::internal(format!(
        "order {id} kept changing under an update"
    )))
}

#[derive(Deserialize)]
struct Finalize {
    csr: String,
}

/// POST `/acme/NAME/order/ID/finalize`.
pub(crate) async fn finalize(
    Path((_, id)): Path<(String, String)>,
    ByKid(s): ByKid,
) -> Result<Response, Problem> {
    let order = own_order(&s, &id).await?;
    let doc = OrderDoc::of(&order)?;
    let now = OffsetDateTime::now_utc();
    let status = order_status(&order, &doc, now);
    if status != "ready" {
        return Err(Problem::order_not_ready(format!(
            "the order is {status}, not ready"
        )));
    }
    let req: Finalize = s.payload()?;
    let der = b64("csr", &req.csr)?;
    if der.len() > crate::csr::MAX_CSR_PEM {
        return Err(Problem::bad_csr("the CSR is too large"));
    }
    let pem = csr_pem(&der);
    let csr = crate::csr::parse_csr(&pem).map_err(|e| Problem::bad_csr(e.to_string()))?;
    // The CSR must ask for exactly the order's names: no more, no fewer.
    let mut wanted_dns = BTreeSet::new();
    let mut wanted_ips = BTreeSet::new();
    for id in &doc.identifiers {
        match id.kind.as_str() {
            "ip" => {
                wanted_ips.insert(id.value.parse::<IpAddr>().map_err(Problem::internal)?);
            }
            _ => {
                wanted_dns.insert(id.value.clone());
            }
        }
    }
    let asked_dns: BTreeSet<String> = csr
        .requested
        .dns
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let asked_ips: BTreeSet<IpAddr> = csr.requested.ips.iter().copied().collect();
    if asked_dns != wanted_dns || asked_ips != wanted_ips {
        return Err(Problem::bad_csr(
            "the CSR's names must be exactly the order's identifiers",
        ));
    }
    if !csr.requested.uris.is_empty() || !csr.requested.other.is_empty() {
        return Err(Problem::bad_csr(
            "the CSR may name only DNS names and IP addresses",
        ));
    }
    for cn in &csr.requested.common_names {
        let cn = cn.to_ascii_lowercase();
        if !wanted_dns.contains(&cn)
            && !cn
                .parse::<IpAddr>()
                .is_ok_and(|ip| wanted_ips.contains(&ip))
        {
            return Err(Problem::bad_csr(
                "the CSR's common name is not one of the order's names",
            ));
        }
    }
    let prov = s.provisioner()?;
    let ttl = prov
        .profiles
        .get(&doc.profile)
        .ok_or_else(|| {
            Problem::internal(format!(
                "profile {} vanished from the configuration",
                doc.profile
            ))
        })
        .and_then(|t| ward_pki::parse_duration(t).map_err(Problem::internal))?;
    // Claim the order: only one finalize may sign.
    let mut claimed = false;
    update_order(&s.acme, &id, |order, doc| {
        if order_status(order, doc, now) == "ready" {
            order.status = "processing".into();
            claimed = true;
        }
        Ok(())
    })
    .await?;
    if !claimed {
        return Err(Problem::order_not_ready(
            "the order is already being finalized",
        ));
    }
    let dns: Vec<String> = wanted_dns.into_iter().collect();
    let ips: Vec<IpAddr> = wanted_ips.into_iter().collect();
    let issued = s
        .acme
        .authority
        .issue_acme(&csr.spki_der, &dns, &ips, &doc.profile, ttl, now)
        .await;
    let (order, doc) = update_order(&s.acme, &id, |order, doc| {
        match &issued {
            Ok(issued) => {
                order.status = "valid".into();
                order.cert_serial = Some(issued.serial.to_string());
            }
            Err(e) => {
                order.status = "invalid".into();
                doc.error = Some(
                    Problem::new(
                        "serverInternal",
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("issuance failed: {e}"),
                    )
                    .to_json(),
                );
            }
        }
        Ok(())
    })
    .await?;
    if let Err(e) = issued {
        return Err(e.into());
    }
    Ok(order_response(&s.base, &order, &doc, StatusCode::OK))
}

/// A DER CSR as PEM, for the CA's one CSR parser.
fn csr_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE REQUEST-----\n");
    out
}

/// POST-as-GET `/acme/NAME/cert/ORDER`: the PEM chain.
pub(crate) async fn certificate(
    Path((_, id)): Path<(String, String)>,
    ByKid(s): ByKid,
) -> Result<Response, Problem> {
    let order = own_order(&s, &id).await?;
    let serial: Serial = order
        .cert_serial
        .as_deref()
        .ok_or_else(|| Problem::not_found("certificate"))?
        .parse()
        .map_err(Problem::internal)?;
    let cert = s
        .acme
        .authority
        .store()
        .certificate(&serial)
        .await?
        .ok_or_else(|| Problem::not_found("certificate"))?;
    let chain = format!(
        "{}{}",
        ward_pki::pem::cert_to_pem(&cert.record.der),
        ward_pki::pem::cert_to_pem(&s.acme.authority.intermediate_der())
    );
    let mut response = (StatusCode::OK, chain).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pem-certificate-chain"),
    );
    Ok(with_index(&s.base, response))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    certificate: String,
    #[serde(default)]
    reason: Option<i16>,
}

/// POST `/acme/NAME/revoke-cert`: by the issuing account (kid) or by the
/// certificate's own key (jwk).
pub(crate) async fn revoke(ByEither(s): ByEither) -> Result<Response, Problem> {
    let req: Revoke = s.payload()?;
    if let Some(r) = req.reason
        && !matches!(r, 0..=6 | 8..=10)
    {
        return Err(Problem::new(
            "badRevocationReason",
            StatusCode::BAD_REQUEST,
            format!("reason {r} is not an RFC 5280 reason code"),
        ));
    }
    let der = b64("certificate", &req.certificate)?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|_| Problem::malformed("certificate is not a DER X.509 certificate"))?;
    let serial = Serial::from_be_bytes(cert.raw_serial())
        .map_err(|_| Problem::malformed("bad serial number"))?;
    let store = s.acme.authority.store();
    let record = store
        .certificate(&serial)
        .await?
        .filter(|c| c.record.der == der)
        .ok_or_else(|| Problem::not_found("certificate issued by this CA"))?;
    let authorized = match &s.account {
        Some(account) => store
            .acme()
            .order_by_certificate(&serial.to_string())
            .await?
            .is_some_and(|o| o.account_id == account.id),
        None => record.record.origin == Origin::Acme && s.jwk.matches_spki(cert.public_key()),
    };
    if !authorized {
        return Err(Problem::unauthorized(
            "neither the issuing account nor the certificate's key signed this request",
        ));
    }
    if record.revoked_at.is_some() {
        return Err(Problem::new(
            "alreadyRevoked",
            StatusCode::BAD_REQUEST,
            "already revoked",
        ));
    }
    s.acme
        .authority
        .revoke_certificate(&serial, req.reason, OffsetDateTime::now_utc())
        .await?;
    Ok(with_index(&s.base, StatusCode::OK.into_response()))
}

/// Reads an ARI certID (`base64url(AKI keyIdentifier).base64url(serial)`)
/// of a certificate this CA's intermediate issued.
fn serial_of_cert_id(acme: &Acme, cert_id: &str) -> Result<Serial, Problem> {
    let (aki, serial) = cert_id
        .split_once('.')
        .ok_or_else(|| Problem::malformed("a certID is AKI.serial"))?;
    let aki = b64("certID key identifier", aki)?;
    let serial = b64("certID serial", serial)?;
    if Some(aki.as_slice()) != intermediate_ski(acme).as_deref() {
        return Err(Problem::not_found("certificate issued by this CA"));
    }
    Serial::from_be_bytes(&serial).map_err(|_| Problem::malformed("bad serial in certID"))
}

fn intermediate_ski(acme: &Acme) -> Option<Vec<u8>> {
    let der = acme.authority.intermediate_der();
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// GET `/acme/NAME/renewal-info/CERTID` (RFC 9773): the last third of the
/// lifetime (renew from 2/3 on, before 5/6); at once after a revocation.
pub(crate) async fn renewal_info(
    State(state): State<AppState>,
    Path((p, cert_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let acme = acme_for(&state, &p)?;
    let base = Base::of(&p, &uri, &headers)?;
    let serial = serial_of_cert_id(&acme, &cert_id)?;
    let cert = acme
        .authority
        .store()
        .certificate(&serial)
        .await?
        .ok_or_else(|| Problem::not_found("certificate"))?;
    let now = OffsetDateTime::now_utc();
    let (start, end) = if cert.revoked_at.is_some() {
        (
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
    } else {
        let nb = cert.record.not_before;
        let life = cert.record.not_after - nb;
        (nb + life * 2 / 3, nb + life * 5 / 6)
    };
    let body = json!({
        "suggestedWindow": { "start": rfc3339(start), "end": rfc3339(end) },
    });
    let mut response = json_response(&base, StatusCode::OK, None, body);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
    Ok(response)
}
