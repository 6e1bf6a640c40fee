//! `ward ca serve --tls-cert F --tls-key K`: the CA's API served with a
//! certificate from elsewhere (a public CA, cert-manager, the company PKI),
//! so clients that trust only their system store reach it unchanged.
//!
//! The pair is re-read whenever what either path reads changes (a
//! Kubernetes Secret's `..data` symlink swap, a certbot `live/` symlink
//! update, an editor's rename, a write in place). A new pair is
//! swapped into the live resolver only when its key matches its leaf; a
//! half-finished update (new certificate, old key) keeps the old pair until
//! the next change completes it. Client certificate verification does not
//! depend on this pair and never changes here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use ward_pki::pem;
use ward_tls::credentials::Credentials;
use zeroize::Zeroizing;

use crate::Error;

/// The two files of an external server identity.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Skip the check that the key is private to its owner.
    pub allow_insecure_permissions: bool,
}

/// What was read from the files.
struct Contents {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

impl TlsFiles {
    fn read(&self) -> Result<Contents, Error> {
        if !self.allow_insecure_permissions {
            ward_pki::perms::check_private_key(&self.key).map_err(Error::Config)?;
        }
        let read =
            |p: &Path| std::fs::read(p).map_err(Error::io(format!("reading {}", p.display())));
        Ok(Contents {
            cert: read(&self.cert)?,
            key: Zeroizing::new(read(&self.key)?),
        })
    }

    fn parse(
        &self,
        contents: &Contents,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        let chain = pem::parse_certs(&contents.cert)
            .map_err(Error::pki(format!("reading {}", self.cert.display())))?;
        if chain.is_empty() {
            return Err(Error::Config(format!(
                "{} holds no certificate",
                self.cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| {
            Error::Config(format!(
                "{} holds no usable PEM private key: {e}",
                self.key.display()
            ))
        })?;
        Ok((chain, key))
    }

    /// Reads the pair and builds the resolver serving it; errors name the
    /// file at fault.
    pub fn load(&self) -> Result<Credentials, Error> {
        let contents = self.read()?;
        let (chain, key) = self.parse(&contents)?;
        Credentials::new(chain, key).map_err(|e| self.pair_error(&e))
    }

    fn pair_error(&self, e: &ward_tls::Error) -> Error {
        Error::Config(format!(
            "{} with {}: {e}",
            self.cert.display(),
            self.key.display()
        ))
    }
}

/// Keeps `resolver` serving what the files hold until `stop` turns true.
/// Changes are seen through [`ward_tls::watch::watch_files`], the one file
/// watcher every Ward process uses (symlink swaps, renames, replaced
/// directories); a refused pair is retried there.
pub async fn follow(files: TlsFiles, resolver: Arc<Credentials>, mut stop: watch::Receiver<bool>) {
    let paths = [files.cert.clone(), files.key.clone()];
    let reload = move || {
        let swapped = files.read().and_then(|contents| {
            let (chain, key) = files.parse(&contents)?;
            resolver
                .update(chain, key)
                .map_err(|e| files.pair_error(&e))
        });
        match swapped {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "loaded a new TLS certificate for the API");
                true
            }
            Err(e) => {
                // Often a half-done update: the next change completes it.
                tracing::warn!(error = %e, "new TLS certificate files refused; still serving the previous pair");
                false
            }
        }
    };
    // Dropping the watcher stops it.
    let _watcher = ward_tls::watch::watch_files(paths, reload);
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests;
