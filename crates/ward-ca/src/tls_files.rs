//! `ward ca serve --tls-cert F --tls-key K`: the CA's API served with a
//! certificate from elsewhere (a public CA, cert-manager, the company PKI),
//! so clients that trust only their system store reach it unchanged.
//!
//! The pair is re-read whenever something changes in the directories that
//! hold the two paths as given (so a Kubernetes Secret's `..data` symlink
//! swap, a certbot `live/` symlink update or an editor's rename all count),
//! plus every [`POLL`] as a fallback for changes no event reports (a file
//! rewritten in place behind a symlink in another directory). A new pair is
//! swapped into the live resolver only when its key matches its leaf; a
//! half-finished update (new certificate, old key) keeps the old pair until
//! the next change completes it. Client certificate verification does not
//! depend on this pair and never changes here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use ward_pki::pem;
use ward_tls::rotating::RotatingCert;
use zeroize::Zeroizing;

use crate::Error;

/// Fallback re-read interval when no file event arrives.
pub const POLL: Duration = Duration::from_secs(5);

/// How long a burst of file events is left to settle before re-reading.
const SETTLE: Duration = Duration::from_millis(100);

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

/// What was read from the files, kept to tell a change from a non-change.
#[derive(PartialEq, Eq)]
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
    pub fn load(&self) -> Result<RotatingCert, Error> {
        let contents = self.read()?;
        let (chain, key) = self.parse(&contents)?;
        RotatingCert::new(chain, key).map_err(|e| self.pair_error(&e))
    }

    fn pair_error(&self, e: &ward_tls::Error) -> Error {
        Error::Config(format!(
            "{} with {}: {e}",
            self.cert.display(),
            self.key.display()
        ))
    }

    /// Directories whose entries name the two files, as configured (not
    /// resolved: a symlink swapped there is the change to see).
    fn dirs(&self) -> HashSet<PathBuf> {
        [&self.cert, &self.key]
            .into_iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect()
    }
}

/// Keeps `resolver` serving what the files hold until `stop` turns true.
pub async fn follow(files: TlsFiles, resolver: Arc<RotatingCert>, mut stop: watch::Receiver<bool>) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    });
    // Kept alive for the loop's lifetime; dropping it stops the events.
    let _watcher = match watcher {
        Ok(mut w) => {
            for dir in files.dirs() {
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the TLS certificate's directory; re-reading every 5s");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; re-reading the TLS certificate every 5s");
            None
        }
    };
    let mut served = files.read().ok();
    let mut tried: Option<Contents> = None;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            Some(()) = events.recv() => {
                tokio::time::sleep(SETTLE).await;
                while events.try_recv().is_ok() {}
            }
            _ = poll.tick() => {}
        }
        let contents = match files.read() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the TLS certificate; still serving the previous one");
                continue;
            }
        };
        if served.as_ref() == Some(&contents) || tried.as_ref() == Some(&contents) {
            continue;
        }
        let swapped = files.parse(&contents).and_then(|(chain, key)| {
            resolver
                .update(chain, key)
                .map_err(|e| files.pair_error(&e))
        });
        match swapped {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "loaded a new TLS certificate for the API");
                served = Some(contents);
                tried = None;
            }
            Err(e) => {
                // Often a half-done update: the next change completes it.
                tracing::warn!(error = %e, "new TLS certificate files refused; still serving the previous pair");
                tried = Some(contents);
            }
        }
    }
}

#[cfg(test)]
mod tests;
