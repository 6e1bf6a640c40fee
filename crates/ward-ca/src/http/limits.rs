//! Rate limits on issuance, keyed by source address and by token.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// Rate limit settings (`[limits]` in ca.toml).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Issuance requests per second from one source address.
    pub per_address_per_second: u32,
    /// Burst allowance per source address.
    pub per_address_burst: u32,
    /// Issuance requests per second presenting one token.
    pub per_token_per_second: u32,
    /// Burst allowance per token.
    pub per_token_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_address_per_second: 200,
            per_address_burst: 1000,
            per_token_per_second: 200,
            per_token_burst: 1000,
        }
    }
}

/// The live limiters.
#[derive(Clone)]
pub struct Limits {
    by_address: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    by_token: Arc<DefaultKeyedRateLimiter<String>>,
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
        }
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
    use super::*;

    #[test]
    fn bursts_then_refuses() {
        let limits = Limits::new(&LimitsConfig {
            per_address_per_second: 1,
            per_address_burst: 3,
            per_token_per_second: 1,
            per_token_burst: 2,
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..3).all(|_| limits.allow_address(a)));
        assert!(!limits.allow_address(a));
        assert!(limits.allow_address("127.0.0.2".parse().unwrap()));
        assert!(limits.allow_token("t") && limits.allow_token("t"));
        assert!(!limits.allow_token("t"));
        limits.prune();
    }
}
