//! The file sink: the identity as PEM files, each replaced atomically.
//!
//! Each file is written to a temporary name in the same directory (created
//! with its final mode, so the key is never readable by others, not even
//! briefly), flushed to disk, renamed over the old one, and the directory is
//! synced, so a reader sees either the old or the new file, never a torn one.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ward_client::Svid;

/// The certificate chain (leaf first), as spiffe-helper names it.
pub const CERT_FILE: &str = "svid.pem";
/// The private key (PKCS#8, mode 0600).
pub const KEY_FILE: &str = "svid_key.pem";
/// The trust bundle (roots).
pub const BUNDLE_FILE: &str = "svid_bundle.pem";

/// Mode of the key file.
const KEY_MODE: u32 = 0o600;
/// Mode of the certificate and bundle files.
const PUBLIC_MODE: u32 = 0o644;

/// A failed write, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct WriteError {
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// Writes `data` to `dir/name` atomically with `mode`.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<(), WriteError> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
    let err = |action, path: &Path| {
        let path = path.to_owned();
        move |source| WriteError {
            action,
            path,
            source,
        }
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err("cannot create", &tmp))?;
        // The umask may have removed bits from `mode`; never added any.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(err("cannot set the mode of", &tmp))?;
        file.write_all(data).map_err(err("cannot write", &tmp))?;
        file.sync_all().map_err(err("cannot flush", &tmp))?;
        std::fs::rename(&tmp, &target).map_err(err("cannot replace", &target))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("cannot sync the directory", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the bundle, the key, then the chain: a reader that waits for the
/// chain to change (the usual trigger) finds the matching key in place.
pub fn write_svid(dir: &Path, svid: &Svid) -> Result<(), WriteError> {
    write_atomic(dir, BUNDLE_FILE, svid.bundle_pem().as_bytes(), PUBLIC_MODE)?;
    write_atomic(dir, KEY_FILE, svid.key_pem().as_bytes(), KEY_MODE)?;
    write_atomic(dir, CERT_FILE, svid.chain_pem().as_bytes(), PUBLIC_MODE)
}

/// Creates `dir` (mode 0700 when new) and checks it is a writable directory.
pub fn prepare_dir(dir: &Path) -> Result<(), WriteError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| WriteError {
                action: "cannot create",
                path: dir.to_owned(),
                source,
            })?;
    }
    let probe = dir.join(format!(".ward-agent-probe-{:016x}", fastrand::u64(..)));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map(drop)
        .map_err(|source| WriteError {
            action: "cannot write into",
            path: dir.to_owned(),
            source,
        });
    let _ = std::fs::remove_file(&probe);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_with_the_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "k.pem", b"one", 0o600).unwrap();
        write_atomic(dir.path(), "k.pem", b"two", 0o600).unwrap();
        let path = dir.path().join("k.pem");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.pem")]);
    }

    #[test]
    fn failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "c.pem", b"old", 0o644).unwrap();
        // A directory where the file should go: rename fails.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.path().join("d.pem"))
            .unwrap();
        std::fs::write(dir.path().join("d.pem/x"), b"x").unwrap();
        assert!(write_atomic(dir.path(), "d.pem", b"new", 0o644).is_err());
        assert_eq!(std::fs::read(dir.path().join("c.pem")).unwrap(), b"old");
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn prepare_dir_creates_private_directories() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b");
        prepare_dir(&out).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(prepare_dir(&file).is_err());
    }
}
