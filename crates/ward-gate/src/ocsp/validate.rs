//! Validating an OCSP response for the gate's own certificate: signed by
//! the issuer or by a responder the issuer delegated OCSP signing to, about
//! the right certificate, status good, thisUpdate/nextUpdate sane.

use der::{Decode, Encode, Header, Reader, SliceReader};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_ocsp::{BasicOcspResponse, CertId, CertStatus, OcspResponse, OcspResponseStatus};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{OID_OCSP_BASIC, SKEW_SECONDS, Target};

/// A response that validated.
#[derive(Debug, Clone)]
pub(super) struct Good {
    pub(super) der: Vec<u8>,
    pub(super) this_update: i64,
    pub(super) next_update: i64,
}

/// Why a response was not stapled, with the metric label.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) label: &'static str,
    pub(super) why: String,
}

pub(super) fn refused(label: &'static str) -> impl Fn(String) -> Refused {
    move |why| Refused { label, why }
}

/// The contents (no tag, no length) of a DER value.
fn contents(der: &[u8]) -> Option<Vec<u8>> {
    let mut r = SliceReader::new(der).ok()?;
    let h = Header::decode(&mut r).ok()?;
    r.read_slice(h.length).ok().map(<[u8]>::to_vec)
}

/// Verifies `signature` over `message` with the SPKI `spki_der`, using the
/// algorithms of Ward's rustls provider.
fn verify_signature(
    spki_der: &[u8],
    algorithm: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
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
    ward_tls::provider()
        .signature_verification_algorithms
        .all
        .iter()
        .filter(|a| {
            a.public_key_alg_id().as_ref() == key_alg.as_slice()
                && a.signature_alg_id().as_ref() == sig_alg.as_slice()
        })
        .any(|a| a.verify_signature(key, message, signature).is_ok())
}

/// The raw DER of the first element of a SEQUENCE (the signed part).
pub(super) fn first_element(der: &[u8]) -> Option<Vec<u8>> {
    let mut r = SliceReader::new(der).ok()?;
    Header::decode(&mut r).ok()?;
    let any = der::asn1::AnyRef::decode(&mut r).ok()?;
    any.to_der().ok()
}

/// The SPKIs that may sign a response about a certificate of `issuer_der`:
/// the issuer's own, and those of delegated responders it certified for
/// OCSP signing (valid now).
fn signers(issuer_der: &[u8], certs: &[x509_cert::Certificate]) -> Vec<Vec<u8>> {
    let Ok((_, issuer)) = X509Certificate::from_der(issuer_der) else {
        return Vec::new();
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
            && cert.validity().is_valid()
            && cert.verify_signature(Some(issuer.public_key())).is_ok()
        {
            out.push(cert.public_key().raw.to_vec());
        }
    }
    out
}

fn same_cert(a: &CertId, b: &CertId) -> bool {
    a.hash_algorithm.oid == b.hash_algorithm.oid
        && a.issuer_name_hash == b.issuer_name_hash
        && a.issuer_key_hash == b.issuer_key_hash
        && a.serial_number == b.serial_number
}

/// Validates a DER OCSP response for `target` at `now` (Unix seconds).
pub(super) fn validate(target: &Target, der: &[u8], now: i64) -> Result<Good, Refused> {
    let malformed = refused("invalid");
    let resp =
        OcspResponse::from_der(der).map_err(|e| malformed(format!("not an OCSP response: {e}")))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(refused("responder_error")(format!(
            "the responder answered {:?}",
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
    let signed = signers(&target.issuer, &certs)
        .iter()
        .any(|spki| verify_signature(spki, &basic.signature_algorithm, &tbs, signature));
    if !signed {
        return Err(refused("untrusted")(
            "the response is signed neither by the issuer nor by a responder it delegated OCSP signing to".into(),
        ));
    }
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| same_cert(&r.cert_id, &target.cert_id))
        .ok_or_else(|| malformed("the response is about another certificate".into()))?;
    match &single.cert_status {
        CertStatus::Good(_) => {}
        CertStatus::Revoked(info) => {
            return Err(refused("revoked")(format!(
                "the responder says the gate's certificate is revoked (since Unix time {})",
                info.revocation_time.0.to_unix_duration().as_secs()
            )));
        }
        CertStatus::Unknown(_) => {
            return Err(refused("unknown")(
                "the responder does not know the gate's certificate".into(),
            ));
        }
    }
    let unix = |t: &x509_ocsp::OcspGeneralizedTime| {
        i64::try_from(t.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    let this_update = unix(&single.this_update);
    let next_update =
        single.next_update.as_ref().map(unix).ok_or_else(|| {
            malformed("no nextUpdate: nothing says until when to staple it".into())
        })?;
    if this_update > now + SKEW_SECONDS {
        return Err(malformed("thisUpdate lies in the future".into()));
    }
    if next_update <= this_update || next_update <= now {
        return Err(refused("expired")(
            "nextUpdate has passed (or precedes thisUpdate)".into(),
        ));
    }
    Ok(Good {
        der: der.to_vec(),
        this_update,
        next_update,
    })
}
