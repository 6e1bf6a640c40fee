//! Path validation with rustls-webpki, and the precise reason when it fails.
//!
//! The EKU for the requested purpose is required to be present (webpki's
//! `server_auth()`/`client_auth()` accept a leaf with no EKU at all;
//! ARCHITECTURE.md, trap 7).

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::inspect::spiffe_id_of;
use crate::issue::rfc3339;
use crate::{Error, PublicKeyKind, SpiffeId, SpiffeIdPattern};

/// DER content of id-kp-serverAuth (1.3.6.1.5.5.7.3.1).
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// DER content of id-kp-clientAuth (1.3.6.1.5.5.7.3.2).
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// What the certificate must be good for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// TLS server authentication (EKU serverAuth required).
    Server,
    /// TLS client authentication (EKU clientAuth required).
    Client,
}

impl Purpose {
    /// webpki applies the EKU rule to every certificate in the path, and CA
    /// certificates rarely carry EKUs, so the path is checked with
    /// "required if present" and the leaf separately with "required".
    fn key_usage(self) -> KeyUsage {
        match self {
            Purpose::Server => KeyUsage::required_if_present(EKU_SERVER_AUTH),
            Purpose::Client => KeyUsage::required_if_present(EKU_CLIENT_AUTH),
        }
    }

    fn leaf_has_eku(self, leaf_der: &[u8]) -> bool {
        let Ok((_, cert)) = X509Certificate::from_der(leaf_der) else {
            return false;
        };
        match cert.extended_key_usage() {
            Ok(Some(eku)) => match self {
                Purpose::Server => eku.value.server_auth,
                Purpose::Client => eku.value.client_auth,
            },
            _ => false,
        }
    }
}

impl FromStr for Purpose {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "server" => Ok(Purpose::Server),
            "client" => Ok(Purpose::Client),
            _ => Err(Error::Policy(format!(
                "unknown purpose {s:?} (expected server or client)"
            ))),
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Server => "server",
            Purpose::Client => "client",
        })
    }
}

/// What to check besides the path itself.
#[derive(Clone, Debug)]
pub struct VerifyOptions<'a> {
    /// Required EKU; with `None` either serverAuth or clientAuth will do.
    pub purpose: Option<Purpose>,
    /// A DNS name or IP address the leaf must be valid for.
    pub name: Option<&'a str>,
    /// A SPIFFE ID (or `prefix/*`) the leaf's SPIFFE ID must match.
    pub spiffe_id: Option<&'a SpiffeIdPattern>,
    /// The time of validation.
    pub now: UnixTime,
}

/// A successful validation.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    /// The purposes the path is valid for.
    pub purposes: Vec<Purpose>,
    /// Number of certificates in the built path, trust anchor included.
    pub path_len: usize,
    /// The leaf's SPIFFE ID, if it has one.
    pub spiffe_id: Option<SpiffeId>,
}

/// Why a certificate did not validate. Each variant is one precise reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A certificate in the path is past its notAfter.
    #[error("expired: a certificate in the chain expired at {not_after}")]
    Expired {
        /// When it expired (RFC 3339).
        not_after: String,
    },
    /// A certificate in the path is before its notBefore.
    #[error("not yet valid: a certificate in the chain is valid from {not_before}")]
    NotYetValid {
        /// When it becomes valid (RFC 3339).
        not_before: String,
    },
    /// No path to a trusted root (missing intermediate, wrong CA, a CA with
    /// the same name but another key).
    #[error("unknown issuer: no path from the certificate to a trusted root")]
    UnknownIssuer,
    /// The leaf lacks the extended key usage for the purpose.
    #[error("wrong EKU: the certificate is not valid for {purpose} authentication")]
    WrongEku {
        /// The purpose asked for ("server", "client" or "server or client").
        purpose: String,
    },
    /// The leaf is not valid for the DNS name or IP address.
    #[error("name mismatch: the certificate is not valid for {name}")]
    NameMismatch {
        /// The name asked for.
        name: String,
    },
    /// The leaf's SPIFFE ID does not match.
    #[error("SPIFFE ID mismatch: expected {expected}, found {found}")]
    SpiffeIdMismatch {
        /// The pattern asked for.
        expected: String,
        /// What the certificate carries ("none" if nothing).
        found: String,
    },
    /// A CA with the issuer's name is trusted, but its key does not verify
    /// the signature: a different CA that uses the same name, or a corrupted
    /// or forged certificate. Reported under the code `unknown_issuer`.
    #[error(
        "unknown issuer: a trusted CA has the issuer's name, but its key does not verify the signature (a different CA with the same name, or a corrupted certificate)"
    )]
    SignatureMismatch,
    /// A certificate in the chain is signed with an algorithm Ward does not
    /// accept (SHA-1, MD5, or unknown).
    #[error(
        "weak signature: a certificate in the chain is signed with {algorithm}, which is not accepted"
    )]
    WeakSignature {
        /// The signature algorithm's name or OID.
        algorithm: String,
    },
    /// A key in the chain is too weak or of an unsupported kind (RSA below
    /// 2048 bits, an unknown curve).
    #[error("weak key: {detail}")]
    WeakKey {
        /// Which certificate and which key.
        detail: String,
    },
    /// A SPIFFE ID was required but the certificate is not a valid X509-SVID
    /// (several URI SANs, or one that is not a SPIFFE ID).
    #[error("not an X509-SVID: {0}")]
    NotAnSvid(String),
    /// The leaf is a CA certificate.
    #[error("not an end-entity certificate: the leaf is a CA")]
    CaAsLeaf,
    /// Anything else webpki rejects (malformed extension, unsupported algorithm, …).
    #[error("invalid: {0}")]
    Other(String),
}

