//! Revocation status of one certificate from a CRL or an OCSP response, for
//! `ward check`. Pure: the caller fetches the bytes (the URLs are in
//! [`super::Facts`]: `crl_urls`, `ocsp_urls`) and hands them in.
//!
//! Answers are authenticated: a CRL must be signed by the certificate's
//! issuer, an OCSP response by the issuer or by a responder certificate the
//! issuer signed for OCSPSigning. An answer that fails this is an error,
//! never a status.

use time::OffsetDateTime;
use x509_parser::asn1_rs::BitString;
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate, X509Error};
use x509_parser::x509::AlgorithmIdentifier;

use crate::issue::rfc3339;

/// id-pkix-ocsp-basic.
const OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// id-kp-OCSPSigning.
const EKU_OCSP_SIGNING: &str = "1.3.6.1.5.5.7.3.9";

/// What a revocation source says about the certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not revoked.
    Good,
    /// Revoked at this time (RFC 3339).
    Revoked {
        /// When it was revoked.
        at: String,
    },
    /// The OCSP responder does not know the certificate.
    Unknown,
}

/// An authenticated answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status.
    pub status: Status,
    /// The answer's nextUpdate (RFC 3339), when it has one.
    pub next_update: Option<String>,
    /// Whether the answer is past its nextUpdate.
    pub stale: bool,
}

fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("{what}: {e}"))
}

fn magnitude(serial: &[u8]) -> &[u8] {
    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    &serial[start..]
}

/// Looks the certificate up in a DER CRL signed by `issuer_der`.
pub fn crl_status(
    crl_der: &[u8],
    leaf_der: &[u8],
    issuer_der: &[u8],
    now: OffsetDateTime,
) -> Result<Answer, String> {
    let leaf = parse_cert(leaf_der, "certificate")?;
    let issuer = parse_cert(issuer_der, "issuer")?;
    let (_, crl) = CertificateRevocationList::from_der(crl_der).map_err(|e| format!("CRL: {e}"))?;
    if crl.issuer() != leaf.issuer() {
        return Err(format!(
            "the CRL is issued by {}, not by the certificate's issuer {}",
            crl.issuer(),
            leaf.issuer()
        ));
    }
    crl.verify_signature(issuer.public_key())
        .map_err(|e| format!("the CRL signature does not verify with the issuer's key: {e}"))?;
    let next = crl.next_update().map(|t| t.to_datetime());
    let serial = magnitude(leaf.raw_serial());
    let status = crl
        .iter_revoked_certificates()
        .find(|r| magnitude(r.raw_serial()) == serial)
        .map_or(Status::Good, |r| Status::Revoked {
            at: rfc3339(r.revocation_date.to_datetime()),
        });
    Ok(Answer {
        status,
        next_update: next.map(rfc3339),
        stale: next.is_some_and(|n| n < now),
    })
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn sha1(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// The CertID fields (without the hash algorithm) of the certificate.
fn cert_id(
    leaf: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        sha1(issuer.subject().as_raw()),
        sha1(&issuer.public_key().subject_public_key.data),
        leaf.raw_serial().to_vec(),
    )
}

/// A DER OCSPRequest for the certificate (SHA-1 CertID, as RFC 5019 asks).
pub fn ocsp_request(leaf_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>, String> {
    let leaf = parse_cert(leaf_der, "certificate")?;
    let issuer = parse_cert(issuer_der, "issuer")?;
    let (name_hash, key_hash, serial) = cert_id(&leaf, &issuer);
    let sha1_alg = tlv(
        0x30,
        &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00],
    );
    let id = [
        sha1_alg,
        tlv(0x04, &name_hash),
        tlv(0x04, &key_hash),
        tlv(0x02, &serial),
    ]
    .concat();
    let request = tlv(0x30, &tlv(0x30, &id));
    Ok(tlv(0x30, &tlv(0x30, &tlv(0x30, &request))))
}

/// One DER element: (tag, whole element, content, rest).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn read(input: &[u8]) -> Result<Tlv<'_>, String> {
    let bad = || "malformed OCSP response".to_owned();
    let tag = *input.first().ok_or_else(bad)?;
    let first = usize::from(*input.get(1).ok_or_else(bad)?);
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return Err(bad());
        }
        let bytes = input.get(2..2 + n).ok_or_else(bad)?;
        (
            bytes.iter().fold(0usize, |a, b| a << 8 | usize::from(*b)),
            2 + n,
        )
    };
    let end = header.checked_add(len).ok_or_else(bad)?;
    let whole = input.get(..end).ok_or_else(bad)?;
    Ok((tag, whole, &whole[header..], &input[end..]))
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, String> {
    let t = read(input)?;
    if t.0 == tag {
        Ok(t)
    } else {
        Err(format!("malformed OCSP response: expected {what}"))
    }
}

