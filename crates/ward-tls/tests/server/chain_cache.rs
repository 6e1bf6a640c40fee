//! The client verifier with a chain cache: a chain that passed is not
//! validated again, yet any changed byte, an expired certificate, a
//! removed CA or a revocation is refused exactly as without the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, UnixTime};
use ward_testkit::read_certs;
use ward_tls::chain_cache::{ChainCache, Limits, Stats};
use ward_tls::verifier::{ClientCheck, ClientVerifier};

use crate::common::roots;

/// 2030-01-01: inside the good fixtures' validity (2020 to 2120).
const NOW: u64 = 1_893_456_000;
/// 2120-01-01, the good fixtures' notAfter.
const NOT_AFTER: u64 = 4_733_510_400;
/// 2020-01-01, the good fixtures' notBefore.
const NOT_BEFORE: u64 = 1_577_836_800;

fn at(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

/// Counts its runs and refuses as revoked once told to.
#[derive(Debug, Default)]
struct Revocable {
    runs: AtomicUsize,
    revoked: AtomicBool,
}

impl ClientCheck for Revocable {
    fn check(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.revoked.load(Ordering::SeqCst) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(())
    }
}

fn cached(cache: &ChainCache) -> (ClientVerifier, Arc<Revocable>) {
    let check = Arc::new(Revocable::default());
    let verifier = ClientVerifier::required(roots())
        .unwrap()
        .with_check(check.clone())
        .with_cache(cache.clone());
    (verifier, check)
}

fn verify(v: &ClientVerifier, chain: &[CertificateDer<'_>], now: u64) -> Result<(), rustls::Error> {
    v.verify_client_cert(&chain[0], &chain[1..], at(now))
        .map(|_| ())
}

fn counts(cache: &ChainCache) -> (u64, u64) {
    let Stats { hits, misses, .. } = cache.stats();
    (hits, misses)
}

#[test]
fn a_chain_seen_before_is_a_hit_and_the_check_still_runs_every_time() {
    let cache = ChainCache::new(Limits::default());
    let (verifier, check) = cached(&cache);
    let chain = read_certs("client.crt");
    for _ in 0..3 {
        verify(&verifier, &chain, NOW).unwrap();
    }
    assert_eq!(counts(&cache), (2, 1));
    assert_eq!(check.runs.load(Ordering::SeqCst), 3);
    let stats = cache.stats();
    assert_eq!(stats.entries, 1);
    assert!(stats.bytes > chain.iter().map(|c| c.len()).sum::<usize>());
}

#[test]
fn a_changed_byte_in_any_certificate_misses_and_is_refused() {
    let cache = ChainCache::new(Limits::default());
    let (verifier, _) = cached(&cache);
    let chain = read_certs("client.crt");
    verify(&verifier, &chain, NOW).unwrap();
    for which in 0..chain.len() {
        let len = chain[which].len();
        // In the signed part (well inside TBSCertificate) and in the
        // signature's last byte.
        for position in [len / 3, len / 2, len - 1] {
            let mut tampered = chain.clone();
            let mut der = tampered[which].to_vec();
            der[position] ^= 0x01;
            tampered[which] = CertificateDer::from(der);
            let before = counts(&cache);
            let err = verify(&verifier, &tampered, NOW).unwrap_err();
            assert!(
                matches!(err, rustls::Error::InvalidCertificate(_)),
                "cert {which} byte {position}: {err:?}"
            );
            assert_eq!(
                counts(&cache),
                (before.0, before.1 + 1),
                "cert {which} byte {position} must miss"
            );
        }
    }
    // Only the untouched chain was kept, and it still hits.
    assert_eq!(cache.stats().entries, 1);
    verify(&verifier, &chain, NOW).unwrap();
    assert_eq!(counts(&cache).0, 1);
}

#[test]
fn an_entry_whose_certificate_expired_or_is_not_yet_valid_is_refused() {
    let cache = ChainCache::new(Limits::default());
    let (verifier, _) = cached(&cache);
    let chain = read_certs("client.crt");
    verify(&verifier, &chain, NOW).unwrap();
    verify(&verifier, &chain, NOT_AFTER).unwrap();
    assert_eq!(counts(&cache), (1, 1), "the last second of validity hits");
    let err = verify(&verifier, &chain, NOT_AFTER + 1).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );
    let err = verify(&verifier, &chain, NOT_BEFORE - 1).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            )
        ),
        "{err:?}"
    );
    assert_eq!(counts(&cache), (1, 3));
}

#[test]
fn a_removed_ca_is_refused_though_the_cache_is_shared() {
    let cache = ChainCache::new(Limits::default());
    let store = |names: &[&str]| {
        let mut roots = RootCertStore::empty();
        for n in names {
            for c in read_certs(n) {
                roots.add(c).unwrap();
            }
        }
        Arc::new(roots)
    };
    let both = ClientVerifier::required(store(&["other-root.crt", "root.crt"]))
        .unwrap()
        .with_cache(cache.clone());
    let chain = read_certs("client.crt");
    verify(&both, &chain, NOW).unwrap();
    verify(&both, &chain, NOW).unwrap();
    assert_eq!(counts(&cache), (1, 1));

    // The same cache, a trust store without example.org's root.
    let without = ClientVerifier::required(store(&["other-root.crt"]))
        .unwrap()
        .with_cache(cache.clone());
    // other-root.crt has the root's subject but another key: webpki tries
    // it and finds the intermediate's signature bad.
    let err = verify(&without, &chain, NOW).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        ),
        "{err:?}"
    );
    assert_eq!(counts(&cache), (1, 2));
    // Nor does the any-EKU rule over the same anchors share its entries.
    let other_rule = ClientVerifier::any_tls_eku(&read_certs("other-root.crt"))
        .unwrap()
        .with_cache(cache.clone());
    assert!(verify(&other_rule, &chain, NOW).is_err());
    assert_eq!(counts(&cache), (1, 3));
}

#[test]
fn a_revoked_certificate_is_refused_at_once_on_a_hit() {
    let cache = ChainCache::new(Limits::default());
    let (verifier, check) = cached(&cache);
    let chain = read_certs("client.crt");
    verify(&verifier, &chain, NOW).unwrap();
    check.revoked.store(true, Ordering::SeqCst);
    let err = verify(&verifier, &chain, NOW).unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
    assert_eq!(counts(&cache), (1, 1), "refused on a cache hit");
}

#[test]
fn a_disabled_cache_keeps_nothing() {
    let cache = ChainCache::new(Limits {
        entries: 0,
        bytes: 1 << 20,
    });
    let (verifier, _) = cached(&cache);
    let chain = read_certs("client.crt");
    verify(&verifier, &chain, NOW).unwrap();
    verify(&verifier, &chain, NOW).unwrap();
    assert_eq!(cache.stats(), Stats::default());
}

#[test]
fn the_any_eku_rule_caches_too_and_still_refuses_a_foreign_chain() {
    let cache = ChainCache::new(Limits::default());
    let verifier = ClientVerifier::any_tls_eku(&read_certs("root.crt"))
        .unwrap()
        .with_cache(cache.clone());
    let chain = read_certs("server.crt");
    verify(&verifier, &chain, NOW).unwrap();
    verify(&verifier, &chain, NOW).unwrap();
    assert_eq!(counts(&cache), (1, 1));
    assert!(verify(&verifier, &read_certs("imposter.crt"), NOW).is_err());
    assert_eq!(counts(&cache), (1, 2));
}
