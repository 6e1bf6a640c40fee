//! OCSP (RFC 6960) encoding: parsing requests, building and signing basic
//! responses, delegated responder certificates, and the Authority
//! Information Access extension that points clients at a responder.
//!
//! Pure: the caller looks up each certificate's status and hands in the
//! clock. `x509-ocsp` supplies the ASN.1 types; the `tbsResponseData` DER
//! is signed here with Ward's own key type (ARCHITECTURE.md, trap 9).
//! Nothing here decides *who* signs an answer; see `ward-ca`'s responder.

use std::time::Duration;

use aws_lc_rs::digest;
use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SigningKey as _,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use crate::issue::{Issued, Issuer};
use crate::{Error, PrivateKey, Serial};

mod validate;

pub use self::validate::{CertState, ResponseError, Validated, validate_response};

/// Largest OCSP request accepted (DER bytes). A request for one certificate
/// is about 80 bytes; this leaves room for many plus a signature.
pub const MAX_REQUEST: usize = 16 * 1024;

/// Most certificates answered in one request.
pub const MAX_QUERIES: usize = 64;

/// Longest request nonce echoed, in octets of the nonce itself (the
/// OCTET STRING inside the extension value, RFC 8954). RFC 8954 asks
/// responders to accept 16–32 octet nonces; longer ones are left out of
/// the answer, which the RFC allows.
pub const MAX_NONCE: usize = 64;

const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
/// id-pkix-ocsp-basic.
const OID_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-pkix-ocsp-nocheck, as rcgen wants it.
const ARCS_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];

/// The CertID hash algorithms understood: SHA-1 (what most clients send)
/// and the SHA-2 family.
const HASHES: [(ObjectIdentifier, &digest::Algorithm); 4] = [
    (OID_SHA1, &digest::SHA1_FOR_LEGACY_USE_ONLY),
    (OID_SHA256, &digest::SHA256),
    (OID_SHA384, &digest::SHA384),
    (OID_SHA512, &digest::SHA512),
];

/// A request that is not a well-formed OCSPRequest (answered with the
/// `malformedRequest` status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed OCSP request: {0}")]
pub struct Malformed(pub String);

/// The non-successful OCSPResponseStatus values a responder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request was not a valid OCSPRequest.
    MalformedRequest,
    /// The responder failed.
    InternalError,
    /// The responder cannot answer now (e.g. storage unavailable).
    TryLater,
    /// The responder may not answer for this CA.
    Unauthorized,
}

/// The DER OCSPResponse carrying only a refusal status (no responseBytes).
pub fn refusal(status: Refusal) -> Vec<u8> {
    let code = match status {
        Refusal::MalformedRequest => OcspResponseStatus::MalformedRequest,
        Refusal::InternalError => OcspResponseStatus::InternalError,
        Refusal::TryLater => OcspResponseStatus::TryLater,
        Refusal::Unauthorized => OcspResponseStatus::Unauthorized,
    };
    // SEQUENCE { ENUMERATED code }: five fixed bytes.
    vec![0x30, 0x03, 0x0a, 0x01, code as u8]
}

/// One certificate asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    cert_id: CertId,
}

