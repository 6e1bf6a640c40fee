//! Verifiers that do not verify, for tools that must look at what a peer
//! presents before deciding anything (`ward cert inspect HOST:PORT`,
//! `ward check`, the pinned-fingerprint bootstrap). Nothing that
//! authenticates a peer may use this module.

use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::verifier::{ServerCheck, ServerVerifier};

/// Accepts any server certificate chain and keeps a copy of it.
///
/// Handshake signatures are still checked, so the peer proved it holds the
/// key of the certificate it showed; only the chain is not judged.
#[derive(Debug, Default)]
pub struct CapturingVerifier {
    captured: Mutex<Vec<CertificateDer<'static>>>,
}

impl CapturingVerifier {
    /// An empty capture.
    pub fn new() -> Arc<Self> {
        Arc::new(CapturingVerifier::default())
    }

    /// The server verifier that fills this capture and accepts any chain.
    pub fn verifier(self: &Arc<Self>) -> Arc<ServerVerifier> {
        Arc::new(ServerVerifier::unverified(self.clone()))
    }

    /// The chain the server presented (leaf first), empty before the
    /// handshake reached the Certificate message.
    pub fn captured(&self) -> Vec<CertificateDer<'static>> {
        self.captured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ServerCheck for CapturingVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.captured.lock().unwrap_or_else(PoisonError::into_inner) = chain;
        Ok(())
    }
}

/// Accepts any server certificate, even one with critical extensions
/// webpki does not know (RFC 8737's acmeIdentifier), and keeps a copy.
/// TLS 1.2 and 1.3 handshake signatures are checked against the
/// certificate's raw public key, so the peer proved it holds that key.
#[derive(Debug)]
struct AcmeAlpnVerifier {
    capture: Arc<CapturingVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AcmeAlpnVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.capture
            .check(end_entity, intermediates, server_name, now)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, parsed) = X509Certificate::from_der(cert)
            .map_err(|_| rustls::Error::General("unreadable certificate".into()))?;
        let key = parsed.public_key().subject_public_key.data.as_ref();
        let bad = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        let (_, algorithms) = self
            .provider
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .ok_or_else(bad)?;
        // TLS 1.2 lets a scheme cover several curves: the key decides,
        // and a key that fits none of them fails every attempt.
        if algorithms
            .iter()
            .any(|a| a.verify_signature(key, message, dss.signature()).is_ok())
        {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        } else {
            Err(bad())
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, parsed) = X509Certificate::from_der(cert)
            .map_err(|_| rustls::Error::General("unreadable certificate".into()))?;
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from(parsed.public_key().raw);
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &spki,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client configuration of an ACME tls-alpn-01 validator (RFC 8737):
/// TLS 1.2 or 1.3 (RFC 8737 §4 requires 1.2 or later), offers only the `acme-tls/1` protocol, and captures whatever
/// certificate the server presents into `capture` instead of judging it
/// (it carries a critical extension webpki refuses); the validator then
/// checks that certificate's `acmeIdentifier` and name itself. Never for
/// anything else.
pub fn acme_tls_alpn01_client(
    capture: &Arc<CapturingVerifier>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    acme_validation_client(capture, b"acme-tls/1")
}

/// The client configuration of an ACME http-01 validator following a
/// redirect to `https://` (RFC 8555 §8.3): like Let's Encrypt it does not
/// judge the certificate (the key authorization is the proof), speaks TLS
/// 1.2 or 1.3 and offers `http/1.1`. Never for anything else.
pub fn acme_http01_redirect_client(
    capture: &Arc<CapturingVerifier>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    acme_validation_client(capture, b"http/1.1")
}

fn acme_validation_client(
    capture: &Arc<CapturingVerifier>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = crate::provider();
    let verifier = Arc::new(AcmeAlpnVerifier {
        capture: capture.clone(),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A client verifier for a rollout ("audit mode"): certificates are
/// requested but optional, and a certificate the `inner` verifier refuses
/// is let through after `on_refusal` has been told why.
///
/// The handshake then completes with a peer chain that was NOT verified:
/// whoever uses this must treat the connection as unauthenticated whenever
/// `on_refusal` fired (and should disable resumption, since a resumed
/// session carries its chain without running any verifier).
pub struct AuditingClientVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    on_refusal: Arc<dyn Fn(&rustls::Error) + Send + Sync>,
}

impl std::fmt::Debug for AuditingClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditingClientVerifier")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AuditingClientVerifier {
    /// Wraps `inner`, reporting each refusal it would make to `on_refusal`.
    pub fn new(
        inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
        on_refusal: Arc<dyn Fn(&rustls::Error) + Send + Sync>,
    ) -> Self {
        AuditingClientVerifier { inner, on_refusal }
    }
}

impl rustls::server::danger::ClientCertVerifier for AuditingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(v) => Ok(v),
            Err(e) => {
                (self.on_refusal)(&e);
                Ok(rustls::server::danger::ClientCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
