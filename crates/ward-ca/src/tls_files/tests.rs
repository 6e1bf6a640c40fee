#![allow(clippy::unwrap_used)] // test helpers: a failure should panic loudly

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use ward_pki::KeyType;
use ward_pki::issue::{CaSpec, new_root};

use super::*;

/// A self-signed pair: (certificate PEM, key PEM, DER).
fn pair(name: &str) -> (String, String, Vec<u8>) {
    let key = KeyType::EcdsaP256.generate().unwrap();
    let spec = CaSpec {
        name: name.into(),
        root_validity: Duration::from_secs(3600),
        intermediate_validity: Duration::from_secs(3600),
        permitted_dns: Vec::new(),
    };
    let cert = new_root(&spec, &key, OffsetDateTime::now_utc()).unwrap();
    (
        pem::cert_to_pem(&cert.der),
        key.to_pkcs8_pem().unwrap().to_string(),
        cert.der.to_vec(),
    )
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn files(dir: &Path) -> TlsFiles {
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        allow_insecure_permissions: false,
    }
}

fn served(resolver: &Credentials) -> Vec<u8> {
    resolver.current().cert[0].to_vec()
}

#[test]
fn a_pair_loads_and_mismatches_and_open_keys_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let f = files(tmp.path());
    let (c1, k1, d1) = pair("one");
    let (_, k2, _) = pair("two");
    write(&f.cert, &c1, 0o644);
    write(&f.key, &k1, 0o600);
    assert_eq!(served(&f.load().unwrap()), d1);

    write(&f.key, &k2, 0o600);
    let e = f.load().unwrap_err().to_string();
    assert!(
        e.contains("tls.crt") && e.contains("tls.key") && e.contains("does not match"),
        "{e}"
    );

    write(&f.key, &k1, 0o644);
    let e = f.load().unwrap_err().to_string();
    assert!(e.contains("tls.key") && e.contains("mode 0644"), "{e}");
    let lenient = TlsFiles {
        allow_insecure_permissions: true,
        ..f.clone()
    };
    assert_eq!(served(&lenient.load().unwrap()), d1);

    write(&f.key, "not a key", 0o600);
    let e = f.load().unwrap_err().to_string();
    assert!(e.contains("tls.key"), "{e}");
}

/// Lays out a Kubernetes Secret volume: `..TS/` with the files, `..data`
/// pointing at it, and `tls.crt`/`tls.key` symlinks through `..data`.
fn publish(dir: &Path, stamp: &str, cert: &str, key: &str) {
    let data = dir.join(stamp);
    fs::create_dir(&data).unwrap();
    write(&data.join("tls.crt"), cert, 0o644);
    write(&data.join("tls.key"), key, 0o600);
    let tmp = dir.join("..data_tmp");
    symlink(stamp, &tmp).unwrap();
    fs::rename(&tmp, dir.join("..data")).unwrap();
}

async fn until_served(resolver: &Credentials, want: &[u8]) -> Duration {
    let start = Instant::now();
    while served(resolver) != want {
        assert!(start.elapsed() < Duration::from_secs(3), "not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_kubernetes_data_swap_and_a_rename_are_picked_up_and_a_half_update_waits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (c1, k1, d1) = pair("one");
    publish(dir, "..2026_01", &c1, &k1);
    symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
    symlink("..data/tls.key", dir.join("tls.key")).unwrap();
    let f = files(dir);
    let resolver = Arc::new(f.load().unwrap());
    assert_eq!(served(&resolver), d1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(follow(f, resolver.clone(), stop_rx));
    // Let the watch start before changing anything.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (c2, k2, d2) = pair("two");
    publish(dir, "..2026_02", &c2, &k2);
    let took = until_served(&resolver, &d2).await;
    assert!(
        took < Duration::from_secs(5),
        "a ..data swap took {took:?}: seen by the poll, not an event"
    );

    // Plain files replaced by rename, certificate first: the half-done
    // update (new certificate, old key) keeps the old pair.
    fs::remove_file(dir.join("tls.crt")).unwrap();
    fs::remove_file(dir.join("tls.key")).unwrap();
    write(&dir.join("tls.crt"), &c2, 0o644);
    write(&dir.join("tls.key"), &k2, 0o600);
    let (c3, k3, d3) = pair("three");
    write(&dir.join("next.crt"), &c3, 0o644);
    fs::rename(dir.join("next.crt"), dir.join("tls.crt")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(served(&resolver), d2, "a mismatched pair was served");
    write(&dir.join("next.key"), &k3, 0o600);
    fs::rename(dir.join("next.key"), dir.join("tls.key")).unwrap();
    let took = until_served(&resolver, &d3).await;
    assert!(took < Duration::from_secs(5), "a rename took {took:?}");

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}
