//! Every certificate verifier Ward uses, built on one implementation of the
//! parts rustls asks of each (handshake signatures, supported schemes).
//!
//! A verifier here is a chain rule plus, optionally, a check the caller
//! supplies (the gate's clientAuth and revocation check, a SPIFFE ID
//! pattern, capturing the chain for inspection):
//!
//! - [`ClientVerifier::any_tls_eku`]: optional client authentication
//!   accepting certificates with no EKU, clientAuth or serverAuth, for
//!   services that identify callers by any certificate their CA issued (the
//!   CA's renewal route: a workload holding a `server`-profile certificate
//!   must be able to renew it). The chain is still fully validated.
//! - [`ClientVerifier::required`]: mandatory client authentication with
//!   webpki's client-auth path validation.
//! - [`ServerVerifier::webpki`]: the standard server check (chain and name).
//! - An unverified server chain exists only for [`crate::danger`].

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

use crate::Error;
use crate::chain_cache::{ChainCache, Generation, Key};

/// DER content of id-kp-serverAuth and id-kp-clientAuth.
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// The handshake-signature side every verifier shares: the signature
/// algorithms of Ward's provider.
#[derive(Debug, Clone)]
struct Signatures(Arc<CryptoProvider>);

impl Signatures {
    fn new() -> Self {
        Signatures(crate::provider())
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The three methods both verifier traits ask for, answered from the
/// verifier's `signatures` field: written once for [`ClientVerifier`] and
/// [`ServerVerifier`].
macro_rules! signature_methods {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.signatures.tls12(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.signatures.tls13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.signatures.schemes()
        }
    };
}

/// A caller's own check of a client certificate, run after its chain
/// passed path validation.
pub trait ClientCheck: fmt::Debug + Send + Sync {
    /// Whether the leaf passes; `intermediates` already chained to a root.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error>;

