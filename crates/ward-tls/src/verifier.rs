//! A client-certificate verifier for services that identify callers by any
//! certificate their CA issued, whatever its EKU (the CA's renewal route:
//! a workload holding a `server`-profile certificate must be able to renew
//! it). The chain is still fully validated against the roots; the caller
//! decides what the identity may do.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

use crate::Error;

/// DER content of id-kp-serverAuth and id-kp-clientAuth.
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// Accepts a certificate without EKU, or with clientAuth or serverAuth.
struct TlsEku;

impl ExtendedKeyUsageValidator for TlsEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut empty = true;
        for id in iter {
            empty = false;
            let id = id?;
            let oid = id.to_decoded_oid();
            let matches = |der: &[u8]| webpki::KeyPurposeId::new(der).to_decoded_oid() == oid;
            if matches(CLIENT_AUTH) || matches(SERVER_AUTH) {
                return Ok(());
            }
        }
        if empty {
            Ok(())
        } else {
            #[allow(deprecated)] // a context-free marker, mapped to InvalidPurpose below
            Err(webpki::Error::RequiredEkuNotFound)
        }
    }
}

/// Optional client authentication against `roots`, accepting TLS server or
/// client certificates.
#[derive(Debug)]
pub struct AnyTlsEkuVerifier {
    roots: Vec<TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl AnyTlsEkuVerifier {
    /// A verifier trusting `roots`.
    pub fn new(roots: &[CertificateDer<'_>]) -> Result<Self, Error> {
        let anchors = roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Credentials(format!("unusable root certificate: {e:?}")))?;
        if anchors.is_empty() {
            return Err(Error::Credentials("no root certificates".into()));
        }
        let subjects = anchors
            .iter()
            .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        Ok(AnyTlsEkuVerifier {
            roots: anchors,
            subjects,
            provider: crate::provider(),
        })
    }
}

fn other_err(detail: String) -> CertificateError {
    CertificateError::Other(rustls::OtherError(Arc::new(WebpkiError(detail))))
}

fn map_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let c = match e {
        W::CertExpired { .. } => CertificateError::Expired,
        W::CertNotValidYet { .. } => CertificateError::NotValidYet,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::CertRevoked => CertificateError::Revoked,
        W::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        #[allow(deprecated)]
        W::RequiredEkuNotFound => CertificateError::InvalidPurpose,
        other => other_err(format!("{other:?}")),
    };
    rustls::Error::InvalidCertificate(c)
}

#[derive(Debug)]
struct WebpkiError(String);

impl std::fmt::Display for WebpkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WebpkiError {}

impl ClientCertVerifier for AnyTlsEkuVerifier {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let cert = EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::InvalidCertificate(other_err(format!("{e:?}"))))?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots,
            intermediates,
            now,
            TlsEku,
            None,
            None,
        )
        .map_err(map_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
