//! The one credential store every TLS endpoint of Ward presents from.
//!
//! [`Credentials`] holds one [`CertifiedKey`] behind an [`ArcSwap`]:
//! rotation, file reload, CA renewal and OCSP stapling all publish into it,
//! every handshake that starts afterwards uses what was published last, and
//! connections already established keep the keys they were made with.
//! Nothing restarts a listener to rotate. It is a rustls certificate
//! resolver for both directions ([`ResolvesServerCert`] and
//! [`ResolvesClientCert`]), so the same store serves a `ServerConfig` and a
//! `ClientConfig`.
//!
//! This module must never log or print key material: [`Credentials`]'
//! `Debug` shows only the chain length.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// A certificate chain and key that can be replaced at any time; every
/// handshake gets the current pair.
pub struct Credentials {
    current: ArcSwap<CertifiedKey>,
}

impl Credentials {
    /// A store presenting `chain` (leaf first) with `key`, which must belong
    /// to the leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        Ok(Self::of(Arc::new(certified_key(chain, key)?)))
    }

    /// A store presenting `first`, a pair already checked with
    /// [`certified_key`].
    pub fn of(first: Arc<CertifiedKey>) -> Self {
        Credentials {
            current: ArcSwap::new(first),
        }
    }

    /// Replaces the chain and key for new handshakes. On error the current
    /// pair stays in place.
    pub fn update(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), Error> {
        self.publish(Arc::new(certified_key(chain, key)?));
        Ok(())
    }

    /// Replaces what new handshakes present with `next`, a pair already
    /// checked with [`certified_key`].
    pub fn publish(&self, next: Arc<CertifiedKey>) {
        self.current.store(next);
    }

    /// Staples `ocsp` (a DER OCSP response) to the current pair, or stops
    /// stapling with `None`.
    pub fn set_ocsp_staple(&self, ocsp: Option<Vec<u8>>) {
        self.current.rcu(|cur| {
            let mut next = CertifiedKey::new(cur.cert.clone(), cur.key.clone());
            next.ocsp = ocsp.clone();
            next
        });
    }

    /// The DER OCSP response stapled now, if any.
    pub fn ocsp_staple(&self) -> Option<Vec<u8>> {
        self.current.load().ocsp.clone()
    }

    /// The pair the next handshake will use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for Credentials {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ResolvesClientCert for Credentials {
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

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("chain_len", &self.current.load().cert.len())
            .finish_non_exhaustive()
    }
}

/// Loads `key` with Ward's provider and pairs it with `chain`, refusing an
/// empty chain and a key whose public half is not the leaf's (or cannot be
/// compared with it: a pair we cannot check is a pair we do not serve).
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    if chain.is_empty() {
        return Err(Error::Credentials("the certificate chain is empty".into()));
    }
    let signing_key = crate::provider()
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
