//! Rate limits on issuance, keyed by source address and by token; slots
//! for expensive server-side key generation, per token; and the limits on
//! a connection's life.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;

/// The live limiters.
#[derive(Clone)]
pub struct Limits {
    by_address: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    by_token: Arc<DefaultKeyedRateLimiter<String>>,
    keygen: Arc<KeygenSlots>,
}

/// Expensive key generations in progress, per token and in all.
#[derive(Debug, Default)]
struct KeygenSlots {
    per_token: usize,
    total_max: usize,
    /// Token ID → generations in progress (no entry at 0).
    held: Mutex<(HashMap<String, usize>, usize)>,
}

/// One expensive key generation in progress; released when dropped.
#[derive(Debug)]
pub struct KeygenSlot {
    slots: Arc<KeygenSlots>,
    token: String,
}

impl Drop for KeygenSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (by_token, total) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(n) = by_token.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_token.remove(&self.token);
            }
        }
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limits")
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Limits {
    /// Limiters with the given settings.
    pub fn new(config: &LimitsConfig) -> Self {
        Limits {
            by_address: Arc::new(RateLimiter::keyed(quota(
                config.per_address_per_second,
                config.per_address_burst,
            ))),
            by_token: Arc::new(RateLimiter::keyed(quota(
                config.per_token_per_second,
                config.per_token_burst,
            ))),
            keygen: Arc::new(KeygenSlots {
                per_token: config.key_generations_per_token.max(1) as usize,
                total_max: config.key_generations_total.max(1) as usize,
                held: Mutex::default(),
            }),
        }
    }

    /// A slot for one expensive key generation with token `id`; `None`
    /// when the token (or the CA as a whole) has all its slots in use.
    pub fn keygen_slot(&self, id: &str) -> Option<KeygenSlot> {
        let slots = &self.keygen;
        let mut held = slots.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (by_token, total) = &mut *held;
        let mine = by_token.get(id).copied().unwrap_or(0);
        if mine >= slots.per_token || *total >= slots.total_max {
            return None;
        }
        by_token.insert(id.to_owned(), mine + 1);
        *total += 1;
        Some(KeygenSlot {
            slots: slots.clone(),
            token: id.to_owned(),
        })
    }

    /// Whether one more request from `addr` is allowed now.
    pub fn allow_address(&self, addr: IpAddr) -> bool {
        self.by_address.check_key(&addr).is_ok()
    }

    /// Whether one more request with token `id` is allowed now.
    pub fn allow_token(&self, id: &str) -> bool {
        self.by_token.check_key(&id.to_owned()).is_ok()
    }

    /// Forgets keys that are back to a full bucket (call periodically).
    pub fn prune(&self) {
        self.by_address.retain_recent();
        self.by_token.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refuses() {
        let limits = Limits::new(&LimitsConfig {
            per_address_per_second: 1,
            per_address_burst: 3,
            per_token_per_second: 1,
            per_token_burst: 2,
            ..LimitsConfig::default()
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..3).all(|_| limits.allow_address(a)));
        assert!(!limits.allow_address(a));
        assert!(limits.allow_address("127.0.0.2".parse().unwrap()));
        assert!(limits.allow_token("t") && limits.allow_token("t"));
        assert!(!limits.allow_token("t"));
        limits.prune();
    }

    #[test]
    fn key_generation_slots_per_token_and_in_all() {
        let limits = Limits::new(&LimitsConfig {
            key_generations_per_token: 1,
            key_generations_total: 2,
            ..LimitsConfig::default()
        });
        let a = limits.keygen_slot("a").unwrap();
        assert!(limits.keygen_slot("a").is_none());
        let b = limits.keygen_slot("b").unwrap();
        assert!(limits.keygen_slot("c").is_none(), "the total is 2");
        drop(a);
        let a2 = limits.keygen_slot("a").unwrap();
        drop((a2, b));
        assert!(limits.keygen_slot("c").is_some());
    }

    #[test]
    fn connection_limits_parse_and_off_disables() {
        let mut config = LimitsConfig::default();
        assert_eq!(
            config.idle_timeout().unwrap(),
            Some(Duration::from_secs(300))
        );
        config.max_connection_age = "off".into();
        assert_eq!(config.max_age().unwrap(), None);
        config.connection_idle_timeout = "soon".into();
        assert!(config.idle_timeout().is_err());
    }
}