impl Query {
    /// The serial asked about; `None` when it is not a positive integer of at
    /// most 20 octets (no Ward certificate has such a serial).
    pub fn serial(&self) -> Option<Serial> {
        let bytes = self.cert_id.serial_number.as_bytes();
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            return None;
        }
        Serial::from_be_bytes(bytes).ok()
    }

    /// Whether the CertID names `issuer` (name and key hash, with any of the
    /// supported hash algorithms).
    pub fn is_about(&self, issuer: &IssuerId) -> bool {
        issuer.hashes.iter().any(|h| {
            h.alg == self.cert_id.hash_algorithm.oid
                && h.name.as_slice() == self.cert_id.issuer_name_hash.as_bytes()
                && h.key.as_slice() == self.cert_id.issuer_key_hash.as_bytes()
        })
    }

    /// The SHA-1 CertID (what RFC 5019 clients send) of the certificate
    /// `leaf_der`, issued by `issuer_der`: what the gate staples and
    /// `ward check` asks about. The serial is taken as the leaf carries it.
    pub fn for_certificate(leaf_der: &[u8], issuer_der: &[u8]) -> Result<Self, Error> {
        let leaf = Certificate::from_der(leaf_der)
            .map_err(|e| Error::InvalidCertificate(format!("the certificate: {e}")))?;
        let issuer = Certificate::from_der(issuer_der)
            .map_err(|e| Error::InvalidCertificate(format!("the issuer certificate: {e}")))?;
        if leaf.tbs_certificate.issuer != issuer.tbs_certificate.subject {
            return Err(Error::InvalidCertificate(
                "the issuer certificate did not issue the certificate (the names differ)".into(),
            ));
        }
        let issuer = IssuerId::from_cert_der(issuer_der)?;
        Self::with_serial(&issuer, OID_SHA1, leaf.tbs_certificate.serial_number)
    }

    /// The CertID of `serial_number` under `issuer`, hashed with `alg`.
    fn with_serial(
        issuer: &IssuerId,
        alg: ObjectIdentifier,
        serial_number: x509_cert::serial_number::SerialNumber,
    ) -> Result<Self, Error> {
        let h = issuer
            .hashes
            .iter()
            .find(|h| h.alg == alg)
            .ok_or_else(|| Error::Crypto("missing issuer hash".into()))?;
        Ok(Query {
            cert_id: CertId {
                hash_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
                    oid: alg,
                    parameters: Some(Any::from(Null)),
                },
                issuer_name_hash: octets(h.name.clone())?,
                issuer_key_hash: octets(h.key.clone())?,
                serial_number,
            },
        })
    }

    /// Whether `other` is this CertID (same hash algorithm, hashes and
    /// serial).
    fn same_cert(&self, other: &CertId) -> bool {
        let a = &self.cert_id;
        a.hash_algorithm.oid == other.hash_algorithm.oid
            && a.issuer_name_hash == other.issuer_name_hash
            && a.issuer_key_hash == other.issuer_key_hash
            && a.serial_number == other.serial_number
    }

    /// The CertID for `serial` under `issuer`, hashed with SHA-1 or SHA-256
    /// (for tests and clients).
    pub fn new(issuer: &IssuerId, serial: &Serial, sha256: bool) -> Result<Self, Error> {
        let alg = if sha256 { OID_SHA256 } else { OID_SHA1 };
        let mut serial_der = serial.as_bytes().to_vec();
        if serial_der.first().is_some_and(|b| b & 0x80 != 0) {
            serial_der.insert(0, 0);
        }
        let serial_number = x509_cert::serial_number::SerialNumber::new(&serial_der)
            .map_err(|e| enc("serial", e))?;
        Self::with_serial(issuer, alg, serial_number)
    }
}

/// A parsed OCSPRequest: the certificates asked about and the nonce
/// extension to echo.
#[derive(Debug, Clone)]
pub struct Request {
    /// The certificates, in request order.
    pub queries: Vec<Query>,
    nonce: Option<Extension>,
}

impl Request {
    /// Whether the request carried a nonce that the answer will echo.
    pub fn has_nonce(&self) -> bool {
        self.nonce.is_some()
    }
}

/// Parses a DER OCSPRequest. Request signatures are ignored (RFC 6960
/// makes them optional and Ward's answers are public).
pub fn parse_request(der: &[u8]) -> Result<Request, Malformed> {
    if der.is_empty() {
        return Err(Malformed("empty request".into()));
    }
    if der.len() > MAX_REQUEST {
        return Err(Malformed(format!(
            "request is larger than {MAX_REQUEST} bytes"
        )));
    }
    let req = OcspRequest::from_der(der).map_err(|e| Malformed(format!("{e}")))?;
    let list = req.tbs_request.request_list;
    if list.is_empty() {
        return Err(Malformed("the request lists no certificate".into()));
    }
    if list.len() > MAX_QUERIES {
        return Err(Malformed(format!(
            "the request lists {} certificates; at most {MAX_QUERIES} are answered",
            list.len()
        )));
    }
    let nonce = req
        .tbs_request
        .request_extensions
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == OID_NONCE)
        .filter(|e| (1..=MAX_NONCE).contains(&nonce_len(e.extn_value.as_bytes())))
        .map(|e| Extension {
            critical: false,
            ..e
        });
    Ok(Request {
        queries: list
            .into_iter()
            .map(|r| Query {
                cert_id: r.req_cert,
            })
            .collect(),
        nonce,
    })
}

/// The length of a nonce given as an extension value: the octets of the
/// OCTET STRING it holds (RFC 8954), or, from clients that put the nonce
/// in the value unwrapped (as some older ones do), the whole value.
fn nonce_len(value: &[u8]) -> usize {
    match OctetString::from_der(value) {
        Ok(inner) => inner.as_bytes().len(),
        Err(_) => value.len(),
    }
}

/// Builds a DER OCSPRequest (for tests and `ward` tooling).
pub fn build_request(queries: &[Query], nonce: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let request_extensions = match nonce {
        Some(n) => Some(vec![Extension {
            extn_id: OID_NONCE,
            critical: false,
            extn_value: octets(octets(n.to_vec())?.to_der().map_err(|e| enc("nonce", e))?)?,
        }]),
        None => None,
    };
    let req = OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: queries
                .iter()
                .map(|q| x509_ocsp::Request {
                    req_cert: q.cert_id.clone(),
                    single_request_extensions: None,
                })
                .collect(),
            request_extensions,
        },
        optional_signature: None,
    };
    req.to_der().map_err(|e| enc("request", e))
}

