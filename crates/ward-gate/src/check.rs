//! `ward gate serve --check-config`: everything `serve` checks before it
//! accepts a connection, short of binding its listeners and contacting a
//! CA: the configuration's rules, every file it names (certificates, keys,
//! client CAs, policies, CRL files), that the listen addresses resolve,
//! and that the audit log can be written.

use std::net::ToSocketAddrs;
use std::path::Path;

use crate::Error;
use crate::config::{CrlSource, GateConfig};
use crate::runtime::Runtime;

/// What a successful check found.
#[derive(Debug)]
pub struct Checked {
    /// Tenants configured.
    pub tenants: usize,
    /// The built runtime, when the configuration needs no `[identity]`
    /// certificate (that one exists only once obtained from the CA).
    pub runtime: Option<Runtime>,
}

/// Checks `config` as `serve` would, without binding or fetching.
pub fn check(config: GateConfig) -> Result<Checked, Error> {
    config.validate()?;
    resolves("listen.address", &config.listen.address)?;
    if let Some(admin) = &config.listen.admin {
        resolves("listen.admin", admin)?;
    }
    audit_writable(&config.audit_log)?;
    for source in config.revocation.sources() {
        if let CrlSource::File(path) = source {
            crl_file(&path, config.revocation.crl_max_bytes)?;
        }
    }
    if let Some(identity) = &config.identity {
        if let Some(bundle) = &identity.ca_bundle {
            readable("identity.ca_bundle", bundle)?;
        }
        if let Some(token) = &identity.token_file {
            readable("identity.token_file", token)?;
        }
        return Ok(Checked {
            tenants: config.tenants.len(),
            runtime: None,
        });
    }
    let runtime = Runtime::build(config)?;
    Ok(Checked {
        tenants: runtime.tenants.len(),
        runtime: Some(runtime),
    })
}

fn resolves(what: &str, address: &str) -> Result<(), Error> {
    let found = address
        .to_socket_addrs()
        .map_err(|e| Error::Config(format!("{what} {address:?}: {e}")))?
        .next();
    match found {
        Some(_) => Ok(()),
        None => Err(Error::Config(format!(
            "{what} {address:?} resolves to no address"
        ))),
    }
}

fn readable(what: &str, path: &Path) -> Result<(), Error> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| Error::Config(format!("{what}: {}: {e}", path.display())))
}

/// The audit log `serve` would open (appending, created if missing): its
/// directory must exist, and an existing file must be writable.
fn audit_writable(spec: &str) -> Result<(), Error> {
    if matches!(spec, "stdout" | "stderr" | "off") {
        return Ok(());
    }
    let path = Path::new(spec);
    let bad = |e: String| Error::Config(format!("audit log {}: {e}", path.display()));
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| bad(e.to_string()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(bad(format!(
            "the directory {} does not exist",
            dir.display()
        )))
    }
}

/// A CRL file must exist, fit `crl_max_bytes`, and hold a CRL (DER or
/// PEM). Whether it verifies is known only against the CA that signed it,
/// which `serve` checks as it loads it.
fn crl_file(path: &Path, max: u64) -> Result<(), Error> {
    let bad = |e: String| Error::Config(format!("revocation: CRL file {}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > max {
        return Err(bad(format!(
            "{} bytes, larger than crl_max_bytes ({max})",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let der = crate::revocation::crl::decode(&bytes).map_err(|e| bad(e.to_string()))?;
    use x509_parser::prelude::FromDer;
    let (rest, _) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        .map_err(|e| bad(format!("not a CRL: {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the CRL", rest.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_resolve() {
        assert!(resolves("listen", "127.0.0.1:0").is_ok());
        assert!(resolves("listen", "localhost:8443").is_ok());
        for bad in ["127.0.0.1", "not an address", "127.0.0.1:99999", ":8443x"] {
            assert!(resolves("listen", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crl_files_must_exist_and_parse() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crl");
        let err = crl_file(&missing, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("missing.crl"), "{err}");
        let junk = dir.path().join("junk.crl");
        std::fs::write(&junk, b"not a crl").unwrap();
        assert!(crl_file(&junk, 1 << 20).is_err());
        assert!(
            crl_file(&junk, 4)
                .unwrap_err()
                .to_string()
                .contains("larger")
        );
    }

    #[test]
    fn the_audit_log_directory_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert!(audit_writable("stdout").is_ok());
        assert!(audit_writable(dir.path().join("audit.log").to_str().unwrap()).is_ok());
        let nowhere = dir.path().join("no/such/dir/audit.log");
        assert!(audit_writable(nowhere.to_str().unwrap()).is_err());
    }
}