fn generalized_time(content: &[u8]) -> Option<OffsetDateTime> {
    let s = std::str::from_utf8(content).ok()?;
    let fmt = time::macros::format_description!("[year][month][day][hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, &fmt)
        .ok()
        .map(|t| t.assume_utc())
}

/// Checks `signature` over `signed` with the key of `signer`.
fn verify(
    signer: &X509Certificate<'_>,
    alg: &[u8],
    signature: &[u8],
    signed: &[u8],
) -> Result<(), String> {
    let (_, alg) = AlgorithmIdentifier::from_der(alg)
        .map_err(|e: x509_parser::nom::Err<X509Error>| e.to_string())?;
    let (_, sig) = BitString::from_der(signature).map_err(|e| e.to_string())?;
    x509_parser::verify::verify_signature(signer.public_key(), &alg, &sig, signed)
        .map_err(|e| e.to_string())
}

/// Reads a DER OCSPResponse about the certificate.
pub fn ocsp_status(
    response_der: &[u8],
    leaf_der: &[u8],
    issuer_der: &[u8],
    now: OffsetDateTime,
) -> Result<Answer, String> {
    let leaf = parse_cert(leaf_der, "certificate")?;
    let issuer = parse_cert(issuer_der, "issuer")?;
    let (_, _, body, _) = expect(response_der, 0x30, "OCSPResponse")?;
    let (_, _, status, rest) = expect(body, 0x0a, "responseStatus")?;
    if status != [0] {
        return Err(format!(
            "the responder answered with status {} (not successful)",
            status.first().copied().unwrap_or(255)
        ));
    }
    let (_, _, bytes, _) = expect(rest, 0xa0, "responseBytes")?;
    let (_, _, bytes, _) = expect(bytes, 0x30, "ResponseBytes")?;
    let (_, _, oid, rest) = expect(bytes, 0x06, "responseType")?;
    if oid != OCSP_BASIC {
        return Err("not a basic OCSP response".into());
    }
    let (_, _, basic, _) = expect(rest, 0x04, "response")?;
    let (_, _, basic, _) = expect(basic, 0x30, "BasicOCSPResponse")?;
    let (_, tbs, data, rest) = expect(basic, 0x30, "ResponseData")?;
    let (_, alg, _, rest) = expect(rest, 0x30, "signatureAlgorithm")?;
    let (_, signature, _, rest) = expect(rest, 0x03, "signature")?;

    // The signer: the issuer itself, or a delegated responder it certified.
    let mut signer_result = verify(&issuer, alg, signature, tbs);
    if signer_result.is_err()
        && let Ok((0xa0, _, certs, _)) = read(rest)
        && let Ok((_, _, certs, _)) = expect(certs, 0x30, "certs")
        && let Ok((_, responder_der, _, _)) = read(certs)
        && let Ok(responder) = parse_cert(responder_der, "responder")
    {
        let delegated = responder
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|e| {
                e.value.ocsp_signing
                    || e.value
                        .other
                        .iter()
                        .any(|o| o.to_id_string() == EKU_OCSP_SIGNING)
            });
        let certified = responder
            .verify_signature(Some(issuer.public_key()))
            .is_ok();
        if delegated && certified {
            signer_result = verify(&responder, alg, signature, tbs);
        }
    }
    signer_result.map_err(|e| {
        format!("the OCSP response is not signed by the issuer or its responder: {e}")
    })?;

    // ResponseData: [0] version?, responderID, producedAt, responses, ...
    let mut rest = data;
    if let Ok((0xa0, _, _, after)) = read(rest) {
        rest = after;
    }
    let (_, _, _, rest) = read(rest)?; // responderID
    let (_, _, _, rest) = expect(rest, 0x18, "producedAt")?;
    let (_, _, mut responses, _) = expect(rest, 0x30, "responses")?;
    let (name_hash, key_hash, serial) = cert_id(&leaf, &issuer);
    while !responses.is_empty() {
        let (_, _, single, after) = expect(responses, 0x30, "SingleResponse")?;
        responses = after;
        let (_, _, id, rest) = expect(single, 0x30, "CertID")?;
        let (_, _, _, id_rest) = expect(id, 0x30, "hashAlgorithm")?;
        let (_, _, nh, id_rest) = expect(id_rest, 0x04, "issuerNameHash")?;
        let (_, _, kh, id_rest) = expect(id_rest, 0x04, "issuerKeyHash")?;
        let (_, _, sn, _) = expect(id_rest, 0x02, "serialNumber")?;
        if nh != name_hash || kh != key_hash || magnitude(sn) != magnitude(&serial) {
            continue;
        }
        let (tag, _, content, rest) = read(rest)?;
        let status = match tag {
            0x80 => Status::Good,
            0xa1 => {
                let (_, _, at, _) = expect(content, 0x18, "revocationTime")?;
                Status::Revoked {
                    at: generalized_time(at).map_or_else(|| "unknown".into(), rfc3339),
                }
            }
            _ => Status::Unknown,
        };
        let (_, _, _, rest) = expect(rest, 0x18, "thisUpdate")?;
        let next = match read(rest) {
            Ok((0xa0, _, inner, _)) => {
                let (_, _, t, _) = expect(inner, 0x18, "nextUpdate")?;
                generalized_time(t)
            }
            _ => None,
        };
        return Ok(Answer {
            status,
            next_update: next.map(rfc3339),
            stale: next.is_some_and(|n| n < now),
        });
    }
    Err("the OCSP response says nothing about this certificate".into())
}

#[cfg(test)]
mod tests;
