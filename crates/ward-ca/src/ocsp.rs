//! The CA's OCSP responder (RFC 6960), behind `GET /ocsp/{base64}` and
//! `POST /ocsp` on both listeners.
//!
//! Who signs what (ARCHITECTURE.md, traps 9, 13, 14):
//!
//! - Answers about certificates the intermediate issued are signed by a
//!   delegated responder certificate (id-kp-OCSPSigning, ocsp-nocheck) that
//!   `ward ca serve` issues itself from the intermediate, keeps only in
//!   memory and replaces at two thirds of its life ([`RESPONDER_TTL`]).
//!   Each replica has its own; any of them verifies.
//! - Answers about an intermediate (nginx `ssl_ocsp on` asks) must come
//!   from the root that issued it or a responder that root issued, or
//!   OpenSSL rejects them. Each root answers for itself, chosen by the
//!   CertID's issuer hashes: the first root with the responder `ward ca
//!   init` writes (`root-ocsp.crt`), a rotated root with the one `ward ca
//!   rotate root` writes beside it (`roots/<sha256>-ocsp.crt`); else that
//!   root's key when the directory holds it, else `unauthorized` (never
//!   another root's signature). Rotated roots are learnt, and forgotten
//!   once cancelled or expired, as [`Responder::follow_roots`] is told.
//!   A serial under a root is `good` only for an intermediate that root
//!   signed.
//! - A CertID naming neither CA gets the certStatus `unknown` (RFC 6960
//!   §2.2: "the responder doesn't know about the certificate"), in a signed
//!   answer, so a client asking about several certificates learns which
//!   ones this responder serves. An unknown serial under a known issuer is
//!   also `unknown`.
//!
//! Every answer is built from the store on request, so a revocation is
//! visible at once, on every replica; nothing is cached here. The answer is
//! signed by the issuer of the *first* certificate asked about; clients ask
//! about one issuer per request.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::sync::watch;
use ward_pki::ocsp::{self, IssuerId, Query, Refusal, Request, Signer, Status};
use ward_pki::{KeyType, PublicKeyKind, Serial};

use ward_store::Origin;

use crate::authority::{Authority, AuthorityError};
use crate::dir::RootOcspSigner;

/// Lifetime of the delegated responder certificate for leaves; renewed at
/// two thirds.
pub const RESPONDER_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long to wait before retrying a failed responder renewal.
const RETRY: Duration = Duration::from_secs(60);

/// How OCSP answers are made.
#[derive(Clone, Copy, Debug)]
pub struct OcspSettings {
    /// nextUpdate = thisUpdate + validity.
    pub validity: Duration,
}

impl Default for OcspSettings {
    fn default() -> Self {
        OcspSettings {
            validity: Duration::from_secs(300),
        }
    }
}

/// The delegated responder currently signing answers about leaves of one
/// intermediate.
#[derive(Debug)]
struct LeafSigner {
    signer: Signer,
    cert: CertificateDer<'static>,
    renews_at: OffsetDateTime,
}

/// One intermediate this responder answers for: the signing one, and
/// during a rotation the next one and earlier ones whose certificates
/// have not all expired.
#[derive(Debug)]
struct Intermediate {
    der: CertificateDer<'static>,
    id: IssuerId,
    serial: Serial,
    leaf: LeafSigner,
}

/// One root this responder answers for (about the intermediates it
/// issued), with the signer of those answers.
struct Root {
    der: CertificateDer<'static>,
    id: IssuerId,
    /// `None`: questions about it are refused (`unauthorized`).
    signer: Option<Arc<Signer>>,
}

