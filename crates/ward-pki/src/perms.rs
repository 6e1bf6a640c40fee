//! File permission checks for private keys and the directories holding
//! them, in the spirit of ssh's `StrictModes`: a key that other users can
//! read is a key that is no longer private, and a directory that others can
//! write lets them swap a certificate or key under a running server.
//!
//! Callers refuse what these checks report unless the operator passed an
//! explicit `--allow-insecure-permissions`; errors name the file and its
//! mode and say how to fix it. Only Unix modes are checked.

use std::path::Path;

/// Bits that must be clear on a private key: any access by group or others.
pub const KEY_FORBIDDEN: u32 = 0o077;
/// Bits that must be clear on a directory holding keys: write by group or others.
pub const DIR_FORBIDDEN: u32 = 0o022;

/// Checks that the private key file `path` (symlinks followed, as a reader
/// would) grants no access to group or others.
pub fn check_private_key(path: &Path) -> Result<(), String> {
    let mode = mode_of(path)?;
    if mode & KEY_FORBIDDEN != 0 {
        return Err(format!(
            "the private key {} is accessible by {} (mode {mode:04o}); run `chmod 600 {}` \
             or pass --allow-insecure-permissions",
            path.display(),
            who(mode, 0o070, 0o007),
            path.display()
        ));
    }
    Ok(())
}

/// Checks that the directory `path` (symlinks followed) is not writable by
/// group or others.
pub fn check_private_dir(path: &Path) -> Result<(), String> {
    let mode = mode_of(path)?;
    if mode & DIR_FORBIDDEN != 0 {
        return Err(format!(
            "the directory {} is writable by {} (mode {mode:04o}): they could replace its \
             certificates and keys; run `chmod go-w {}` or pass --allow-insecure-permissions",
            path.display(),
            who(mode, 0o020, 0o002),
            path.display()
        ));
    }
    Ok(())
}

fn who(mode: u32, group: u32, other: u32) -> &'static str {
    match (mode & group != 0, mode & other != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "all users",
    }
}

#[cfg(unix)]
fn mode_of(path: &Path) -> Result<u32, String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| format!("reading the permissions of {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn mode_of(_path: &Path) -> Result<u32, String> {
    Ok(0o600)
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)] // test helpers: a failure should panic loudly

    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn keys_readable_by_others_are_named_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        fs::write(&key, "x").unwrap();
        for ok in [0o600, 0o400, 0o700] {
            chmod(&key, ok);
            assert_eq!(check_private_key(&key), Ok(()), "{ok:o}");
        }
        for (bad, who) in [
            (0o644, "group and others"),
            (0o640, "its group"),
            (0o604, "all users"),
            (0o666, "group and others"),
            (0o620, "its group"),
        ] {
            chmod(&key, bad);
            let e = check_private_key(&key).unwrap_err();
            assert!(e.contains(&key.display().to_string()), "{e}");
            assert!(e.contains(&format!("mode {bad:04o}")), "{e}");
            assert!(e.contains(who), "{bad:o}: {e}");
            assert!(e.contains("--allow-insecure-permissions"), "{e}");
        }
        let e = check_private_key(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn directories_writable_by_others_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        fs::create_dir(&ca).unwrap();
        for ok in [0o700, 0o755, 0o750] {
            chmod(&ca, ok);
            assert_eq!(check_private_dir(&ca), Ok(()), "{ok:o}");
        }
        for bad in [0o777, 0o775, 0o757] {
            chmod(&ca, bad);
            let e = check_private_dir(&ca).unwrap_err();
            assert!(e.contains(&format!("mode {bad:04o}")), "{e}");
        }
        // A symlink's own mode does not matter; its target's does.
        let link = dir.path().join("link.key");
        let key = dir.path().join("real.key");
        fs::write(&key, "x").unwrap();
        chmod(&key, 0o644);
        std::os::unix::fs::symlink(&key, &link).unwrap();
        assert!(check_private_key(&link).is_err());
        chmod(&key, 0o600);
        assert!(check_private_key(&link).is_ok());
    }
}