#[derive(Debug, Clone)]
struct IssuerHash {
    alg: ObjectIdentifier,
    name: Vec<u8>,
    key: Vec<u8>,
}

/// What identifies a CA in a CertID: the hashes of its subject name and
/// public key under every supported hash algorithm.
#[derive(Debug, Clone)]
pub struct IssuerId {
    hashes: Vec<IssuerHash>,
}

impl IssuerId {
    /// The identity of the CA certificate `der`.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, Error> {
        let cert = Certificate::from_der(der)
            .map_err(|e| Error::InvalidCertificate(format!("CA certificate: {e}")))?;
        let name = cert
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| enc("CA subject", e))?;
        let key = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        Ok(IssuerId {
            hashes: HASHES
                .iter()
                .map(|(alg, d)| IssuerHash {
                    alg: *alg,
                    name: digest::digest(d, &name).as_ref().to_vec(),
                    key: digest::digest(d, key).as_ref().to_vec(),
                })
                .collect(),
        })
    }
}

/// The status of one certificate, as the caller found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Issued by this CA and not revoked.
    Good,
    /// Revoked at this time, with an RFC 5280 reason code (0 or `None`:
    /// no reason is written).
    Revoked {
        /// Revocation time.
        at: OffsetDateTime,
        /// RFC 5280 CRLReason code.
        reason: Option<i16>,
    },
    /// Not known to this responder (unknown issuer or serial).
    Unknown,
}

