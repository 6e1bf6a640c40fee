//! Atomic file writes with explicit permissions.
//!
//! A reader never sees a half-written certificate or key: content goes to a
//! temporary file in the same directory, is flushed to disk, and then takes
//! the final name in one step. Private keys are created 0600 from the first
//! byte, never chmod-ed after the fact.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// File mode for private keys.
pub const SECRET_MODE: u32 = 0o600;
/// File mode for public material (certificates, config).
pub const PUBLIC_MODE: u32 = 0o644;

/// Whether [`write_atomic`] may replace an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Fail with `AlreadyExists` if the target exists (checked atomically).
    Never,
    /// Replace the target atomically.
    Allow,
}

/// A name beside `target` that no other writer uses: pid plus a counter,
/// and `create_new` refuses a leftover with the same name anyway.
fn temp_path(target: &Path) -> Result<PathBuf, Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} is not a file path", target.display())))?;
    let mut tmp = name.to_os_string();
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(target.with_file_name(tmp))
}

fn open_new(path: &Path, mode: u32) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path)
}

/// Content written and flushed to a temporary file beside its target,
/// waiting to take the target's name. Dropping it removes the temporary.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// Writes `contents` with `mode` to a temporary file beside `target`.
    pub fn new(target: &Path, contents: &[u8], mode: u32) -> Result<Self, Error> {
        let staged = Staged {
            tmp: temp_path(target)?,
            target: target.to_owned(),
        };
        let mut file = open_new(&staged.tmp, mode).map_err(Error::io(format!(
            "creating a file beside {}",
            target.display()
        )))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(Error::io(format!("writing {}", staged.tmp.display())))?;
        Ok(staged)
    }

    /// Gives the content its final name in one step.
    pub fn commit(self, replace: Replace) -> Result<(), Error> {
        let target = &self.target;
        match replace {
            // A hard link fails if the target exists, so two writers can
            // never both believe they created it.
            Replace::Never => fs::hard_link(&self.tmp, target).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists(format!("{} already exists", target.display()))
                } else {
                    Error::io(format!("creating {}", target.display()))(e)
                }
            })?,
            Replace::Allow => fs::rename(&self.tmp, target)
                .map_err(Error::io(format!("replacing {}", target.display())))?,
        }
        sync_parent(target);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a rename the temporary is already gone; after a hard link
        // (or a failure) it must go.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Writes `contents` to `target` atomically with the given mode.
pub fn write_atomic(
    target: &Path,
    contents: &[u8],
    mode: u32,
    replace: Replace,
) -> Result<(), Error> {
    Staged::new(target, contents, mode)?.commit(replace)
}

/// Flushes the directory entry so a rename survives a crash. Best effort:
/// some filesystems refuse to open directories.
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(dir) = File::open(parent)
    {
        let _ = dir.sync_all();
    }
}

/// Reads a file to a string with the path in the error.
pub fn read_to_string(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_atomic(&path, b"one", SECRET_MODE, Replace::Never).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let err = write_atomic(&path, b"two", SECRET_MODE, Replace::Never).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"three", SECRET_MODE, Replace::Allow).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
