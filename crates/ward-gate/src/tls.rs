//! Per-tenant TLS: the server configuration, a client verifier that demands
//! the clientAuth EKU, and the classification of handshake failures.

use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::ocsp::{Staple, StapleResolver};
use crate::revocation::Revocation;
use crate::revocation::crl::LeafRef;

tokio::task_local! {
    /// Where the verifier leaves the leaf it refused, for the handshake the
    /// current task runs (see [`Presented`]).
    static PRESENTED: Arc<Mutex<Option<CertificateDer<'static>>>>;
}

/// The leaf certificate a client presented in a handshake that was
/// refused: rustls keeps no peer certificate when verification fails, yet
/// the audit line should say who was refused (subject, serial,
/// fingerprint). The verifier runs inside the handshake future's poll, so
/// a task-local slot set up around that future receives it.
#[derive(Debug, Clone, Default)]
pub struct Presented(Arc<Mutex<Option<CertificateDer<'static>>>>);

impl Presented {
    /// Runs `handshake` so that a refused client certificate lands here.
    pub fn scope<F: Future>(&self, handshake: F) -> impl Future<Output = F::Output> {
        PRESENTED.scope(self.0.clone(), handshake)
    }

    /// The refused leaf, if a certificate was presented and refused.
    pub fn take(&self) -> Option<CertificateDer<'static>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Keeps a refused leaf for the audit line (only inside [`Presented::scope`]).
fn remember_refused(leaf: &CertificateDer<'_>) {
    let _ = PRESENTED.try_with(|slot| {
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(leaf.clone().into_owned());
    });
}

/// webpki's `client_auth()` accepts a leaf with no EKU at all
/// (ARCHITECTURE.md, trap 7); this verifier also requires clientAuth to be
/// present, and checks the leaf against the gate's current CRLs.
#[derive(Debug)]
pub struct RequireClientAuthEku {
    inner: Arc<dyn ClientCertVerifier>,
    revocation: Option<Arc<Revocation>>,
}

impl RequireClientAuthEku {
    /// Path validation, the clientAuth EKU, then the CRLs.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let bad_purpose = || rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose);
        let Ok((_, leaf)) = X509Certificate::from_der(end_entity) else {
            return Err(bad_purpose());
        };
        let has_client_auth = leaf
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|e| e.value.client_auth);
        if !has_client_auth {
            return Err(bad_purpose());
        }
        if let Some(revocation) = &self.revocation
            && revocation.snapshot().enabled()
        {
            // The chain passed path validation: its intermediates may sign CRLs.
            revocation.learn(intermediates);
            let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            let status = revocation.check(&LeafRef::of(&leaf, end_entity), now);
            if let Some(e) = status.error() {
                return Err(e);
            }
        }
        Ok(verified)
    }
}

impl ClientCertVerifier for RequireClientAuthEku {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .inspect_err(|_| remember_refused(end_entity))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS 1.2 suites allowed when TLS 1.2 is opted into: ECDHE with AEAD only.
fn tls12_aead_suites(provider: &mut rustls::crypto::CryptoProvider) {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
}

/// Puts TLS13_AES_128_GCM_SHA256 first (clients such as rustls and
/// OpenSSL list AES-256-GCM first), keeping the rest in their order.
fn prefer_aes128(provider: &mut rustls::crypto::CryptoProvider) {
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}

/// Loads a server chain and key as rustls' `CertifiedKey`, checking they match.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    CertifiedKey::from_der(chain, key, &ward_tls::provider())
        .map_err(|e| Error::Config(format!("server certificate: {e}")))
}

/// Builds a tenant's server configuration; handshakes are answered with
/// the staple's current key (and OCSP response).
pub fn server_config(
    staple: Arc<Staple>,
    client_roots: RootCertStore,
    allow_tls12: bool,
    disable_resumption: bool,
    revocation: Option<Arc<Revocation>>,
) -> Result<ServerConfig, Error> {
    let mut provider = Arc::unwrap_or_clone(ward_tls::provider());
    if allow_tls12 {
        tls12_aead_suites(&mut provider);
    }
    prefer_aes128(&mut provider);
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        ward_tls::TLS13_ONLY
    };
    let inner =
        WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
            .build()
            .map_err(|e| Error::Config(format!("client CA: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(RequireClientAuthEku { inner, revocation }))
        .with_cert_resolver(Arc::new(StapleResolver(staple)));
    ward_tls::server::set_http_alpn(&mut config);
    // The server's order wins: AES-128-GCM with SHA-256 is the cheapest
    // suite every TLS 1.3 client offers (SHA-256 runs on SHA-NI).
    config.ignore_client_order = true;
    if disable_resumption {
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Ok(config)
}

/// Why a handshake failed, as counted in metrics and audit lines.
pub fn classify(err: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "client_closed"
            }
            _ => "other",
        };
    };
    match tls {
        E::NoCertificatesPresented => "no_certificate",
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "bad_eku"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "crl_stale",
            CertificateError::UnknownRevocationStatus => "revocation_unknown",
            _ => "bad_certificate",
        },
        E::PeerIncompatible(_) => "protocol_version",
        _ => "other",
    }
}
