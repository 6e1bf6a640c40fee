//! The state directory: the account (`account.json`, 0600: it holds the
//! account key), the current certificate chain (`cert.pem`) and its key
//! (`key.pem`, 0600). Every file is replaced atomically (write, fsync,
//! rename), so a crash leaves the old or the new file, never half of one;
//! a key and chain that do not match (a crash between the two renames) are
//! treated as no certificate, and the next order replaces both.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::Error;

/// The account file.
pub const ACCOUNT_FILE: &str = "account.json";
/// The certificate chain, leaf first.
pub const CERT_FILE: &str = "cert.pem";
/// The certificate's private key.
pub const KEY_FILE: &str = "key.pem";

/// Largest state file read (a chain of a few certificates is ~10 KiB).
const MAX_FILE: u64 = 1 << 20;

/// A certificate in service: chain, key and the facts renewal needs.
#[derive(Clone)]
pub struct Current {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Chain and key as rustls serves them.
    pub certified: std::sync::Arc<CertifiedKey>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The leaf's serial, hex.
    pub serial: String,
    /// The leaf's DNS names.
    pub names: Vec<String>,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("serial", &self.serial)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Current {
    /// Parses a PEM chain and a PEM key that must belong to it.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Current, Error> {
        let bad = |m: String| Error::Certificate(m);
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("chain: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(bad("the chain holds no certificate".into()));
        };
        let (_, parsed) = X509Certificate::from_der(leaf).map_err(|e| bad(format!("leaf: {e}")))?;
        let validity = parsed.validity();
        let not_before = validity.not_before.to_datetime();
        let not_after = validity.not_after.to_datetime();
        let serial = parsed.raw_serial_as_string().replace(':', "");
        let names = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(format!("key: {e}")))?;
        let certified = ward_tls::credentials::certified_key(chain.clone(), key)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Current {
            chain,
            certified: std::sync::Arc::new(certified),
            not_before,
            not_after,
            serial,
            names,
        })
    }

    /// Whether the certificate names every one of `domains`.
    pub fn covers(&self, domains: &[String]) -> bool {
        domains.iter().all(|d| self.names.iter().any(|n| n == d))
    }
}

/// The state directory of one certificate.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens `dir`, creating it (mode 0700) when missing.
    pub fn open(dir: &Path) -> Result<StateDir, Error> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
            std::fs::set_permissions(dir, Permissions::from_mode(0o700))
                .map_err(Error::io(format!("setting the mode of {}", dir.display())))?;
        }
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(StateDir {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The path of `name` inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads `name`, or `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.file(name);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
            Ok(m) if m.len() > MAX_FILE => {
                return Err(Error::Config(format!(
                    "{} is larger than {MAX_FILE} bytes",
                    path.display()
                )));
            }
            Ok(_) => {}
        }
        std::fs::read(&path)
            .map(Some)
            .map_err(Error::io(format!("reading {}", path.display())))
    }

    /// The stored certificate, if there is a usable one for `domains`
    /// (unreadable, mismatched or foreign files are reported and ignored:
    /// the next order replaces them).
    pub fn current(&self, domains: &[String]) -> Option<Current> {
        let (chain, key) = match (self.read(CERT_FILE), self.read(KEY_FILE)) {
            (Ok(Some(c)), Ok(Some(k))) => (c, zeroize::Zeroizing::new(k)),
            (Ok(None), _) | (_, Ok(None)) => return None,
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "ignoring the stored certificate");
                return None;
            }
        };
        match Current::from_pem(&chain, &key) {
            Ok(c) if c.covers(domains) => Some(c),
            Ok(c) => {
                tracing::warn!(names = ?c.names, "the stored certificate does not cover the configured domains; ordering a new one");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "ignoring the stored certificate");
                None
            }
        }
    }

    /// Stores a new certificate: the key first, then the chain.
    pub fn store(&self, chain_pem: &str, key_pem: &str) -> Result<(), Error> {
        self.write(KEY_FILE, key_pem.as_bytes(), 0o600)?;
        self.write(CERT_FILE, chain_pem.as_bytes(), 0o644)
    }

    /// Replaces `name` atomically with `data` and `mode`.
    pub fn write(&self, name: &str, data: &[u8], mode: u32) -> Result<(), Error> {
        let target = self.file(name);
        let tmp = self.file(&format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(Error::io(format!("creating {}", tmp.display())))?;
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(Error::io(format!("setting the mode of {}", tmp.display())))?;
            file.write_all(data)
                .and_then(|()| file.sync_all())
                .map_err(Error::io(format!("writing {}", tmp.display())))?;
            std::fs::rename(&tmp, &target)
                .map_err(Error::io(format!("replacing {}", target.display())))?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io(format!("syncing {}", self.dir.display())))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// A self-signed stand-in certificate for `domains`, served until the
/// first order completes (clients cannot verify it; nothing else is
/// possible before the CA has answered).
pub fn placeholder(domains: &[String]) -> Result<(String, String), Error> {
    let bad = |e: rcgen::Error| Error::Certificate(format!("placeholder: {e}"));
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(domains.to_vec()).map_err(bad)?;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(1);
    let cert = params.self_signed(&key).map_err(bad)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_key_and_chain_count_as_no_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("s")).unwrap();
        let domains = vec!["a.example.test".to_owned()];
        let (c1, k1) = placeholder(&domains).unwrap();
        let (_, k2) = placeholder(&domains).unwrap();
        state.store(&c1, &k2).unwrap();
        assert!(state.current(&domains).is_none());
        state.store(&c1, &k1).unwrap();
        let current = state.current(&domains).unwrap();
        assert_eq!(current.names, domains);
        assert!(state.current(&["b.example.test".to_owned()]).is_none());
        let mode = std::fs::metadata(state.file(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(state.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn garbage_is_ignored_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.store("not a certificate", "not a key").unwrap();
        assert!(state.current(&["a.test".to_owned()]).is_none());
    }
}
