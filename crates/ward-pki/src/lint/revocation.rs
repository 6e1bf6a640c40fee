//! Revocation status of one certificate from a CRL or an OCSP response, for
//! `ward check`. Pure: the caller fetches the bytes (the URLs are in
//! [`super::Facts`]: `crl_urls`, `ocsp_urls`) and hands them in.
//!
//! Answers are authenticated by the same primitives the gate uses: a CRL
//! with [`crate::crl::verify`] (signed by the certificate's issuer), an
//! OCSP response with [`crate::ocsp::validate_response`] (signed by the
//! issuer or by a responder certificate the issuer signed for
//! OCSPSigning). An answer that fails this is an error, never a status.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::crl::{self, CrlError, LeafRef, Trust};
use crate::issue::rfc3339;
use crate::ocsp::{self, CertState, Query, ResponseError};

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

impl Answer {
    fn new(status: Status, next_update: Option<i64>, now: OffsetDateTime) -> Self {
        let next = next_update.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        Answer {
            status,
            next_update: next.map(rfc3339),
            stale: next.is_some_and(|n| n < now),
        }
    }
}

fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("{what}: {e}"))
}

/// Unix seconds as RFC 3339, or `unknown` when out of range.
fn at(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).map_or_else(|_| "unknown".into(), rfc3339)
}

/// Looks the certificate up in a DER CRL signed by `issuer_der`.
pub fn crl_status(
    crl_der: &[u8],
    leaf_der: &[u8],
    issuer_der: &[u8],
    now: OffsetDateTime,
) -> Result<Answer, String> {
    let leaf = LeafRef::of(&parse_cert(leaf_der, "certificate")?, leaf_der);
    parse_cert(issuer_der, "issuer")?;
    let mut trust = Trust::default();
    trust.set_roots(&[issuer_der.to_vec()]);
    let not_ours =
        |name: &str| format!("the CRL is issued by {name}, not by the certificate's issuer");
    let verified = match crl::verify(crl_der, &trust, now.unix_timestamp()) {
        Ok(v) => v,
        Err(CrlError::UnknownIssuer(name)) => return Err(not_ours(&name)),
        Err(e) => return Err(e.to_string()),
    };
    if !leaf.issued_by(&verified) {
        return Err(not_ours(&verified.issuer_display));
    }
    let status = if verified.revoked.contains(&leaf.serial) {
        Status::Revoked {
            at: crl::revoked_at(crl_der, &leaf.serial).map_or_else(|| "unknown".into(), at),
        }
    } else {
        Status::Good
    };
    Ok(Answer::new(status, verified.next_update, now))
}

/// A DER OCSPRequest for the certificate (SHA-1 CertID, as RFC 5019 asks).
pub fn ocsp_request(leaf_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>, String> {
    let query = Query::for_certificate(leaf_der, issuer_der).map_err(|e| e.to_string())?;
    ocsp::build_request(&[query], None).map_err(|e| e.to_string())
}

/// Reads a DER OCSPResponse about the certificate.
pub fn ocsp_status(
    response_der: &[u8],
    leaf_der: &[u8],
    issuer_der: &[u8],
    now: OffsetDateTime,
) -> Result<Answer, String> {
    let query = Query::for_certificate(leaf_der, issuer_der).map_err(|e| e.to_string())?;
    let answer = ocsp::validate_response(
        response_der,
        &query,
        issuer_der,
        now.unix_timestamp(),
        webpki::ALL_VERIFICATION_ALGS,
    )
    .map_err(|e| match e {
        ResponseError::Malformed(why) => format!("malformed OCSP response: {why}"),
        ResponseError::Unsuccessful(status) => {
            format!("the responder answered with status {status} (not successful)")
        }
        ResponseError::Untrusted => {
            "the OCSP response is not signed by the issuer or its responder".into()
        }
        ResponseError::OtherCertificate => e.to_string(),
    })?;
    let status = match answer.state {
        CertState::Good => Status::Good,
        CertState::Revoked { at: t } => Status::Revoked { at: at(t) },
        CertState::Unknown => Status::Unknown,
    };
    Ok(Answer::new(status, answer.next_update, now))
}

#[cfg(test)]
mod tests;
