//! Signature checks on X.509 objects (certificates, CRLs, CSRs) that also
//! know ML-DSA.
//!
//! x509-parser's `verify_signature` covers RSA, ECDSA and Ed25519 only; this
//! module adds the ML-DSA signature algorithms of RFC 9881 (pure ML-DSA,
//! empty context, absent parameters) and otherwise defers to it.

use aws_lc_rs::signature::UnparsedPublicKey;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::key::ml_dsa_oid;

/// Whether `alg` is one of the ML-DSA signature algorithms.
pub fn is_ml_dsa(alg: &AlgorithmIdentifier<'_>) -> bool {
    ml_dsa_oid(&alg.algorithm.to_id_string()).is_some()
}

/// Verifies an ML-DSA `signature` over `data` made by the holder of
/// `signer`, with the signature algorithm `alg` (one of the ML-DSA OIDs).
fn verify_ml_dsa(
    signer: &SubjectPublicKeyInfo<'_>,
    alg: &AlgorithmIdentifier<'_>,
    signature: &[u8],
    data: &[u8],
) -> Result<(), X509Error> {
    let Some(set) = ml_dsa_oid(&alg.algorithm.to_id_string()) else {
        return Err(X509Error::SignatureUnsupportedAlgorithm);
    };
    // RFC 9881 §2: parameters absent, and the key must be of the same set.
    if alg.parameters.is_some() || signer.algorithm.algorithm != alg.algorithm {
        return Err(X509Error::SignatureUnsupportedAlgorithm);
    }
    UnparsedPublicKey::new(set.verification(), &signer.subject_public_key.data)
        .verify(data, signature)
        .map_err(|_| X509Error::SignatureVerificationError)
}

/// Whether `cert` was signed by the key `issuer`.
pub fn verify_cert(
    cert: &X509Certificate<'_>,
    issuer: &SubjectPublicKeyInfo<'_>,
) -> Result<(), X509Error> {
    if !is_ml_dsa(&cert.signature_algorithm) {
        return cert.verify_signature(Some(issuer));
    }
    verify_ml_dsa(
        issuer,
        &cert.signature_algorithm,
        &cert.signature_value.data,
        cert.tbs_certificate.as_ref(),
    )
}

/// Whether `crl` was signed by the key `issuer`.
pub fn verify_crl(
    crl: &CertificateRevocationList<'_>,
    issuer: &SubjectPublicKeyInfo<'_>,
) -> Result<(), X509Error> {
    if !is_ml_dsa(&crl.signature_algorithm) {
        return crl.verify_signature(issuer);
    }
    verify_ml_dsa(
        issuer,
        &crl.signature_algorithm,
        &crl.signature_value.data,
        crl.tbs_cert_list.as_ref(),
    )
}

/// Whether a CSR is signed by its own key (proof of possession).
pub fn verify_csr(csr: &X509CertificationRequest<'_>) -> Result<(), X509Error> {
    if !is_ml_dsa(&csr.signature_algorithm) {
        return csr.verify_signature();
    }
    let info = &csr.certification_request_info;
    verify_ml_dsa(
        &info.subject_pki,
        &csr.signature_algorithm,
        &csr.signature_value.data,
        info.raw,
    )
}

#[cfg(test)]
mod tests;
