//! Remembers which client chains passed path validation, so a client that
//! comes back skips the two signature checks (leaf by intermediate,
//! intermediate by root) it already passed.
//!
//! What is remembered is only the outcome of path validation, keyed by
//! the exact DER of every presented certificate and the verifier's
//! trust-store generation (a digest of its chain rule and trust anchors):
//! one changed byte in any certificate, a different certificate order or
//! a different set of anchors is a different key. An entry holds the
//! window in which every presented certificate is valid (the latest
//! notBefore to the earliest notAfter); outside it the entry is ignored
//! and the chain is validated afresh, so an expired certificate is refused
//! exactly as without the cache. Refusals are never remembered.
//!
//! What is not remembered: the caller's [`crate::verifier::ClientCheck`]
//! (EKU rules, revocation by CRL or OCSP, identity patterns) and the
//! handshake signature run on every handshake, hit or miss. A CRL update
//! therefore needs no invalidation; a change of trust anchors gives a new
//! verifier with a new generation, whose lookups never see the old
//! entries ([`ChainCache::clear`] drops them).
//!
//! The cache is bounded by entries and by bytes; when full, the oldest
//! entry goes first.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Bookkeeping bytes charged per entry on top of its key (map slot, queue
/// slot, window).
const ENTRY_OVERHEAD: usize = 96;

/// How large a [`ChainCache`] may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most chains remembered; 0 disables the cache.
    pub entries: usize,
    /// Most bytes of keys (the chains' DER) and bookkeeping; 0 disables.
    pub bytes: usize,
}

impl Default for Limits {
    /// 10,000 chains within 32 MiB: a fleet's worth of clients, each chain
    /// (leaf and one intermediate) about 1–3 KB.
    fn default() -> Self {
        Limits {
            entries: 10_000,
            bytes: 32 * 1024 * 1024,
        }
    }
}

/// What a lookup found, as told to an observer (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The chain had passed before and is inside its validity window.
    Hit,
    /// The chain was validated in full.
    Miss,
}

/// Counters of a [`ChainCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that validated the chain in full.
    pub misses: u64,
    /// Chains remembered now.
    pub entries: usize,
    /// Bytes charged now.
    pub bytes: usize,
}

/// A verifier's trust-store generation: SHA-256 over its chain rule and
/// its trust anchors (subject, key, name constraints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation([u8; 32]);