/// The OCSP responder of one CA instance.
pub struct Responder {
    authority: Arc<Authority>,
    settings: OcspSettings,
    org: String,
    /// The directory's roots (`root.crt`), answered for by the signer
    /// `ward ca serve` found at start.
    first_roots: Vec<Arc<Root>>,
    /// Rotated roots not cancelled and not expired.
    rotated: ArcSwap<Vec<Arc<Root>>>,
    /// The signing intermediate first.
    intermediates: ArcSwap<Vec<Arc<Intermediate>>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The answer to one OCSP request: DER and how long it may be cached.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The DER OCSPResponse.
    pub der: Vec<u8>,
    /// Seconds until nextUpdate (0 for refusals).
    pub max_age: u64,
    /// Whether the answer is a signed, successful response.
    pub successful: bool,
    /// What it said, for `ward_ca_ocsp_responses_total{result}`: `good`,
    /// `revoked` or `unknown` (the status of every certificate asked
    /// about; `mixed` when they differ), or the refusal
    /// (`malformed_request`, `internal_error`, `try_later`, `unauthorized`).
    pub result: &'static str,
}

impl Answer {
    /// A refusal with this status.
    pub fn refused(status: Refusal) -> Self {
        Answer {
            der: ocsp::refusal(status),
            max_age: 0,
            successful: false,
            result: match status {
                Refusal::MalformedRequest => "malformed_request",
                Refusal::InternalError => "internal_error",
                Refusal::TryLater => "try_later",
                Refusal::Unauthorized => "unauthorized",
            },
        }
    }
}

impl Responder {
    /// A responder for `authority`: issues the first delegated responder
    /// certificate. `root_signer` answers about the intermediate.
    pub fn new(
        authority: Arc<Authority>,
        root_signer: RootOcspSigner,
        org: &str,
        settings: OcspSettings,
        now: OffsetDateTime,
    ) -> Result<Self, crate::Error> {
        let root_signer = match root_signer {
            RootOcspSigner::Delegated(s) => Some(s),
            RootOcspSigner::RootKey(s) => {
                tracing::warn!(
                    "no root-ocsp.crt in the CA directory: OCSP answers about the intermediate are signed with the root key"
                );
                Some(s)
            }
            RootOcspSigner::None => {
                tracing::warn!(
                    "no valid root-issued OCSP responder and the root is offline: OCSP requests about the intermediate are refused (unauthorized)"
                );
                None
            }
        };
        let root_signer = root_signer.map(Arc::new);
        // Only the directory's roots: a rotated root is answered for by
        // its own responder, once `follow_roots` learns it.
        let first_roots = authority
            .directory_roots()
            .iter()
            .map(|r| {
                Ok(Arc::new(Root {
                    der: r.clone(),
                    id: IssuerId::from_cert_der(r)?,
                    signer: root_signer.clone(),
                }))
            })
            .collect::<Result<Vec<_>, ward_pki::Error>>()
            .map_err(crate::Error::pki("reading the roots"))?;
        let signing = authority.signing();
        let first = intermediate(&signing.issuer, org, now)?;
        Ok(Responder {
            authority,
            settings,
            org: org.to_owned(),
            first_roots,
            rotated: ArcSwap::from_pointee(Vec::new()),
            intermediates: ArcSwap::from_pointee(vec![Arc::new(first)]),
        })
    }

