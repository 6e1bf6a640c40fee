//! Tokens recently found by the hash of their secret, so that a workload
//! fleet sharing one token (`--uses 0`) does not cost a database read per
//! request.
//!
//! Safe because what a cached token decides is either immutable (binding,
//! profile, lifetime, expiry, allowed networks) or re-checked where it
//! counts: its uses and revocation are judged again by the store, under the
//! token's lock, when the certificate is committed, and a refusal there
//! evicts the entry. A stale entry can therefore make the CA sign a
//! certificate that is then refused and never returned, never the reverse.
//! Entries live [`TTL`]; only tokens that exist are cached, at most
//! [`CAPACITY`] of them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ward_store::Token;

/// How long an entry is trusted for the early checks.
pub(crate) const TTL: Duration = Duration::from_secs(1);

/// Most entries kept; when full, the cache starts over.
pub(crate) const CAPACITY: usize = 10_000;

/// The cache: secret hash → (when read, token).
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], (Instant, Token)>>,
}

impl TokenCache {
    /// The token with this secret hash, if read less than [`TTL`] before `now`.
    pub(crate) fn get(&self, hash: &[u8; 32], now: Instant) -> Option<Token> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(hash)
            .filter(|(read, _)| now.saturating_duration_since(*read) < TTL)
            .map(|(_, token)| token.clone())
    }

    /// Remembers a token just read from the store at `now`.
    pub(crate) fn put(&self, token: &Token, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY && !entries.contains_key(&token.hash) {
            entries.retain(|_, (read, _)| now.saturating_duration_since(*read) < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(token.hash, (now, token.clone()));
    }

    /// Forgets a token (its state changed: refused at commit, or revoked).
    pub(crate) fn evict(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, (_, token)| token.id != id);
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn token(id: &str, hash: u8) -> Token {
        Token {
            created: ward_store::NewToken {
                id: id.into(),
                hash: [hash; 32],
                spiffe_id: "spiffe://t/a".parse().unwrap(),
                dns_names: vec![],
                profile: ward_pki::issue::Profile::Peer,
                cert_ttl_secs: 60,
                expires_at: OffsetDateTime::UNIX_EPOCH,
                max_uses: 0,
                allowed_cidrs: vec![],
                created_at: OffsetDateTime::UNIX_EPOCH,
                common_name: None,
            },
            uses: 0,
            revoked_at: None,
            revoked_with_certs: false,
        }
    }

    #[test]
    fn entries_expire_and_can_be_evicted() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        cache.put(&token("a", 1), t0);
        cache.put(&token("b", 2), t0);
        assert_eq!(
            cache.get(&[1; 32], t0).map(|t| t.id.clone()),
            Some("a".into())
        );
        assert!(cache.get(&[1; 32], t0 + TTL).is_none(), "expired");
        assert!(cache.get(&[3; 32], t0).is_none());
        cache.evict("b");
        assert!(cache.get(&[2; 32], t0).is_none());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        for i in 0..CAPACITY + 10 {
            let mut t = token(&format!("t{i}"), 0);
            t.hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
            cache.put(&t, t0);
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= CAPACITY, "{len}");
    }
}
