//! Certificate signing requests: parse, check proof of possession, and list
//! what the requester asked for.
//!
//! Nothing from a CSR is copied into a certificate except its public key:
//! the names are only compared with the token's binding, and requested
//! extensions (CA:true, key usages, anything else) are ignored
//! (ARCHITECTURE.md, trap 1).

use std::net::IpAddr;

use ward_pki::PublicKeyKind;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Largest CSR accepted, in bytes of PEM (a 4096-bit RSA CSR is ~1.7 KB,
/// an ML-DSA-87 one ~10 KB).
pub const MAX_CSR_PEM: usize = 16 * 1024;

/// Why a CSR was refused (all map to HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not a PEM `CERTIFICATE REQUEST`.
    #[error("csr is not a PEM certificate request: {0}")]
    NotPem(String),
    /// Larger than [`MAX_CSR_PEM`].
    #[error("csr is larger than {MAX_CSR_PEM} bytes")]
    TooLarge,
    /// The DER inside does not parse.
    #[error("csr does not parse: {0}")]
    Malformed(String),
    /// The signature does not verify with the CSR's own key: no proof of possession.
    #[error("csr signature does not verify with its public key")]
    BadSignature,
    /// The key is weak or of a kind Ward does not issue for.
    #[error(
        "csr key is not accepted: {0} (use ECDSA P-256/P-384, Ed25519, RSA 2048-4096 or ML-DSA-44/65/87)"
    )]
    UnsupportedKey(String),
}

/// A CSR whose signature verified.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// The DER SubjectPublicKeyInfo, the only thing used to build a certificate.
    pub spki_der: Vec<u8>,
    /// What kind of key it is.
    pub key: PublicKeyKind,
    /// Names the requester asked for, to compare with the binding.
    pub requested: RequestedNames,
}

/// Every name a CSR asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedNames {
    /// Subject common names.
    pub common_names: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Any other SAN kinds (email, directory names, …), described.
    pub other: Vec<String>,
}

/// Parses a PEM CSR and verifies its self-signature.
pub fn parse_csr(pem: &str) -> Result<CheckedCsr, CsrError> {
    if pem.len() > MAX_CSR_PEM {
        return Err(CsrError::TooLarge);
    }
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|e| CsrError::NotPem(e.to_string()))?;
    if !block.label.contains("CERTIFICATE REQUEST") {
        return Err(CsrError::NotPem(format!("found a {:?} block", block.label)));
    }
    let (rest, csr) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(
            "trailing data after the request".into(),
        ));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    // The key first: a weak key deserves that answer, not "bad signature"
    // (aws-lc refuses to verify with RSA-1024 at all).
    let key = PublicKeyKind::from_spki(spki);
    if let Err(e) = key.key_type() {
        return Err(CsrError::UnsupportedKey(match e {
            ward_pki::Error::InvalidKey(m) => m,
            other => other.to_string(),
        }));
    }
    ward_pki::sig::verify_csr(&csr).map_err(|_| CsrError::BadSignature)?;
    let mut requested = RequestedNames::default();
    for cn in info.subject.iter_common_name() {
        requested.common_names.push(
            cn.as_str()
                .map_or_else(|_| "(unreadable CN)".to_owned(), str::to_owned),
        );
    }
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => requested.uris.push((*u).to_owned()),
                        GeneralName::DNSName(d) => requested.dns.push(d.to_ascii_lowercase()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => requested
                                .ips
                                .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                            16 => requested
                                .ips
                                .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                            _ => requested.other.push("a malformed IP address".into()),
                        },
                        other => requested.other.push(format!("{other}")),
                    }
                }
            }
        }
    }
    Ok(CheckedCsr {
        spki_der: spki.raw.to_vec(),
        key,
        requested,
    })
}

#[cfg(test)]
mod tests;