    /// Answers about the intermediates of exactly these rotated roots from
    /// now on (every one not cancelled and not expired; the directory's
    /// own roots are always answered for): keeps the signers of roots
    /// already known, asks `load` for each new one, and asks again for a
    /// root that had none or whose signer has expired by `now` (a new
    /// responder may have been put in place since). A root `load` fails
    /// for is kept without a signer and the error returned after the
    /// others are in place.
    pub fn follow_roots<E: std::fmt::Display>(
        &self,
        roots: &[CertificateDer<'static>],
        now: OffsetDateTime,
        mut load: impl FnMut(&CertificateDer<'static>) -> Result<RootOcspSigner, E>,
    ) -> Result<(), String> {
        let known = self.rotated.load_full();
        let mut next = Vec::with_capacity(roots.len());
        let mut failed = Vec::new();
        for der in roots {
            if self.first_roots.iter().any(|r| r.der == *der) {
                continue;
            }
            let had = known.iter().find(|k| k.der == *der);
            if let Some(k) = had
                && k.signer.as_ref().is_some_and(|s| s.not_after() > now)
            {
                next.push(k.clone());
                continue;
            }
            let signer = match load(der) {
                Ok(RootOcspSigner::Delegated(s)) => Some(Arc::new(s)),
                Ok(RootOcspSigner::RootKey(s)) => {
                    if had.is_none() {
                        tracing::warn!(
                            root = %ward_pki::Fingerprint::of_der(der),
                            "no OCSP responder beside a rotated root: OCSP answers about its intermediates are signed with its key"
                        );
                    }
                    Some(Arc::new(s))
                }
                Ok(RootOcspSigner::None) => {
                    if had.is_none() {
                        tracing::warn!(
                            root = %ward_pki::Fingerprint::of_der(der),
                            "no valid OCSP responder and no key for a rotated root: OCSP requests about its intermediates are refused (unauthorized)"
                        );
                    }
                    None
                }
                Err(e) => {
                    failed.push(format!("{}: {e}", ward_pki::Fingerprint::of_der(der)));
                    None
                }
            };
            if signer.is_some() {
                tracing::info!(
                    root = %ward_pki::Fingerprint::of_der(der),
                    "OCSP: answering about the intermediates of a rotated root"
                );
            }
            let id =
                IssuerId::from_cert_der(der).map_err(|e| format!("reading a rotated root: {e}"))?;
            next.push(Arc::new(Root {
                der: der.clone(),
                id,
                signer,
            }));
        }
        self.rotated.store(Arc::new(next));
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "loading the OCSP responder of a rotated root: {}",
                failed.join("; ")
            ))
        }
    }

    /// The root a question is about, if it is one this responder knows.
    fn root_of(&self, q: &Query) -> Option<Arc<Root>> {
        self.first_roots
            .iter()
            .find(|r| q.is_about(&r.id))
            .cloned()
            .or_else(|| {
                self.rotated
                    .load()
                    .iter()
                    .find(|r| q.is_about(&r.id))
                    .cloned()
            })
    }

    /// When the first delegated responder for leaves is due for renewal.
    pub fn renews_at(&self) -> OffsetDateTime {
        self.intermediates
            .load()
            .iter()
            .map(|i| i.leaf.renews_at)
            .min()
            .unwrap_or_else(OffsetDateTime::now_utc)
    }

    /// The delegated responder certificate signing answers about leaves of
    /// the signing intermediate now.
    pub fn responder_cert(&self) -> CertificateDer<'static> {
        self.intermediates
            .load()
            .first()
            .map(|i| i.leaf.cert.clone())
            .unwrap_or_else(|| CertificateDer::from(Vec::new()))
    }

    /// The notAfter of the delegated responder of the signing intermediate.
    pub fn responder_not_after(&self) -> Option<OffsetDateTime> {
        self.intermediates
            .load()
            .first()
            .map(|i| i.leaf.signer.not_after())
    }

    /// Records the delegated responder certificates in use (origin
    /// `ocsp-responder`); `ward ca serve` calls it before it answers.
    pub async fn record_current(&self, now: OffsetDateTime) -> Result<(), AuthorityError> {
        let all = self.intermediates.load_full();
        for i in all.iter() {
            self.authority
                .record_signed(&i.leaf.cert, Origin::OcspResponder, now)
                .await?;
        }
        Ok(())
    }

    /// Renews the delegated responders due by `now`, records them, and
    /// starts signing with them.
    pub async fn rotate(&self, now: OffsetDateTime) -> Result<(), AuthorityError> {
        let all = self.intermediates.load_full();
        let mut next = Vec::with_capacity(all.len());
        for i in all.iter() {
            if i.leaf.renews_at > now {
                next.push(i.clone());
                continue;
            }
            let issuer = self.authority.issuer_for(&i.der).ok_or_else(|| {
                AuthorityError::Internal("an intermediate's key is no longer loaded".into())
            })?;
            let leaf = leaf_signer(&issuer, &self.org, now)
                .map_err(|e| AuthorityError::Internal(e.to_string()))?;
            self.authority
                .record_signed(&leaf.cert, Origin::OcspResponder, now)
                .await?;
            next.push(Arc::new(Intermediate {
                der: i.der.clone(),
                id: i.id.clone(),
                serial: i.serial.clone(),
                leaf,
            }));
        }
        self.intermediates.store(Arc::new(next));
        Ok(())
    }

    /// Answers for exactly these intermediates from now on (a rotation
    /// changed them), the signing one first: keeps the responders of those
    /// already known, issues and records one for each new one.
    pub async fn follow(
        &self,
        issuers: &[Arc<ward_pki::issue::Issuer>],
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        let known = self.intermediates.load_full();
        let mut next = Vec::with_capacity(issuers.len());
        for issuer in issuers {
            if let Some(k) = known.iter().find(|k| k.der == *issuer.cert_der()) {
                next.push(k.clone());
                continue;
            }
            let made = intermediate(issuer, &self.org, now)
                .map_err(|e| AuthorityError::Internal(e.to_string()))?;
            self.authority
                .record_signed(&made.leaf.cert, Origin::OcspResponder, now)
                .await?;
            next.push(Arc::new(made));
        }
        self.intermediates.store(Arc::new(next));
        Ok(())
    }

    /// Answers a DER OCSPRequest. Always yields an OCSPResponse: a refusal
    /// status when the request is malformed, storage is unreachable, or
    /// signing fails.
    pub async fn answer(&self, request_der: &[u8], now: OffsetDateTime) -> Answer {
        let request = match ocsp::parse_request(request_der) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "malformed OCSP request");
                return Answer::refused(Refusal::MalformedRequest);
            }
        };
        let mut answers = Vec::with_capacity(request.queries.len());
        for q in &request.queries {
            match self.status(q).await {
                Ok(status) => answers.push((q.clone(), status)),
                Err(e) => {
                    tracing::error!(error = %e, "OCSP: storage unavailable");
                    return Answer::refused(Refusal::TryLater);
                }
            }
        }
        let first = request.queries.first();
        let about_root = first.and_then(|q| self.root_of(q));
        let all = self.intermediates.load();
        // A question about no known issuer is answered (`unknown`) by the
        // signing intermediate's responder.
        let about = first
            .and_then(|q| all.iter().find(|i| q.is_about(&i.id)))
            .or_else(|| all.first());
        let signer = if let Some(root) = &about_root {
            match &root.signer {
                Some(s) => s.as_ref(),
                None => return Answer::refused(Refusal::Unauthorized),
            }
        } else {
            match about {
                Some(i) => &i.leaf.signer,
                None => return Answer::refused(Refusal::TryLater),
            }
        };
        sign_answer(signer, &request, &answers, now, self.settings.validity)
    }

    async fn status(&self, q: &Query) -> Result<Status, ward_store::StoreError> {
        let Some(serial) = q.serial() else {
            return Ok(Status::Unknown);
        };
        let all = self.intermediates.load_full();
        if all.iter().any(|i| q.is_about(&i.id)) {
            let record = self.authority.store().certificate(&serial).await?;
            return Ok(match record {
                None => Status::Unknown,
                Some(c) => match c.revoked_at {
                    Some(at) => Status::Revoked {
                        at,
                        reason: c.revocation_reason,
                    },
                    None => Status::Good,
                },
            });
        }
        if let Some(root) = self.root_of(q)
            && all
                .iter()
                .any(|i| i.serial == serial && signed_by(&i.der, &root.der))
        {
            return Ok(Status::Good);
        }
        Ok(Status::Unknown)
    }
}

