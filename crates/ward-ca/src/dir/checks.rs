//! What `ward ca serve` checks about its directory before it signs anything:
//! the certificates form the hierarchy `ca init` made (a swapped `root.crt`
//! would be served to every client as the trust anchor), every key is its
//! certificate's, and nobody else can read the keys or write the directory.
//!
//! Every error names the file at fault.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use ward_pki::verify::{issued_by, key_matches};

use super::{
    ADMIN_CRT, ADMIN_KEY, CA_FILES, CaDir, INTERMEDIATE_CRT, INTERMEDIATE_KEY, ROOT_CRT, ROOT_KEY,
    ROOT_OCSP_CRT, ROOT_OCSP_KEY, read_certs,
};
use crate::Error;

impl CaDir {
    /// Checks that `intermediate.crt` is issued by a certificate of
    /// `root.crt` (names and signature), that `root-ocsp.crt` is issued by
    /// the root and `admin.crt` by the intermediate, and that each key
    /// present (`root.key`, `intermediate.key`, `root-ocsp.key`, `admin.key`)
    /// belongs to its certificate.
    pub fn check_hierarchy(&self) -> Result<(), Error> {
        let roots = read_certs(&self.file(ROOT_CRT))?;
        if roots.is_empty() {
            return Err(Error::Config(format!(
                "{} holds no certificate",
                self.file(ROOT_CRT).display()
            )));
        }
        let intermediate = self.first_cert(INTERMEDIATE_CRT)?;
        let root = self.issuer_among(INTERMEDIATE_CRT, &intermediate, &roots, ROOT_CRT)?;
        self.check_key(ROOT_KEY, ROOT_CRT, &root)?;
        self.check_key(INTERMEDIATE_KEY, INTERMEDIATE_CRT, &intermediate)?;
        if self.file(ROOT_OCSP_CRT).exists() {
            let ocsp = self.first_cert(ROOT_OCSP_CRT)?;
            self.issuer_among(ROOT_OCSP_CRT, &ocsp, &roots, ROOT_CRT)?;
            self.check_key(ROOT_OCSP_KEY, ROOT_OCSP_CRT, &ocsp)?;
        }
        if self.file(ADMIN_CRT).exists() {
            let admin = self.first_cert(ADMIN_CRT)?;
            self.issuer_among(
                ADMIN_CRT,
                &admin,
                std::slice::from_ref(&intermediate),
                INTERMEDIATE_CRT,
            )?;
            self.check_key(ADMIN_KEY, ADMIN_CRT, &admin)?;
        }
        Ok(())
    }

    /// Checks that no private key of the directory is accessible by group or
    /// others and that the directory is not writable by them (what ssh's
    /// `StrictModes` checks); `ward ca serve --allow-insecure-permissions`
    /// skips this.
    pub fn check_permissions(&self) -> Result<(), Error> {
        ward_pki::perms::check_private_dir(self.path()).map_err(Error::Config)?;
        for name in CA_FILES.iter().filter(|n| n.ends_with(".key")) {
            let path = self.file(name);
            if path.exists() {
                ward_pki::perms::check_private_key(&path).map_err(Error::Config)?;
            }
        }
        Ok(())
    }

    fn first_cert(&self, name: &str) -> Result<CertificateDer<'static>, Error> {
        let path = self.file(name);
        read_certs(&path)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config(format!("{} holds no certificate", path.display())))
    }

    /// The certificate of `candidates` (from `issuer_file`) that issued
    /// `cert` (from `name`).
    fn issuer_among(
        &self,
        name: &str,
        cert: &CertificateDer<'_>,
        candidates: &[CertificateDer<'static>],
        issuer_file: &str,
    ) -> Result<CertificateDer<'static>, Error> {
        let mut why = String::new();
        for candidate in candidates {
            match issued_by(cert, candidate) {
                Ok(()) => return Ok(candidate.clone()),
                Err(e) => why = e,
            }
        }
        Err(Error::Config(format!(
            "{} is not issued by {}: {why}; was {issuer_file} replaced? Restore the files `ward ca init` wrote",
            self.file(name).display(),
            self.file(issuer_file).display(),
        )))
    }

    /// Checks that `key_name`, when present, holds the key of `cert`.
    fn check_key(
        &self,
        key_name: &str,
        cert_name: &str,
        cert: &CertificateDer<'_>,
    ) -> Result<(), Error> {
        let key_path = self.file(key_name);
        if !key_path.exists() {
            return Ok(());
        }
        let key = self.read_key(&key_path)?;
        let matches = key_matches(cert, &key.public_key_der())
            .map_err(|e| Error::Config(format!("{}: {e}", self.file(cert_name).display())))?;
        if !matches {
            return Err(mismatch(&key_path, &self.file(cert_name)));
        }
        Ok(())
    }
}

fn mismatch(key: &Path, cert: &Path) -> Error {
    Error::Config(format!(
        "{} is not the private key of {}",
        key.display(),
        cert.display()
    ))
}
