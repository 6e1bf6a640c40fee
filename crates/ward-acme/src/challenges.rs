//! Challenge answers waiting for the CA's validation: tls-alpn-01
//! certificates by server name and http-01 key authorizations by token.
//! One [`Challenges`] may be shared by every certificate of a process (a
//! gate's tenants): names and tokens do not collide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

pub use ward_tls::acme::ACME_TLS_ALPN;

/// Pending challenge answers.
#[derive(Clone, Default)]
pub struct Challenges {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Server name → the configuration answering its validation.
    tls_alpn: Mutex<HashMap<String, Arc<ServerConfig>>>,
    /// Server name → the challenge certificate itself.
    tls_alpn_keys: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Token → key authorization.
    http: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

impl Challenges {
    /// The TLS configuration answering a tls-alpn-01 validation of
    /// `server_name`, if one is pending.
    pub fn tls_alpn(&self, server_name: &str) -> Option<Arc<ServerConfig>> {
        lock(&self.inner.tls_alpn)
            .get(&server_name.to_ascii_lowercase())
            .cloned()
    }

    /// The challenge certificate for `server_name`, if one is pending (for
    /// a listener that resolves it itself, see
    /// `ward_tls::acme::TlsAlpnResolver`).
    pub fn tls_alpn_key(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.inner.tls_alpn_keys)
            .get(&server_name.to_ascii_lowercase())
            .cloned()
    }

    /// A lookup for `ward_tls::acme::TlsAlpnResolver`.
    pub fn lookup(&self) -> ward_tls::acme::ChallengeLookup {
        let this = self.clone();
        Arc::new(move |name| this.tls_alpn_key(name))
    }

    /// The key authorization for an http-01 `token`, if one is pending.
    pub fn http(&self, token: &str) -> Option<String> {
        lock(&self.inner.http).get(token).cloned()
    }

    /// Makes `server_name`'s tls-alpn-01 answer available: a self-signed
    /// certificate for it carrying the critical acmeIdentifier extension
    /// with `digest` (SHA-256 of the key authorization).
    pub fn add_tls_alpn(&self, server_name: &str, digest: &[u8]) -> Result<(), Error> {
        let (key, config) = tls_alpn_config(server_name, digest)?;
        let name = server_name.to_ascii_lowercase();
        lock(&self.inner.tls_alpn_keys).insert(name.clone(), key);
        lock(&self.inner.tls_alpn).insert(name, Arc::new(config));
        Ok(())
    }

    /// Withdraws `server_name`'s tls-alpn-01 answer.
    pub fn remove_tls_alpn(&self, server_name: &str) {
        let name = server_name.to_ascii_lowercase();
        lock(&self.inner.tls_alpn).remove(&name);
        lock(&self.inner.tls_alpn_keys).remove(&name);
    }

    /// Makes an http-01 answer available.
    pub fn add_http(&self, token: &str, key_authorization: &str) {
        lock(&self.inner.http).insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Withdraws an http-01 answer.
    pub fn remove_http(&self, token: &str) {
        lock(&self.inner.http).remove(token);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The RFC 8737 §3 certificate and its server configuration.
fn tls_alpn_config(
    server_name: &str,
    digest: &[u8],
) -> Result<(Arc<CertifiedKey>, ServerConfig), Error> {
    let bad = |m: String| Error::Challenge(format!("tls-alpn-01 certificate: {m}"));
    let key = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![server_name.to_owned()])
        .map_err(|e| bad(e.to_string()))?;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(|e| bad(e.to_string()))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified =
        ward_tls::acme::challenge_key(cert.der().clone(), der).map_err(|e| bad(e.to_string()))?;
    let certified = Arc::new(certified);
    let config =
        ward_tls::acme::tls_alpn_01_config(certified.clone()).map_err(|e| bad(e.to_string()))?;
    Ok((certified, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_appear_and_disappear() {
        let c = Challenges::default();
        assert!(c.tls_alpn("a.test").is_none());
        c.add_tls_alpn("A.test", &[7u8; 32]).unwrap();
        let config = c.tls_alpn("a.TEST").unwrap();
        assert_eq!(config.alpn_protocols, vec![ACME_TLS_ALPN.to_vec()]);
        // The certificate carries the critical acmeIdentifier extension
        // (id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31) with the digest.
        let key = c.tls_alpn_key("a.test").unwrap();
        let (_, cert) = <x509_parser::prelude::X509Certificate<'_> as x509_parser::prelude::FromDer<'_, _>>::from_der(key.cert[0].as_ref()).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        assert!(ext.value.ends_with(&[7u8; 32]));
        c.remove_tls_alpn("a.test");
        assert!(c.tls_alpn("a.test").is_none());
        assert!(c.tls_alpn_key("a.test").is_none());
        c.add_http("tok", "tok.thumb");
        assert_eq!(c.http("tok").as_deref(), Some("tok.thumb"));
        c.remove_http("tok");
        assert!(c.http("tok").is_none());
    }
}