impl Generation {
    /// The generation of `rule` (a name for how chains are judged) over
    /// `anchors`, in their order.
    pub(crate) fn of(rule: &str, anchors: &[TrustAnchor<'_>]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut field = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        field(rule.as_bytes());
        for a in anchors {
            field(a.subject.as_ref());
            field(a.subject_public_key_info.as_ref());
            match &a.name_constraints {
                Some(nc) => field(nc.as_ref()),
                None => field(b"\xff-none"),
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Generation(out)
    }
}

/// Seconds since the epoch in which every certificate of a chain is valid
/// (both ends included, as webpki judges them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    not_before: u64,
    not_after: u64,
}

impl Window {
    /// The window of `end_entity` and `intermediates`; `None` if one does
    /// not parse or the window is empty.
    fn of(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<Self> {
        let mut window = Window {
            not_before: 0,
            not_after: u64::MAX,
        };
        for der in std::iter::once(end_entity).chain(intermediates) {
            let (_, cert) = X509Certificate::from_der(der).ok()?;
            let validity = cert.validity();
            let nb = u64::try_from(validity.not_before.timestamp()).unwrap_or(0);
            let na = u64::try_from(validity.not_after.timestamp()).ok()?;
            window.not_before = window.not_before.max(nb);
            window.not_after = window.not_after.min(na);
        }
        (window.not_before <= window.not_after).then_some(window)
    }

    fn contains(&self, now: UnixTime) -> bool {
        let now = now.as_secs();
        self.not_before <= now && now <= self.not_after
    }
}

/// The lookup key of a chain under a generation: the generation, then
/// each certificate's length and DER.
pub(crate) struct Key(Vec<u8>);

impl Key {
    pub(crate) fn new(
        generation: &Generation,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Self {
        let len = 32
            + std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| 8 + c.len())
                .sum::<usize>();
        let mut key = Vec::with_capacity(len);
        key.extend_from_slice(&generation.0);
        for der in std::iter::once(end_entity).chain(intermediates) {
            key.extend_from_slice(&(der.len() as u64).to_be_bytes());
            key.extend_from_slice(der);
        }
        Key(key)
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<Arc<[u8]>, Window>,
    /// Keys oldest first, for eviction.
    order: VecDeque<Arc<[u8]>>,
    bytes: usize,
}

impl Inner {
    fn evict_oldest(&mut self) {
        if let Some(old) = self.order.pop_front() {
            self.map.remove(&old);
            self.bytes = self.bytes.saturating_sub(old.len() + ENTRY_OVERHEAD);
        }
    }
}

type Observer = Arc<dyn Fn(Lookup) + Send + Sync>;

struct Shared {
    limits: Limits,
    inner: RwLock<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    observer: Option<Observer>,
}

/// A bounded cache of validated client chains, shared by every verifier
/// given a clone of it (see the module documentation for what it keeps).
#[derive(Clone)]
pub struct ChainCache(Arc<Shared>);

impl fmt::Debug for ChainCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainCache")
            .field("limits", &self.0.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ChainCache {
    /// An empty cache bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::build(limits, None)
    }

    /// An empty cache that tells `observer` the outcome of every lookup.
    pub fn with_observer(
        limits: Limits,
        observer: impl Fn(Lookup) + Send + Sync + 'static,
    ) -> Self {
        Self::build(limits, Some(Arc::new(observer)))
    }

    fn build(limits: Limits, observer: Option<Observer>) -> Self {
        ChainCache(Arc::new(Shared {
            limits,
            inner: RwLock::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            observer,
        }))
    }

    /// Its bounds.
    pub fn limits(&self) -> Limits {
        self.0.limits
    }

    /// Whether the limits allow any entry at all.
    pub fn enabled(&self) -> bool {
        self.0.limits.entries > 0 && self.0.limits.bytes > 0
    }

    /// Forgets every chain.
    pub fn clear(&self) {
        let mut inner = self.0.inner.write().unwrap_or_else(|p| p.into_inner());
        *inner = Inner::default();
    }

    /// Counters and size now.
    pub fn stats(&self) -> Stats {
        let inner = self.0.inner.read().unwrap_or_else(|p| p.into_inner());
        Stats {
            hits: self.0.hits.load(Ordering::Relaxed),
            misses: self.0.misses.load(Ordering::Relaxed),
            entries: inner.map.len(),
            bytes: inner.bytes,
        }
    }

    fn record(&self, lookup: Lookup) {
        match lookup {
            Lookup::Hit => self.0.hits.fetch_add(1, Ordering::Relaxed),
            Lookup::Miss => self.0.misses.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(observer) = &self.0.observer {
            observer(lookup);
        }
    }

    /// Whether the chain under `key` passed validation before and `now`
    /// lies inside its window. Counts the lookup.
    pub(crate) fn hit(&self, key: &Key, now: UnixTime) -> bool {
        let hit = {
            let inner = self.0.inner.read().unwrap_or_else(|p| p.into_inner());
            inner
                .map
                .get(key.0.as_slice())
                .is_some_and(|w| w.contains(now))
        };
        self.record(if hit { Lookup::Hit } else { Lookup::Miss });
        hit
    }

    /// Remembers that the chain under `key` passed validation at `now`.
    /// Nothing is kept if the certificates' window does not hold `now`, or
    /// the entry alone exceeds the limits.
    pub(crate) fn insert(
        &self,
        key: Key,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) {
        let limits = self.0.limits;
        let cost = key.0.len() + ENTRY_OVERHEAD;
        if limits.entries == 0 || cost > limits.bytes {
            return;
        }
        let Some(window) = Window::of(end_entity, intermediates) else {
            return;
        };
        if !window.contains(now) {
            return;
        }
        let key: Arc<[u8]> = key.0.into();
        let mut inner = self.0.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = inner.map.get_mut(&key) {
            // Two handshakes of one client missed at once: same chain, same window.
            *existing = window;
            return;
        }
        while !inner.order.is_empty()
            && (inner.map.len() >= limits.entries || inner.bytes + cost > limits.bytes)
        {
            inner.evict_oldest();
        }
        inner.bytes += cost;
        inner.order.push_back(key.clone());
        inner.map.insert(key, window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    fn cert(name: &str) -> Vec<CertificateDer<'static>> {
        ward_testkit::read_certs(name)
    }

    /// 2030-01-01, inside every good fixture's validity.
    const NOW: u64 = 1_893_456_000;

    #[test]
    fn the_window_is_the_latest_not_before_to_the_earliest_not_after() {
        let chain = cert("client.crt");
        let w = Window::of(&chain[0], &chain[1..]).unwrap();
        // 2020-01-01 to 2120-01-01 (fixtures/README.md).
        assert_eq!(w.not_before, 1_577_836_800);
        assert_eq!(w.not_after, 4_733_510_400);
        assert!(w.contains(ts(w.not_before)) && w.contains(ts(w.not_after)));
        assert!(!w.contains(ts(w.not_after + 1)) && !w.contains(ts(w.not_before - 1)));
        assert!(Window::of(&CertificateDer::from(vec![0x30, 0x00]), &[]).is_none());
    }

    #[test]
    fn the_entry_limit_evicts_the_oldest_first() {
        let cache = ChainCache::new(Limits {
            entries: 2,
            bytes: 1 << 20,
        });
        let g = Generation([7; 32]);
        let names = ["client.crt", "peer.crt", "server.crt"];
        for n in names {
            let c = cert(n);
            cache.insert(Key::new(&g, &c[0], &c[1..]), &c[0], &c[1..], ts(NOW));
        }
        let stats = cache.stats();
        assert_eq!(stats.entries, 2);
        let hit = |n: &str| {
            let c = cert(n);
            cache.hit(&Key::new(&g, &c[0], &c[1..]), ts(NOW))
        };
        assert!(!hit("client.crt"), "the oldest went first");
        assert!(hit("peer.crt") && hit("server.crt"));
        assert_eq!(cache.stats().hits, 2);
        assert_eq!(cache.stats().misses, 1);
    }

    #[test]
    fn the_byte_limit_holds_and_an_oversized_chain_is_not_kept() {
        let c = cert("client.crt");
        let g = Generation([1; 32]);
        let one = Key::new(&g, &c[0], &c[1..]).0.len() + ENTRY_OVERHEAD;
        let cache = ChainCache::new(Limits {
            entries: 100,
            bytes: one + one / 2,
        });
        let p = cert("peer.crt");
        cache.insert(Key::new(&g, &c[0], &c[1..]), &c[0], &c[1..], ts(NOW));
        cache.insert(Key::new(&g, &p[0], &p[1..]), &p[0], &p[1..], ts(NOW));
        let stats = cache.stats();
        assert_eq!(stats.entries, 1, "{stats:?}");
        assert!(stats.bytes <= one + one / 2);

        let tiny = ChainCache::new(Limits {
            entries: 100,
            bytes: one - 1,
        });
        tiny.insert(Key::new(&g, &c[0], &c[1..]), &c[0], &c[1..], ts(NOW));
        assert_eq!(tiny.stats().entries, 0);
        assert!(
            !ChainCache::new(Limits {
                entries: 0,
                bytes: 1
            })
            .enabled()
        );
    }

    #[test]
    fn another_generation_or_order_or_window_misses() {
        let cache = ChainCache::new(Limits::default());
        let c = cert("client.crt");
        let (a, b) = (Generation([1; 32]), Generation([2; 32]));
        cache.insert(Key::new(&a, &c[0], &c[1..]), &c[0], &c[1..], ts(NOW));
        assert!(cache.hit(&Key::new(&a, &c[0], &c[1..]), ts(NOW)));
        assert!(!cache.hit(&Key::new(&b, &c[0], &c[1..]), ts(NOW)));
        assert!(!cache.hit(&Key::new(&a, &c[1], &c[..1]), ts(NOW)));
        assert!(!cache.hit(&Key::new(&a, &c[0], &[]), ts(NOW)));
        assert!(!cache.hit(&Key::new(&a, &c[0], &c[1..]), ts(4_733_510_401)));
        // Not kept when validated outside its own window (a clock the
        // verifier was given, not the certificates').
        let p = cert("peer.crt");
        cache.insert(
            Key::new(&a, &p[0], &p[1..]),
            &p[0],
            &p[1..],
            ts(5_000_000_000),
        );
        assert_eq!(cache.stats().entries, 1);
        cache.clear();
        assert!(!cache.hit(&Key::new(&a, &c[0], &c[1..]), ts(NOW)));
        assert_eq!(cache.stats().entries, 0);
    }
}