impl VerifyError {
    /// A stable snake_case code for JSON output and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Expired { .. } => "expired",
            VerifyError::NotYetValid { .. } => "not_yet_valid",
            VerifyError::UnknownIssuer => "unknown_issuer",
            VerifyError::WrongEku { .. } => "wrong_eku",
            VerifyError::NameMismatch { .. } => "name_mismatch",
            VerifyError::SpiffeIdMismatch { .. } => "spiffe_id_mismatch",
            VerifyError::SignatureMismatch => "unknown_issuer",
            VerifyError::WeakSignature { .. } => "weak_signature",
            VerifyError::WeakKey { .. } => "weak_key",
            VerifyError::NotAnSvid(_) => "not_an_svid",
            VerifyError::CaAsLeaf => "ca_as_leaf",
            VerifyError::Other(_) => "invalid",
        }
    }

    fn from_webpki(err: webpki::Error, chain: &[CertificateDer<'_>]) -> Self {
        use webpki::Error as W;
        let time = |t: UnixTime| {
            time::OffsetDateTime::from_unix_timestamp(t.as_secs() as i64)
                .map_or_else(|_| t.as_secs().to_string(), rfc3339)
        };
        match err {
            W::CertExpired { not_after, .. } => VerifyError::Expired {
                not_after: time(not_after),
            },
            W::CertNotValidYet { not_before, .. } => VerifyError::NotYetValid {
                not_before: time(not_before),
            },
            W::UnknownIssuer => VerifyError::UnknownIssuer,
            W::InvalidSignatureForPublicKey => VerifyError::SignatureMismatch,
            W::CaUsedAsEndEntity => VerifyError::CaAsLeaf,
            W::UnsupportedSignatureAlgorithmContext(_)
            | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                VerifyError::WeakSignature {
                    algorithm: weakest_signature(chain),
                }
            }
            other => VerifyError::Other(format!("{other:?}")),
        }
    }
}

/// Every key in the presented chain must be one Ward would issue for:
/// RSA of at least 2048 bits, ECDSA P-256/P-384, Ed25519, ML-DSA.
fn check_key_strength(chain: &[CertificateDer<'_>]) -> Result<(), VerifyError> {
    for (i, der) in chain.iter().enumerate() {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            continue; // webpki reports the parse error with more context
        };
        let kind = PublicKeyKind::from_spki(cert.public_key());
        let weak = match kind {
            PublicKeyKind::Rsa { bits } => bits < 2048,
            PublicKeyKind::Ecdsa { bits } => bits != 256 && bits != 384,
            PublicKeyKind::Ed25519 | PublicKeyKind::MlDsa { .. } => false,
            PublicKeyKind::EcdsaUnsupported { .. } | PublicKeyKind::Other => true,
        };
        if weak {
            let which = if i == 0 {
                "the leaf"
            } else {
                "an intermediate"
            };
            return Err(VerifyError::WeakKey {
                detail: format!(
                    "{which} has a {kind} key (RSA needs 2048 bits or more; ECDSA P-256 or P-384; Ed25519)"
                ),
            });
        }
    }
    Ok(())
}

