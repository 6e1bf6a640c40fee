//! The TLS configurations of an ACME client: the one answering a
//! tls-alpn-01 validation (RFC 8737), and the HTTPS client that talks to a
//! private ACME server.
//!
//! The tls-alpn-01 configuration never asks for a client certificate: the
//! validating CA has none, and a listener whose normal tenants require
//! client certificates must still answer it (ghostunnel's renewals broke on
//! exactly that).

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;
use crate::config::{ClientAuth, ClientCert, ServerAuth, ServerOptions, client_config};
use crate::credentials::Credentials;

/// The ALPN protocol of tls-alpn-01 validation.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Pairs a tls-alpn-01 certificate with its key. Unlike
/// [`crate::credentials::certified_key`] the pair is not cross-checked:
/// webpki refuses to parse the critical acmeIdentifier extension, and the
/// caller generated both halves itself a moment ago.
pub fn challenge_key(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    let signing_key = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Credentials(format!("the private key is unusable: {e}")))?;
    Ok(CertifiedKey::new(vec![cert], signing_key))
}

/// A server configuration presenting `challenge` (the self-signed
/// certificate with the acmeIdentifier extension) for ALPN `acme-tls/1`
/// only, with no client authentication. TLS 1.2 is accepted as well: RFC
/// 8737 requires only TLS 1.2 of validators.
pub fn tls_alpn_01_config(challenge: Arc<CertifiedKey>) -> Result<ServerConfig, Error> {
    let options = ServerOptions {
        allow_tls12: true,
        prefer_aes128: false,
        disable_resumption: true,
        ..ServerOptions::default()
    };
    let mut config = crate::config::server_config_with(
        Arc::new(Credentials::of(challenge)),
        ClientAuth::None,
        &options,
    )?;
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(config)
}

/// The client configuration for an ACME server whose HTTPS certificate
/// chains to `roots` (Ward's provider, TLS 1.3, no client certificate).
pub fn acme_client_config(roots: &[CertificateDer<'static>]) -> Result<ClientConfig, Error> {
    // No ALPN here: the HTTP connector sets the protocols it speaks.
    Ok(client_config(ServerAuth::roots(roots)?, ClientCert::None)?)
}

/// Where a [`TlsAlpnResolver`] looks up a pending challenge by server name.
pub type ChallengeLookup = Arc<dyn Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// A certificate resolver for a listener that also answers tls-alpn-01
/// validations: a ClientHello offering only `acme-tls/1` for a name with a
/// pending challenge gets the challenge certificate, every other one what
/// `inner` resolves. The configuration must offer `acme-tls/1` among its
/// ALPN protocols ([`offer_acme_tls_alpn`]) and must not require client
/// certificates (the validator has none).
pub struct TlsAlpnResolver {
    inner: Arc<dyn rustls::server::ResolvesServerCert>,
    lookup: ChallengeLookup,
}

impl TlsAlpnResolver {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn rustls::server::ResolvesServerCert>,
        lookup: ChallengeLookup,
    ) -> Self {
        TlsAlpnResolver { inner, lookup }
    }
}

impl std::fmt::Debug for TlsAlpnResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAlpnResolver").finish_non_exhaustive()
    }
}

impl rustls::server::ResolvesServerCert for TlsAlpnResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let only_acme = hello
            .alpn()
            .is_some_and(|mut p| p.next() == Some(ACME_TLS_ALPN) && p.next().is_none());
        if only_acme {
            // A validation with nothing pending gets no certificate at all.
            return hello.server_name().and_then(|n| (self.lookup)(n));
        }
        self.inner.resolve(hello)
    }
}

/// Adds `acme-tls/1` (last) to a configuration's ALPN protocols, so that
/// a validator offering only it is not refused before the resolver runs.
pub fn offer_acme_tls_alpn(config: &mut ServerConfig) {
    if !config.alpn_protocols.iter().any(|p| p == ACME_TLS_ALPN) {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
}
