//! Validating an OCSP response about one certificate (RFC 6960 §3.2): the
//! one validator behind the gate's stapling and `ward check`.
//!
//! A response counts only when it is a successful basic response signed by
//! the certificate's issuer or by a responder the issuer certified for OCSP
//! signing (valid at the caller's `now`), and it carries a SingleResponse
//! whose CertID is the one asked about. What to make of the status and the
//! update times is the caller's policy: this module reports them.
//!
//! Pure: the caller hands in the bytes, the clock and the signature
//! algorithms it accepts (the gate its TLS provider's).

use der::{Decode, Encode, Header, Reader, SliceReader};
use rustls_pki_types::SignatureVerificationAlgorithm;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspResponse, OcspResponseStatus,
};
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

use super::{OID_OCSP_BASIC, Query};

/// What a validated response says about the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Not revoked.
    Good,
    /// Revoked at this time (Unix seconds).
    Revoked {
        /// revocationTime, Unix seconds.
        at: i64,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// The authenticated SingleResponse about the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    /// The certificate's status.
    pub state: CertState,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds, when the response has one.
    pub next_update: Option<i64>,
}

/// Why a response says nothing trustworthy about the certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not a well-formed basic OCSP response.
    #[error("{0}")]
    Malformed(String),
    /// The responder answered with a non-successful status.
    #[error("the responder answered {0}")]
    Unsuccessful(String),
    /// Signed neither by the issuer nor by a responder it delegated to.
    #[error(
        "the response is signed neither by the issuer nor by a responder it delegated OCSP signing to"
    )]
    Untrusted,
    /// The response holds no answer about the certificate asked about.
    #[error("the OCSP response says nothing about this certificate")]
    OtherCertificate,
}

/// The contents (no tag, no length) of a DER value.
fn contents(der: &[u8]) -> Option<Vec<u8>> {
    let mut r = SliceReader::new(der).ok()?;
    let h = Header::decode(&mut r).ok()?;
    r.read_slice(h.length).ok().map(<[u8]>::to_vec)
}

/// Verifies `signature` over `message` with the SPKI `spki_der`, using one
/// of `algs`.
fn verify_signature(
    spki_der: &[u8],
    algorithm: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> bool {
    let Ok(spki) = SubjectPublicKeyInfoOwned::from_der(spki_der) else {
        return false;
    };
    let (Some(key_alg), Some(sig_alg)) = (
        spki.algorithm.to_der().ok().and_then(|d| contents(&d)),
        algorithm.to_der().ok().and_then(|d| contents(&d)),
    ) else {
        return false;
    };
    let key = spki.subject_public_key.raw_bytes();
    algs.iter()
        .filter(|a| {
            a.public_key_alg_id().as_ref() == key_alg.as_slice()
                && a.signature_alg_id().as_ref() == sig_alg.as_slice()
        })
        .any(|a| a.verify_signature(key, message, signature).is_ok())
}

/// The raw DER of the first element of a SEQUENCE (the signed part).
fn first_element(der: &[u8]) -> Option<Vec<u8>> {
    let mut r = SliceReader::new(der).ok()?;
    Header::decode(&mut r).ok()?;
    let any = der::asn1::AnyRef::decode(&mut r).ok()?;
    any.to_der().ok()
}

/// The SPKIs that may sign a response about a certificate of `issuer_der`:
/// the issuer's own, and those of delegated responders it certified for
/// OCSP signing (valid at `now`).
fn signers(issuer_der: &[u8], certs: &[x509_cert::Certificate], now: i64) -> Vec<Vec<u8>> {
    let Ok((_, issuer)) = X509Certificate::from_der(issuer_der) else {
        return Vec::new();
    };
    let Ok(at) = ASN1Time::from_timestamp(now) else {
        return vec![issuer.public_key().raw.to_vec()];
    };
    let mut out = vec![issuer.public_key().raw.to_vec()];
    for c in certs {
        let Ok(der) = c.to_der() else { continue };
        let Ok((_, cert)) = X509Certificate::from_der(&der) else {
            continue;
        };
        let for_ocsp = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|e| e.value.ocsp_signing);
        if for_ocsp
            && cert.issuer().as_raw() == issuer.subject().as_raw()
            && cert.validity().is_valid_at(at)
            && crate::sig::verify_cert(&cert, issuer.public_key()).is_ok()
        {
            out.push(cert.public_key().raw.to_vec());
        }
    }
    out
}

fn unix(t: &OcspGeneralizedTime) -> i64 {
    i64::try_from(t.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// Validates a DER OCSP response about the certificate `query` names,
/// issued by `issuer_der`, at `now` (Unix seconds), accepting signatures
/// made with one of `algs`.
pub fn validate_response(
    der: &[u8],
    query: &Query,
    issuer_der: &[u8],
    now: i64,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<Validated, ResponseError> {
    let malformed = ResponseError::Malformed;
    let resp =
        OcspResponse::from_der(der).map_err(|e| malformed(format!("not an OCSP response: {e}")))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(ResponseError::Unsuccessful(format!(
            "{:?}",
            resp.response_status
        )));
    }
    let bytes = resp
        .response_bytes
        .ok_or_else(|| malformed("a successful response without responseBytes".into()))?;
    if bytes.response_type != OID_OCSP_BASIC {
        return Err(malformed(format!(
            "unsupported response type {}",
            bytes.response_type
        )));
    }
    let raw = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(raw)
        .map_err(|e| malformed(format!("BasicOCSPResponse: {e}")))?;
    let tbs = first_element(raw).ok_or_else(|| malformed("BasicOCSPResponse framing".into()))?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| malformed("signature with unused bits".into()))?;
    let certs = basic.certs.clone().unwrap_or_default();
    let signed = signers(issuer_der, &certs, now)
        .iter()
        .any(|spki| verify_signature(spki, &basic.signature_algorithm, &tbs, signature, algs));
    if !signed {
        return Err(ResponseError::Untrusted);
    }
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| query.same_cert(&r.cert_id))
        .ok_or(ResponseError::OtherCertificate)?;
    let state = match &single.cert_status {
        CertStatus::Good(_) => CertState::Good,
        CertStatus::Revoked(info) => CertState::Revoked {
            at: unix(&info.revocation_time),
        },
        CertStatus::Unknown(_) => CertState::Unknown,
    };
    Ok(Validated {
        state,
        this_update: unix(&single.this_update),
        next_update: single.next_update.as_ref().map(unix),
    })
}