/// Whether `root` signed the intermediate `der` (same issuer name, and its
/// signature verifies under the root's key): a root answers `good` only
/// about its own intermediates.
fn signed_by(der: &[u8], root: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, root))) = (
        x509_parser::parse_x509_certificate(der),
        x509_parser::parse_x509_certificate(root),
    ) else {
        return false;
    };
    cert.issuer() == root.subject() && ward_pki::sig::verify_cert(&cert, root.public_key()).is_ok()
}

/// Signs the answers to `request`, valid for `validity` from `now` (shared
/// by [`Responder::answer`] and the fuzz targets).
pub(crate) fn sign_answer(
    signer: &Signer,
    request: &Request,
    answers: &[(Query, Status)],
    now: OffsetDateTime,
    validity: Duration,
) -> Answer {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let next = now + validity;
    match signer.respond(request, answers, now, next) {
        Ok(der) => Answer {
            der,
            max_age: validity.as_secs(),
            successful: true,
            result: summary(answers),
        },
        Err(e @ ward_pki::Error::KeyUnavailable(_)) => {
            tracing::error!(error = %e, "signing an OCSP response failed");
            Answer::refused(Refusal::TryLater)
        }
        Err(e) => {
            tracing::error!(error = %e, "signing an OCSP response failed");
            Answer::refused(Refusal::InternalError)
        }
    }
}

