//! Certificate revocation lists (RFC 5280 §5), signed by a CA [`Issuer`].
//!
//! Callers supply the entries, the CRL number and the validity window; this
//! module writes the authority key identifier (copied from the issuer's
//! subject key identifier, so path builders match it), the CRL number and the
//! reason codes. ARCHITECTURE.md trap 4: the issuer needs cRLSign.
//!
//! Verifying a CRL someone else signed (the gate's CRL sources, `ward
//! check`) is [`verify`](fn@verify), against a [`Trust`].

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::issue::Issuer;
use crate::{Error, Serial};

mod verify;

pub use self::verify::{
    CrlError, IssuerCert, IssuerKey, LeafRef, Trust, VerifiedCrl, decode, normalize_serial,
    revoked_at, sha256, verify,
};

/// RFC 5280 CRLReason names with their codes, in the RFC's spelling.
pub const REASONS: &[(&str, i16)] = &[
    ("unspecified", 0),
    ("keyCompromise", 1),
    ("cACompromise", 2),
    ("affiliationChanged", 3),
    ("superseded", 4),
    ("cessationOfOperation", 5),
    ("certificateHold", 6),
    ("removeFromCRL", 8),
    ("privilegeWithdrawn", 9),
    ("aACompromise", 10),
];

/// Parses a revocation reason name (case-insensitive; `-`/`_` ignored) or
/// code. `certificateHold` and `removeFromCRL` are refused: Ward's
/// revocation is permanent and it issues no delta CRLs.
pub fn parse_reason(input: &str) -> Result<i16, Error> {
    let norm: String = input
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let code = REASONS
        .iter()
        .find(|(name, code)| name.to_ascii_lowercase() == norm || code.to_string() == norm)
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            Error::Policy(format!(
                "unknown revocation reason {input:?} (expected an RFC 5280 name such as keyCompromise, superseded or cessationOfOperation)"
            ))
        })?;
    if code == 6 || code == 8 {
        return Err(Error::Policy(format!(
            "revocation reason {input:?} is not supported: revocation is permanent"
        )));
    }
    Ok(code)
}

/// The RFC 5280 name of a reason code, if it is one.
pub fn reason_name(code: i16) -> Option<&'static str> {
    REASONS.iter().find(|(_, c)| *c == code).map(|(n, _)| *n)
}

/// One revoked certificate to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlEntry {
    /// Its serial.
    pub serial: Serial,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 reason code; `None` or 0 (unspecified) writes no reasonCode.
    pub reason: Option<i16>,
}

fn rcgen_reason(code: i16) -> Result<Option<RevocationReason>, Error> {
    Ok(Some(match code {
        0 => return Ok(None),
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        other => {
            return Err(Error::Policy(format!(
                "{other} is not an RFC 5280 CRLReason code"
            )));
        }
    }))
}

/// The subject key identifier of a DER certificate, if it carries one.
fn subject_key_id(der: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::InvalidCertificate(format!("CA certificate: {e}")))?;
    Ok(cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        }))
}

/// Signs a CRL: `number` is the CRL number, valid from `this_update` to
/// `next_update` (which must be later). Returns the DER.
pub fn sign_crl(
    issuer: &Issuer,
    entries: &[CrlEntry],
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<Vec<u8>, Error> {
    if next_update <= this_update {
        return Err(Error::Policy(
            "CRL nextUpdate must follow thisUpdate".into(),
        ));
    }
    let revoked_certs = entries
        .iter()
        .map(|e| {
            Ok(RevokedCertParams {
                serial_number: e.serial.to_rcgen(),
                revocation_time: e.revoked_at,
                reason_code: match e.reason {
                    Some(code) => rcgen_reason(code)?,
                    None => None,
                },
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let key_identifier_method = match subject_key_id(issuer.cert_der())? {
        Some(id) => KeyIdMethod::PreSpecified(id),
        None => KeyIdMethod::Sha256,
    };
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method,
    };
    let crl = params.signed_by(issuer.rcgen_issuer())?;
    Ok(crl.der().to_vec())
}

/// A DER CRL as a PEM block (`X509 CRL`, what `openssl crl` reads).
pub fn crl_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 50);
    out.push_str("-----BEGIN X509 CRL-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END X509 CRL-----\n");
    out
}

#[cfg(test)]
mod tests;
