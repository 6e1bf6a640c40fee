use std::os::unix::fs::symlink;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc::UnboundedReceiver;

use super::*;

/// A watcher on `files` that reports each call; `results` says what the
/// calls return in turn (then `true`).
fn watched(files: &[PathBuf], results: Vec<bool>) -> (FileWatcher, UnboundedReceiver<usize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let watcher = watch_files(files.to_vec(), move || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(n + 1);
        results.get(n).copied().unwrap_or(true)
    })
    .unwrap();
    (watcher, rx)
}

async fn next_call(rx: &mut UnboundedReceiver<usize>, within: Duration) -> Option<usize> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// Nothing may happen: there is no signal for an absence, so this waits
/// several debounce periods.
async fn no_call(rx: &mut UnboundedReceiver<usize>) {
    assert_eq!(
        next_call(rx, DEBOUNCE * 4).await,
        None,
        "unexpected callback"
    );
}

/// kubelet's layout: `..TIMESTAMP/` holds the files, `..data` points at it,
/// the visible names point through `..data`.
fn secret_version(dir: &Path, stamp: &str, content: &str) {
    let version = dir.join(stamp);
    std::fs::create_dir(&version).unwrap();
    std::fs::write(version.join("tls.crt"), content).unwrap();
}

/// kubelet's atomic update: new directory, `..data_tmp` → it, renamed over
/// `..data`, old directory removed.
fn swap_data(dir: &Path, new: &str, old: &str) {
    symlink(new, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(old)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_secret_swap_is_seen_and_neighbours_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    secret_version(dir, "..2026_12_07_10_00_00.1", "first");
    symlink("..2026_12_07_10_00_00.1", dir.join("..data")).unwrap();
    symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
    let (_watcher, mut calls) = watched(&[dir.join("tls.crt")], vec![]);

    // A neighbour written in the same directory: events, but no change.
    std::fs::write(dir.join("audit.log"), "line\n").unwrap();
    no_call(&mut calls).await;

    secret_version(dir, "..2026_12_07_10_05_00.2", "second");
    swap_data(dir, "..2026_12_07_10_05_00.2", "..2026_12_07_10_00_00.1");
    assert_eq!(next_call(&mut calls, Duration::from_secs(2)).await, Some(1));
    assert_eq!(
        std::fs::read_to_string(dir.join("tls.crt")).unwrap(),
        "second"
    );
    // And again: the watches followed the new target.
    secret_version(dir, "..2026_12_07_10_10_00.3", "third");
    swap_data(dir, "..2026_12_07_10_10_00.3", "..2026_12_07_10_05_00.2");
    assert_eq!(next_call(&mut calls, Duration::from_secs(2)).await, Some(2));
    no_call(&mut calls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_in_place_writes_and_replaced_directories_are_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let file = certs.join("server.crt");
    std::fs::write(&file, "one").unwrap();
    let (_watcher, mut calls) = watched(std::slice::from_ref(&file), vec![]);

    // Renamed over.
    std::fs::write(certs.join("server.crt.new"), "two").unwrap();
    std::fs::rename(certs.join("server.crt.new"), &file).unwrap();
    assert_eq!(next_call(&mut calls, Duration::from_secs(2)).await, Some(1));
    // Written in place (a different size).
    std::fs::write(&file, "three!").unwrap();
    assert_eq!(next_call(&mut calls, Duration::from_secs(2)).await, Some(2));
    // The whole directory replaced under the same name.
    let staged = tmp.path().join("certs.new");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join("server.crt"), "four").unwrap();
    std::fs::rename(&certs, tmp.path().join("certs.old")).unwrap();
    std::fs::rename(&staged, &certs).unwrap();
    assert_eq!(next_call(&mut calls, Duration::from_secs(2)).await, Some(3));
    // The new directory is watched, not the old one.
    std::fs::write(tmp.path().join("certs.old/server.crt"), "old, changed").unwrap();
    no_call(&mut calls).await;
    std::fs::write(&file, "five, longer").unwrap();
    assert_eq!(next_call(&mut calls, Duration::from_secs(2)).await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_callback_is_retried_once_without_a_new_event() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("server.key");
    std::fs::write(&file, "one").unwrap();
    // The new version is written outside the watched directory (made
    // before the watcher starts) and renamed over in one step: a write in
    // place is open(O_TRUNC) and write(), and a write beside the file is
    // create and rename, two events each that a loaded machine may deliver
    // a debounce apart; the second would count as "the next event".
    let staging = tmp.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("server.key"), "two!").unwrap();
    let (_watcher, mut calls) = watched(std::slice::from_ref(&file), vec![false, false]);
    std::fs::rename(staging.join("server.key"), &file).unwrap();
    assert_eq!(next_call(&mut calls, Duration::from_secs(2)).await, Some(1));
    // Failed: tried again after RETRY, with no event in between.
    assert_eq!(next_call(&mut calls, RETRY * 3).await, Some(2));
    // Failed again: no more timed retries, but the next event about the
    // file retries (even one that leaves it as it is).
    no_call(&mut calls).await;
    std::fs::write(staging.join("server.key"), "two!").unwrap();
    std::fs::rename(staging.join("server.key"), &file).unwrap();
    assert_eq!(next_call(&mut calls, Duration::from_secs(2)).await, Some(3));
    no_call(&mut calls).await;
}

#[test]
fn only_events_about_paths_on_the_files_chains_matter() {
    use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    secret_version(dir, "..2026_12_07_10_00_00.1", "first");
    symlink("..2026_12_07_10_00_00.1", dir.join("..data")).unwrap();
    symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
    let relevant = relevant_paths(&[dir.join("tls.crt")]);
    let event = |kind, paths: &[PathBuf]| notify::Event {
        kind,
        paths: paths.to_vec(),
        attrs: Default::default(),
    };
    let create = EventKind::Create(CreateKind::File);
    // A neighbour in the same directory, or anything else in an ancestor
    // (say /tmp): dropped.
    assert!(!matters(
        &event(create, &[dir.join("audit.log")]),
        &relevant
    ));
    assert!(!matters(
        &event(create, &[dir.parent().unwrap().join("x")]),
        &relevant
    ));
    // kubelet's swap, the file itself, the version directory, an ancestor.
    let swap = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
    assert!(matters(
        &event(swap, &[dir.join("..data_tmp"), dir.join("..data")]),
        &relevant
    ));
    assert!(matters(&event(create, &[dir.join("tls.crt")]), &relevant));
    let version = std::fs::canonicalize(dir.join("..2026_12_07_10_00_00.1")).unwrap();
    assert!(matters(
        &event(create, &[version.join("tls.crt")]),
        &relevant
    ));
    assert!(matters(&event(create, &[dir.to_path_buf()]), &relevant));
    // No path (an overflow): anything may have changed.
    assert!(matters(&event(EventKind::Any, &[]), &relevant));
}
