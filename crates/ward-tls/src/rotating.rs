//! A server certificate that can be replaced while the server runs.
//!
//! [`RotatingCert`] is a rustls certificate resolver holding one
//! [`CertifiedKey`] behind an [`ArcSwap`]: [`RotatingCert::update`] swaps in a
//! new chain and key atomically, every handshake that starts afterwards uses
//! them, and connections already established keep the keys they were made
//! with. Nothing restarts a listener to rotate. [`server_config`] builds
//! Ward's TLS 1.3-only `ServerConfig` around it.
//!
//! This module must never log or print key material: [`RotatingCert`]'s
//! `Debug` shows only the chain length.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// A server certificate resolver whose chain and key can be replaced at any
/// time; every handshake gets the current pair.
pub struct RotatingCert {
    current: ArcSwap<CertifiedKey>,
    provider: Arc<CryptoProvider>,
}

impl RotatingCert {
    /// A resolver serving `chain` (leaf first) with `key`, which must belong
    /// to the leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        let provider = crate::provider();
        let first = certified_key(chain, key, &provider)?;
        Ok(RotatingCert {
            current: ArcSwap::from_pointee(first),
            provider,
        })
    }

    /// Replaces the chain and key for new handshakes. On error the current
    /// pair stays in place.
    pub fn update(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), Error> {
        let next = certified_key(chain, key, &self.provider)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// The pair the next handshake will use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl fmt::Debug for RotatingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingCert")
            .field("chain_len", &self.current.load().cert.len())
            .finish_non_exhaustive()
    }
}

/// Loads `key` with `provider` and pairs it with `chain`, refusing an empty
/// chain and a key whose public half is not the leaf's (or cannot be
/// compared with it: a pair we cannot check is a pair we do not serve).
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    if chain.is_empty() {
        return Err(Error::Credentials("the certificate chain is empty".into()));
    }
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Credentials(format!("the private key is unusable: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        Error::Credentials(format!(
            "the private key does not match the leaf certificate: {e}"
        ))
    })?;
    Ok(certified)
}

/// Whether and how a server asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A client certificate is requested and, when sent, must chain to these
    /// roots; clients without one are let through.
    Optional(Arc<RootCertStore>),
    /// A client certificate chaining to these roots is required.
    Required(Arc<RootCertStore>),
    /// A verifier built elsewhere (SPIFFE-aware, CRL-aware, …).
    Custom(Arc<dyn ClientCertVerifier>),
}

/// Ward's server configuration: TLS 1.3 only, [`crate::provider`], the
/// certificate from `resolver`, client certificates as `client_auth` says.
///
/// No ALPN protocols are set; for HTTP use [`crate::server::set_http_alpn`].
pub fn server_config(
    resolver: Arc<RotatingCert>,
    client_auth: ClientAuth,
) -> Result<ServerConfig, Error> {
    let provider = crate::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(crate::TLS13_ONLY)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots, provider)
                .allow_unauthenticated()
                .build()?,
        ),
        ClientAuth::Required(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots, provider).build()?,
        ),
        ClientAuth::Custom(verifier) => builder.with_client_cert_verifier(verifier),
    };
    Ok(builder.with_cert_resolver(resolver))
}