/// One word for the statuses of a response (see [`Answer::result`]).
fn summary(answers: &[(Query, Status)]) -> &'static str {
    let word = |s: &Status| match s {
        Status::Good => "good",
        Status::Revoked { .. } => "revoked",
        Status::Unknown => "unknown",
    };
    let mut words = answers.iter().map(|(_, s)| word(s));
    let first = words.next().unwrap_or("unknown");
    if words.all(|w| w == first) {
        first
    } else {
        "mixed"
    }
}

fn intermediate(
    issuer: &ward_pki::issue::Issuer,
    org: &str,
    now: OffsetDateTime,
) -> Result<Intermediate, crate::Error> {
    let der = issuer.cert_der().clone();
    let id =
        IssuerId::from_cert_der(&der).map_err(crate::Error::pki("reading the intermediate"))?;
    let serial = {
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| crate::Error::Config(format!("reading the intermediate: {e}")))?;
        Serial::from_be_bytes(cert.raw_serial())
            .map_err(crate::Error::pki("reading the intermediate's serial"))?
    };
    let leaf = leaf_signer(issuer, org, now)
        .map_err(crate::Error::pki("issuing the OCSP responder certificate"))?;
    Ok(Intermediate {
        der,
        id,
        serial,
        leaf,
    })
}

fn leaf_signer(
    issuer: &ward_pki::issue::Issuer,
    org: &str,
    now: OffsetDateTime,
) -> Result<LeafSigner, ward_pki::Error> {
    // Same algorithm as the intermediate, so clients that accept the CA
    // accept its responder.
    let key_type = x509_parser::parse_x509_certificate(issuer.cert_der())
        .ok()
        .and_then(|(_, c)| PublicKeyKind::from_spki(c.public_key()).key_type().ok())
        .unwrap_or(KeyType::EcdsaP256);
    let key = key_type.generate()?;
    let issued = ocsp::issue_responder(issuer, &key, org, "OCSP Responder", RESPONDER_TTL, now)?;
    let signer = Signer::new(
        &issued.der,
        key,
        &[issued.der.clone(), issuer.cert_der().clone()],
    )?;
    let life = issued.not_after - now;
    Ok(LeafSigner {
        signer,
        cert: issued.der,
        renews_at: now + life * 2 / 3,
    })
}

/// Renews the delegated responder at two thirds of its life until `stop`
/// turns true (run by `ward ca serve`).
pub async fn rotate_loop(responder: Arc<Responder>, mut stop: watch::Receiver<bool>) {
    let mut due = responder.renews_at();
    loop {
        let wait = (due - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            () = tokio::time::sleep(wait) => {
                let now = OffsetDateTime::now_utc();
                match responder.rotate(now).await {
                    Ok(()) => {
                        tracing::info!("renewed the OCSP responder certificate");
                        due = responder.renews_at();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "renewing the OCSP responder certificate failed; retrying in 60s");
                        due = now + RETRY;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