/// The name of the first signature algorithm in the chain that webpki does
/// not accept, for the error message.
fn weakest_signature(chain: &[CertificateDer<'_>]) -> String {
    for der in chain {
        if let Ok((_, cert)) = X509Certificate::from_der(der) {
            match cert.signature_algorithm.algorithm.to_id_string().as_str() {
                // sha1WithRSAEncryption, ecdsa-with-SHA1, dsa-with-sha1
                "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" | "1.2.840.10040.4.3" => {
                    return "SHA-1".into();
                }
                // md5WithRSAEncryption, md2WithRSAEncryption
                "1.2.840.113549.1.1.4" | "1.2.840.113549.1.1.2" => return "MD5".into(),
                _ => {}
            }
        }
    }
    "an unsupported algorithm".into()
}

fn eku_missing() -> webpki::Error {
    #[allow(deprecated)] // a context-free marker; only `is_eku_error` reads it
    webpki::Error::RequiredEkuNotFound
}

fn is_eku_error(err: &webpki::Error) -> bool {
    #[allow(deprecated)] // older webpki versions still report the plain variant
    let plain = matches!(err, webpki::Error::RequiredEkuNotFound);
    plain || matches!(err, webpki::Error::RequiredEkuNotFoundContext(_))
}

/// Validates `chain` (leaf first, then any intermediates the holder sent)
/// against `roots` (every certificate there is a trust anchor).
pub fn verify(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    opts: &VerifyOptions<'_>,
) -> Result<Verified, VerifyError> {
    let (leaf_der, intermediates) = chain
        .split_first()
        .ok_or_else(|| VerifyError::Other("the certificate file is empty".into()))?;
    let anchors = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::Other(format!("unusable root: {e:?}")))?;
    let leaf = EndEntityCert::try_from(leaf_der)
        .map_err(|e| VerifyError::Other(format!("unusable certificate: {e:?}")))?;
    let algs = webpki::ALL_VERIFICATION_ALGS;
    check_key_strength(chain)?;

    // Without an explicit purpose, try the purposes the leaf claims; a leaf
    // that claims neither is a wrong-EKU failure, whatever else is wrong.
    let candidates: Vec<Purpose> = match opts.purpose {
        Some(p) => vec![p],
        None => [Purpose::Server, Purpose::Client]
            .into_iter()
            .filter(|p| p.leaf_has_eku(leaf_der))
            .collect(),
    };
    let mut purposes = Vec::new();
    let mut path_len = 0;
    let mut first_err = None;
    for purpose in &candidates {
        let result = leaf.verify_for_usage(
            algs,
            &anchors,
            intermediates,
            opts.now,
            purpose.key_usage(),
            None,
            None,
        );
        match result {
            Ok(path) if purpose.leaf_has_eku(leaf_der) => {
                path_len = path.intermediate_certificates().count() + 2;
                purposes.push(*purpose);
            }
            Ok(_) => {
                first_err.get_or_insert_with(eku_missing);
            }
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    if purposes.is_empty() {
        let wrong_eku = || VerifyError::WrongEku {
            purpose: opts
                .purpose
                .map_or_else(|| "server or client".to_owned(), |p| p.to_string()),
        };
        return Err(match first_err {
            Some(err) if is_eku_error(&err) => wrong_eku(),
            Some(err) => VerifyError::from_webpki(err, chain),
            None => wrong_eku(),
        });
    }

    if let Some(name) = opts.name {
        let server_name = ServerName::try_from(name)
            .map_err(|_| VerifyError::Other(format!("{name:?} is not a DNS name or IP address")))?;
        leaf.verify_is_valid_for_subject_name(&server_name)
            .map_err(|_| VerifyError::NameMismatch {
                name: name.to_owned(),
            })?;
    }

    // An identity is reported only for a valid X509-SVID; it is an error
    // only when the caller asked for one.
    let svid = spiffe_id_of(leaf_der);
    let spiffe_id = svid.as_ref().ok().cloned().flatten();
    if let (Some(_), Err(e)) = (opts.spiffe_id, &svid) {
        return Err(VerifyError::NotAnSvid(e.to_string()));
    }
    if let Some(pattern) = opts.spiffe_id {
        let ok = spiffe_id.as_ref().is_some_and(|id| pattern.matches(id));
        if !ok {
            return Err(VerifyError::SpiffeIdMismatch {
                expected: pattern.to_string(),
                found: spiffe_id.map_or_else(|| "none".to_owned(), |id| id.to_string()),
            });
        }
    }
    Ok(Verified {
        purposes,
        path_len,
        spiffe_id,
    })
}

/// Checks that `child_der` was issued by `issuer_der`: its issuer name is
/// the issuer's subject and its signature verifies with the issuer's key.
/// The error completes "… is not issued by …: " (names, or the signature).
pub fn issued_by(child_der: &[u8], issuer_der: &[u8]) -> Result<(), String> {
    let (_, child) = X509Certificate::from_der(child_der).map_err(|e| e.to_string())?;
    let (_, issuer) = X509Certificate::from_der(issuer_der).map_err(|e| e.to_string())?;
    if child.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(format!(
            "it names the issuer \"{}\" but that certificate is \"{}\"",
            child.issuer(),
            issuer.subject()
        ));
    }
    crate::sig::verify_cert(&child, issuer.public_key())
        .map_err(|e| format!("its signature does not verify with that certificate's key ({e})"))
}

/// Whether `key_spki_der` (a private key's public half, as
/// [`crate::PrivateKey::public_key_der`] gives it) is the key of `cert_der`.
pub fn key_matches(cert_der: &[u8], key_spki_der: &[u8]) -> Result<bool, String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
    Ok(cert.public_key().raw == key_spki_der)
}