/// A key and certificate that sign OCSP responses: a CA about the
/// certificates it issued, or a delegated responder (id-kp-OCSPSigning)
/// that the CA issued.
pub struct Signer {
    key: PrivateKey,
    key_hash: Vec<u8>,
    algorithm: x509_cert::spki::AlgorithmIdentifierOwned,
    certs: Option<Vec<Certificate>>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("not_after", &self.not_after)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Signer {
    /// A signer with certificate `cert_der` and its `key`; `send` lists the
    /// certificates placed in each response so clients can build the
    /// signer's chain (a delegated responder and its issuer; nothing when the
    /// CA signs about its own certificates).
    pub fn new(
        cert_der: &CertificateDer<'_>,
        key: PrivateKey,
        send: &[CertificateDer<'_>],
    ) -> Result<Self, Error> {
        let cert = Certificate::from_der(cert_der)
            .map_err(|e| Error::InvalidCertificate(format!("OCSP signer: {e}")))?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let spki_der = spki.to_der().map_err(|e| enc("signer key", e))?;
        if spki_der != key.public_key_der() {
            return Err(Error::InvalidKey(
                "the private key does not belong to the OCSP signer certificate".into(),
            ));
        }
        let key_hash = digest::digest(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            spki.subject_public_key.raw_bytes(),
        )
        .as_ref()
        .to_vec();
        let certs = send
            .iter()
            .map(|c| {
                Certificate::from_der(c)
                    .map_err(|e| Error::InvalidCertificate(format!("OCSP signer chain: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let not_after = OffsetDateTime::from_unix_timestamp(
            i64::try_from(
                cert.tbs_certificate
                    .validity
                    .not_after
                    .to_unix_duration()
                    .as_secs(),
            )
            .unwrap_or(i64::MAX),
        )
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Ok(Signer {
            algorithm: signature_algorithm(&key)?,
            key,
            key_hash,
            certs: (!certs.is_empty()).then_some(certs),
            not_after,
        })
    }

    /// When the signer's certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Builds and signs a successful OCSPResponse answering `answers` (in
    /// order), valid from `this_update` to `next_update`, echoing the
    /// request's nonce. Returns the DER.
    pub fn respond(
        &self,
        request: &Request,
        answers: &[(Query, Status)],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, Error> {
        if next_update <= this_update {
            return Err(Error::Policy(
                "OCSP nextUpdate must follow thisUpdate".into(),
            ));
        }
        let this = gtime(this_update)?;
        let next = gtime(next_update)?;
        let responses = answers
            .iter()
            .map(|(q, status)| {
                Ok(SingleResponse {
                    cert_id: q.cert_id.clone(),
                    cert_status: cert_status(*status)?,
                    this_update: this,
                    next_update: Some(next),
                    single_extensions: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let tbs = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(octets(self.key_hash.clone())?),
            produced_at: this,
            responses,
            response_extensions: request.nonce.clone().map(|n| vec![n]),
        };
        let tbs_der = tbs.to_der().map_err(|e| enc("response data", e))?;
        let signature = self.key.sign(&tbs_der).map_err(|e| match e {
            rcgen::Error::RemoteKeyError => Error::from(e),
            e => Error::Crypto(format!("signing the OCSP response: {e}")),
        })?;
        let basic = BasicOcspResponse {
            tbs_response_data: tbs,
            signature_algorithm: self.algorithm.clone(),
            signature: BitString::from_bytes(&signature).map_err(|e| enc("signature", e))?,
            certs: self.certs.clone(),
        };
        OcspResponse::successful(basic)
            .and_then(|r| r.to_der())
            .map_err(|e| enc("response", e))
    }
}

fn cert_status(status: Status) -> Result<CertStatus, Error> {
    Ok(match status {
        Status::Good => CertStatus::good(),
        Status::Unknown => CertStatus::unknown(),
        Status::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
            revocation_time: gtime(at)?,
            revocation_reason: reason.and_then(crl_reason),
        }),
    })
}

fn crl_reason(code: i16) -> Option<CrlReason> {
    Some(match code {
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        8 => CrlReason::RemoveFromCRL,
        9 => CrlReason::PrivilegeWithdrawn,
        10 => CrlReason::AaCompromise,
        _ => return None,
    })
}

/// The AlgorithmIdentifier of the signatures `key` makes.
fn signature_algorithm(
    key: &PrivateKey,
) -> Result<x509_cert::spki::AlgorithmIdentifierOwned, Error> {
    let alg = rcgen::PublicKeyData::algorithm(key);
    let (oid, null_params) = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        ("1.2.840.10045.4.3.2", false)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        ("1.2.840.10045.4.3.3", false)
    } else if alg == &rcgen::PKCS_ED25519 {
        ("1.3.101.112", false)
    } else if alg == &rcgen::PKCS_RSA_SHA256 {
        ("1.2.840.113549.1.1.11", true)
    } else if alg == &rcgen::PKCS_RSA_SHA384 {
        ("1.2.840.113549.1.1.12", true)
    } else if alg == &rcgen::PKCS_RSA_SHA512 {
        ("1.2.840.113549.1.1.13", true)
    } else if alg == &rcgen::PKCS_ML_DSA_44 {
        ("2.16.840.1.101.3.4.3.17", false)
    } else if alg == &rcgen::PKCS_ML_DSA_65 {
        ("2.16.840.1.101.3.4.3.18", false)
    } else if alg == &rcgen::PKCS_ML_DSA_87 {
        ("2.16.840.1.101.3.4.3.19", false)
    } else {
        return Err(Error::InvalidKey(
            "unsupported key for signing OCSP responses".into(),
        ));
    };
    Ok(x509_cert::spki::AlgorithmIdentifierOwned {
        oid: ObjectIdentifier::new(oid).map_err(|e| Error::Crypto(format!("{e}")))?,
        parameters: null_params.then(|| Any::from(Null)),
    })
}

/// Issues a delegated OCSP responder certificate for `key` from `issuer`:
/// CA:false, digitalSignature, EKU id-kp-OCSPSigning and id-pkix-ocsp-nocheck
/// (clients need not check the responder's own revocation, RFC 6960
/// §4.2.2.2.1), valid for `validity` from `now` (capped at the issuer's
/// notAfter). `org` goes into the subject.
pub fn issue_responder(
    issuer: &Issuer,
    key: &PrivateKey,
    org: &str,
    role: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<Issued, Error> {
    let serial = Serial::random(now)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, format!("{org} {role}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    params.custom_extensions = vec![CustomExtension::from_oid_content(
        ARCS_NOCHECK,
        vec![0x05, 0x00],
    )];
    params.use_authority_key_identifier_extension = true;
    let skew =
        time::Duration::try_from(crate::issue::NOT_BEFORE_SKEW).unwrap_or(time::Duration::ZERO);
    let validity = time::Duration::try_from(validity)
        .map_err(|_| Error::Policy("duration too large".into()))?;
    params.not_before = (now - skew).max(issuer.not_before());
    params.not_after = now
        .checked_add(validity)
        .unwrap_or(issuer.not_after())
        .min(issuer.not_after());
    if params.not_after <= now {
        return Err(Error::Policy(
            "the issuing CA expires before the OCSP responder certificate would start".into(),
        ));
    }
    params.serial_number = Some(serial.to_rcgen());
    let cert = params.signed_by(key, issuer.rcgen_issuer())?;
    Ok(Issued {
        der: cert.der().clone(),
        serial,
        not_before: params.not_before,
        not_after: params.not_after,
    })
}

fn gtime(t: OffsetDateTime) -> Result<OcspGeneralizedTime, Error> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| Error::Policy("OCSP times must be after 1970".into()))?;
    GeneralizedTime::from_unix_duration(Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(|e| enc("time", e))
}

fn octets(bytes: Vec<u8>) -> Result<OctetString, Error> {
    OctetString::new(bytes).map_err(|e| enc("octet string", e))
}

fn enc(what: &str, e: der::Error) -> Error {
    Error::Crypto(format!("OCSP encoding ({what}): {e}"))
}

#[cfg(test)]
mod tests;
