//! Watching the files a TLS configuration is read from, robustly: the one
//! place every Ward process (gate, CA, agent) learns that a certificate,
//! key or bundle file changed.
//!
//! Files are rarely modified in place. Editors and `mv` rename a new file
//! over the old one; a Kubernetes Secret volume never touches the visible
//! files at all: they are symlinks through `..data`, and kubelet renames a
//! new `..data` symlink (to a new `..TIMESTAMP` directory) over the old one
//! (ARCHITECTURE.md, trap 16). An event filter on the file's own name sees
//! none of that. So [`watch_files`] watches every directory along each
//! file's path and along the path it resolves to, and on any event there
//! that names a path on those chains (debounced) compares what each file
//! *is* now (its resolved path and the
//! identity, size and times of what it resolves to) with what it was.
//! Only a difference calls back: an audit log written beside a
//! certificate costs a few `stat`s, never a reload. The watched
//! directories are recomputed after every check, so a replaced directory
//! or a new symlink target is followed.
//!
//! Events about other entries of those directories (everything else in
//! `/tmp` or `/etc`) are dropped where they arrive.
//!
//! A callback that reports failure (a reload caught a half-written pair)
//! is retried once shortly after, and again on the next event.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Quiet time after an event before files are compared: bursts (a rename
/// followed by the removal of the old directory) settle into one check.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Delay before a failed callback is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What a path is now: where it resolves to and the identity, size and
/// change times of that file. Absent or unreadable is a state too.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    resolved: Option<PathBuf>,
    meta: Option<(u64, u64, u64, i64, i64, i64, i64)>,
}

impl FileState {
    fn of(path: &Path) -> Self {
        FileState {
            resolved: std::fs::canonicalize(path).ok(),
            meta: std::fs::metadata(path).ok().map(|m| {
                (
                    m.dev(),
                    m.ino(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                )
            }),
        }
    }
}

/// Stops watching when dropped.
#[derive(Debug)]
pub struct FileWatcher {
    task: JoinHandle<()>,
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Makes `path` absolute against the current directory (watching needs
/// stable paths; the process may not change directory later).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_path_buf(), |cwd| cwd.join(path))
    }
}

/// Every directory whose entries decide what `file` reads: its ancestors,
/// the ancestors of what it resolves to, and the directory of a final
/// symlink's target. Each with its identity, so a directory replaced under
/// the same name is watched anew.
fn directories(files: &[PathBuf]) -> BTreeMap<PathBuf, Option<(u64, u64)>> {
    let mut dirs = BTreeMap::new();
    let mut add_ancestors = |p: &Path| {
        for dir in p.ancestors().skip(1) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            // Only existing directories can be watched; a missing one
            // shows up as an event in its parent.
            if let Ok(meta) = std::fs::metadata(dir) {
                dirs.insert(dir.to_path_buf(), Some((meta.dev(), meta.ino())));
            }
        }
    };
    for file in files {
        add_ancestors(file);
        if let Ok(resolved) = std::fs::canonicalize(file) {
            add_ancestors(&resolved);
        }
        if let Ok(target) = std::fs::read_link(file) {
            let target = match file.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
            add_ancestors(&target);
        }
    }
    dirs
}

/// Every path whose change can change what one of `files` reads: the
/// files, what they resolve to and a final symlink's target, and all their
/// ancestors (existing or not: a missing directory's creation counts).
fn relevant_paths(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut paths = BTreeSet::new();
    let mut add = |p: &Path| {
        for q in p.ancestors() {
            if !q.as_os_str().is_empty() {
                paths.insert(q.to_path_buf());
            }
        }
    };
    for file in files {
        add(file);
        if let Ok(resolved) = std::fs::canonicalize(file) {
            add(&resolved);
        }
        if let Ok(target) = std::fs::read_link(file) {
            let target = match file.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
            add(&target);
        }
    }
    paths
}

/// Whether `event` may change what a watched file reads: it names a
/// relevant path, or names none (an overflow or rescan may hide anything).
fn matters(event: &notify::Event, relevant: &BTreeSet<PathBuf>) -> bool {
    !event.kind.is_access()
        && (event.paths.is_empty()
            || event.need_rescan()
            || event.paths.iter().any(|p| relevant.contains(p)))
}

/// The OS watcher and what it watches.
struct Watches {
    watcher: Option<notify::RecommendedWatcher>,
    dirs: BTreeMap<PathBuf, Option<(u64, u64)>>,
    relevant: Arc<BTreeSet<PathBuf>>,
    events: mpsc::UnboundedSender<()>,
}

impl Watches {
    /// Watches the directories `files` depend on from now on; a fresh OS
    /// watcher whenever that set (or a directory's identity, or the paths
    /// that matter) changed.
    fn update(&mut self, files: &[PathBuf]) -> Result<(), notify::Error> {
        let dirs = directories(files);
        let relevant = relevant_paths(files);
        if self.watcher.is_some() && dirs == self.dirs && relevant == *self.relevant {
            return Ok(());
        }
        let relevant = Arc::new(relevant);
        let events = self.events.clone();
        let filter = relevant.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    Ok(e) if !matters(&e, &filter) => {}
                    // An error (e.g. a queue overflow) may hide a change: check.
                    _ => {
                        let _ = events.send(());
                    }
                }
            })?;
        for dir in dirs.keys() {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::debug!(error = %e, dir = %dir.display(), "cannot watch a directory");
            }
        }
        self.watcher = Some(watcher);
        self.dirs = dirs;
        self.relevant = relevant;
        Ok(())
    }
}

/// Calls `on_change` (debounced) whenever one of `files` may read
/// differently than before: written, renamed over, reached through a
/// swapped symlink or a replaced directory, created or removed.
/// `on_change` returns whether it succeeded; a failure is retried once
/// after a second and on the next event. Must run inside a tokio runtime.
/// `None` (logged) when the OS offers no file watching; dropping the
/// returned watcher stops it.
pub fn watch_files(
    files: impl IntoIterator<Item = PathBuf>,
    mut on_change: impl FnMut() -> bool + Send + 'static,
) -> Option<FileWatcher> {
    let mut files: Vec<PathBuf> = files.into_iter().map(|f| absolute(&f)).collect();
    files.sort();
    files.dedup();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watches = Watches {
        watcher: None,
        dirs: BTreeMap::new(),
        relevant: Arc::default(),
        events: tx,
    };
    if let Err(e) = watches.update(&files) {
        tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP");
        return None;
    }
    let snapshot = |files: &[PathBuf]| files.iter().map(|f| FileState::of(f)).collect::<Vec<_>>();
    let mut seen = snapshot(&files);
    let task = tokio::spawn(async move {
        // Whether one retry of a failed callback is due.
        let mut retry_due = false;
        loop {
            let is_retry = tokio::select! {
                got = rx.recv() => match got {
                    Some(()) => false,
                    None => return,
                },
                () = tokio::time::sleep(RETRY), if retry_due => true,
            };
            retry_due = false;
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            if let Err(e) = watches.update(&files) {
                tracing::warn!(error = %e, "cannot renew the file watches");
            }
            let now = snapshot(&files);
            // After a failure `seen` is left as it was, so the next event
            // tries again even if the files did not change since.
            if now == seen {
                continue;
            }
            if on_change() {
                seen = now;
            } else {
                retry_due = !is_retry;
            }
        }
    });
    Some(FileWatcher { task })
}

#[cfg(test)]
mod tests;
