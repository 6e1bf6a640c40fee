//! Nonces: accepted once, on any replica; nothing else is.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use ward_store::Store;

use super::*;

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    ward_store::connect(dir.path().join("ward.db").to_str().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_nonce_is_accepted_once_and_by_a_second_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (store(&dir).await, store(&dir).await);
    let (on_a, on_b) = (Nonces::default(), Nonces::default());
    let now = OffsetDateTime::now_utc();
    let n = on_a
        .issue(a.acme(), now + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(n.len(), 50);
    // Issued on A, used on B (same key from the store), then refused on both.
    assert!(on_b.take(b.acme(), &n, now).await.unwrap());
    assert!(!on_a.take(a.acme(), &n, now).await.unwrap());
    assert!(!on_b.take(b.acme(), &n, now).await.unwrap());
    // Two nonces differ.
    let m = on_a
        .issue(a.acme(), now + Duration::hours(1))
        .await
        .unwrap();
    assert_ne!(n, m);
    assert!(on_a.take(a.acme(), &m, now).await.unwrap());
}

#[tokio::test]
async fn made_up_altered_and_expired_nonces_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let nonces = Nonces::default();
    let now = OffsetDateTime::now_utc();
    let good = nonces
        .issue(s.acme(), now + Duration::hours(1))
        .await
        .unwrap();
    let mut refused = vec![
        String::new(),
        "made-up".into(),
        good[..good.len() - 1].to_owned(),
        format!("{good}A"),
        "A".repeat(10_000),
        // Right length, wrong tag.
        b64e(&[1u8; BODY + TAG]),
    ];
    // Every single-character change (the last character also covers a
    // non-canonical spelling of the same bytes).
    for i in 0..good.len() {
        let mut bytes = good.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        refused.push(String::from_utf8(bytes).unwrap());
    }
    for n in &refused {
        assert!(!nonces.take(s.acme(), n, now).await.unwrap(), "{n:?}");
    }
    // Expired: issued with an expiry already past, or used after it.
    let old = nonces
        .issue(s.acme(), now - Duration::seconds(1))
        .await
        .unwrap();
    assert!(!nonces.take(s.acme(), &old, now).await.unwrap());
    let soon = nonces
        .issue(s.acme(), now + Duration::seconds(5))
        .await
        .unwrap();
    assert!(
        !nonces
            .take(s.acme(), &soon, now + Duration::seconds(6))
            .await
            .unwrap()
    );
    // The good one still works once.
    assert!(nonces.take(s.acme(), &good, now).await.unwrap());
}

#[tokio::test]
async fn a_nonce_of_another_database_is_refused() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (store(&d1).await, store(&d2).await);
    let (n1, n2) = (Nonces::default(), Nonces::default());
    let now = OffsetDateTime::now_utc();
    let n = n1.issue(s1.acme(), now + Duration::hours(1)).await.unwrap();
    assert!(!n2.take(s2.acme(), &n, now).await.unwrap());
}
