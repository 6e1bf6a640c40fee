//! The rustls side of rotation: one resolver for both directions.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Hands every new handshake the current certificate and key.
///
/// Holds one [`CertifiedKey`] behind an [`ArcSwap`]: a rotation swaps the
/// pointer, handshakes that start afterwards present the new chain and sign
/// with the new key, and connections already open are untouched (their
/// keys were fixed by their handshake). Usable in a `ServerConfig`
/// ([`ResolvesServerCert`]) and a `ClientConfig` ([`ResolvesClientCert`]).
pub struct SvidResolver {
    current: ArcSwap<CertifiedKey>,
}

impl SvidResolver {
    /// A resolver presenting `first`.
    pub fn new(first: Arc<CertifiedKey>) -> Self {
        SvidResolver {
            current: ArcSwap::new(first),
        }
    }

    /// Replaces what new handshakes present.
    pub fn update(&self, next: Arc<CertifiedKey>) {
        self.current.store(next);
    }

    /// What the next handshake will present.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let key = self.current.load_full();
        // Present nothing rather than a certificate the server cannot verify
        // a signature of.
        key.key.choose_scheme(sigschemes).is_some().then_some(key)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl fmt::Debug for SvidResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidResolver")
            .field("chain_len", &self.current.load().cert.len())
            .finish_non_exhaustive()
    }
}