    /// Told of every refused leaf, whether the chain or [`Self::check`]
    /// refused it.
    fn refused(&self, _end_entity: &CertificateDer<'_>) {}
}

/// A caller's own check of a server certificate, run after its chain (if
/// any chain rule applies) passed.
pub trait ServerCheck: fmt::Debug + Send + Sync {
    /// Whether the server's leaf passes.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error>;
}

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

impl fmt::Display for WebpkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WebpkiError {}

/// How a client's chain is validated.
#[derive(Debug)]
enum ClientChain {
    /// webpki directly, any TLS EKU (see [`TlsEku`]).
    AnyTlsEku(Vec<TrustAnchor<'static>>),
    /// rustls' webpki client verifier (clientAuth or no EKU).
    WebPki(Arc<dyn ClientCertVerifier>),
}

/// Ward's client-certificate verifier: a chain rule (its outcome
/// remembered in a [`ChainCache`] if one was given), then the caller's
/// [`ClientCheck`] if one was given.
#[derive(Debug)]
pub struct ClientVerifier {
    chain: ClientChain,
    subjects: Vec<DistinguishedName>,
    mandatory: bool,
    check: Option<Arc<dyn ClientCheck>>,
    signatures: Signatures,
    /// The chain rule and trust anchors, as a cache key part.
    generation: Generation,
    cache: Option<ChainCache>,
}

impl ClientVerifier {
    /// Optional client authentication against `roots`, accepting TLS server
    /// or client certificates.
    pub fn any_tls_eku(roots: &[CertificateDer<'_>]) -> Result<Self, Error> {
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
        Ok(ClientVerifier {
            generation: Generation::of("any-tls-eku", &anchors),
            chain: ClientChain::AnyTlsEku(anchors),
            subjects,
            mandatory: false,
            check: None,
            signatures: Signatures::new(),
            cache: None,
        })
    }

    /// Mandatory client authentication: a chain to `roots` valid for
    /// clientAuth (webpki accepts a leaf with no EKU; add a [`ClientCheck`]
    /// to demand it).
    pub fn required(roots: Arc<RootCertStore>) -> Result<Self, VerifierBuilderError> {
        Self::webpki(roots, false)
    }

    /// Optional client authentication: clients without a certificate pass,
    /// a certificate that is sent must chain to `roots`.
    pub fn optional(roots: Arc<RootCertStore>) -> Result<Self, VerifierBuilderError> {
        Self::webpki(roots, true)
    }

    fn webpki(roots: Arc<RootCertStore>, optional: bool) -> Result<Self, VerifierBuilderError> {
        let generation = Generation::of("webpki-client-auth", &roots.roots);
        let builder = WebPkiClientVerifier::builder_with_provider(roots, crate::provider());
        let inner = if optional {
            builder.allow_unauthenticated().build()?
        } else {
            builder.build()?
        };
        Ok(ClientVerifier {
            subjects: inner.root_hint_subjects().to_vec(),
            mandatory: inner.client_auth_mandatory(),
            chain: ClientChain::WebPki(inner),
            check: None,
            signatures: Signatures::new(),
            generation,
            cache: None,
        })
    }

    /// Runs `check` on every leaf whose chain validated.
    #[must_use]
    pub fn with_check(mut self, check: Arc<dyn ClientCheck>) -> Self {
        self.check = Some(check);
        self
    }

    /// Remembers in `cache` the chains that pass path validation (see
    /// [`crate::chain_cache`]); the [`ClientCheck`] still runs on every
    /// handshake. Verifiers may share one cache: each keys its entries by
    /// its own rule and trust anchors.
    #[must_use]
    pub fn with_cache(mut self, cache: ChainCache) -> Self {
        self.cache = cache.enabled().then_some(cache);
        self
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = match &self.cache {
            None => self.verify_chain(end_entity, intermediates, now)?,
            Some(cache) => {
                let key = Key::new(&self.generation, end_entity, intermediates);
                if cache.hit(&key, now) {
                    ClientCertVerified::assertion()
                } else {
                    let verified = self.verify_chain(end_entity, intermediates, now)?;
                    cache.insert(key, end_entity, intermediates, now);
                    verified
                }
            }
        };
        if let Some(check) = &self.check {
            check.check(end_entity, intermediates, now)?;
        }
        Ok(verified)
    }

    /// Path validation alone.
    fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(match &self.chain {
            ClientChain::AnyTlsEku(roots) => {
                let cert = EndEntityCert::try_from(end_entity)
                    .map_err(|e| rustls::Error::InvalidCertificate(other_err(format!("{e:?}"))))?;
                cert.verify_for_usage(
                    self.signatures.0.signature_verification_algorithms.all,
                    roots,
                    intermediates,
                    now,
                    TlsEku,
                    None,
                    None,
                )
                .map_err(map_error)?;
                ClientCertVerified::assertion()
            }
            ClientChain::WebPki(inner) => {
                inner.verify_client_cert(end_entity, intermediates, now)?
            }
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
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
        self.verify(end_entity, intermediates, now)
            .inspect_err(|_| {
                if let Some(check) = &self.check {
                    check.refused(end_entity);
                }
            })
    }

    signature_methods!();
}

/// How a server's chain is validated.
#[derive(Debug)]
enum ServerChain {
    /// rustls' webpki server verifier (chain and server name).
    WebPki(Arc<WebPkiServerVerifier>),
    /// Not here: only [`crate::danger`] builds this, or
    /// [`ServerVerifier::by_check`], whose check validates the chain itself.
    Unverified,
}

/// Ward's server-certificate verifier: a chain rule, then the caller's
/// [`ServerCheck`] if one was given.
#[derive(Debug)]
pub struct ServerVerifier {
    chain: ServerChain,
    check: Option<Arc<dyn ServerCheck>>,
    signatures: Signatures,
}

impl ServerVerifier {
    /// The standard WebPKI check against `roots`: chain, validity, and the
    /// server name.
    pub fn webpki(roots: Arc<RootCertStore>) -> Result<Self, VerifierBuilderError> {
        let inner =
            WebPkiServerVerifier::builder_with_provider(roots, crate::provider()).build()?;
        Ok(ServerVerifier {
            chain: ServerChain::WebPki(inner),
            check: None,
            signatures: Signatures::new(),
        })
    }

    /// A verifier whose `check` judges the whole chain itself (roots,
    /// validity, identity), for peers authenticated by something other
    /// than a server name: a SPIFFE bundle endpoint (`https_spiffe`) is
    /// authenticated by its SPIFFE ID under the partner's roots. Handshake
    /// signatures are verified here.
    pub fn by_check(check: Arc<dyn ServerCheck>) -> Self {
        ServerVerifier {
            chain: ServerChain::Unverified,
            check: Some(check),
            signatures: Signatures::new(),
        }
    }

    /// A verifier that judges no chain and only runs `check`; handshake
    /// signatures are still verified.
    pub(crate) fn unverified(check: Arc<dyn ServerCheck>) -> Self {
        ServerVerifier {
            chain: ServerChain::Unverified,
            check: Some(check),
            signatures: Signatures::new(),
        }
    }

    /// Runs `check` on every leaf whose chain validated.
    #[must_use]
    pub fn with_check(mut self, check: Arc<dyn ServerCheck>) -> Self {
        self.check = Some(check);
        self
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let ServerChain::WebPki(inner) = &self.chain {
            inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if let Some(check) = &self.check {
            check.check(end_entity, intermediates, server_name, now)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    signature_methods!();
}
