//! The `balance` settings of a route or TCP tenant (TOML), with their
//! defaults and checks; what they do is in the parent module and
//! `docs/load-balancing.md`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{LONGEST_WAIT, MAX_ENDPOINTS};
use crate::config::Dur;

/// A duration for the balancing settings: `250ms` as well as what
/// [`Dur`] takes (`5s`, `1m`).
fn fine<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
    let s = String::deserialize(d)?;
    let t = s.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms
            .trim()
            .parse::<u64>()
            .map(|n| Dur(Duration::from_millis(n)))
            .map_err(|_| serde::de::Error::custom(format!("invalid duration {s:?}")));
    }
    ward_pki::parse_duration(t)
        .map(Dur)
        .map_err(serde::de::Error::custom)
}

/// How the endpoint of a request (or TCP connection) is chosen.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight (ties in turn).
    LeastRequest,
    /// A consistent hash of the caller's SPIFFE ID (its certificate
    /// fingerprint when it has none): the same caller reaches the same
    /// endpoint while that endpoint is in rotation.
    HashSpiffeId,
}

/// `balance`: load balancing for a route's `upstreams` or a tenant's
/// `tcp_upstreams`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    /// `round_robin` (default), `least_request` or `hash_spiffe_id`.
    pub policy: Policy,
    /// Further endpoints an idempotent request (or any request whose
    /// connection could not be made) is tried on; 0 turns retries off.
    pub retries: u32,
    /// Largest request body buffered so that the request can be retried;
    /// larger bodies stream and are not retried.
    pub retry_body_limit: usize,
    /// Most requests (TCP: connections) in flight to one endpoint.
    pub max_connections: usize,
    /// Most requests waiting for a slot at one endpoint; beyond that the
    /// gate answers 503.
    pub max_pending: usize,
    /// How long a request waits for a slot before it gets 503.
    #[serde(deserialize_with = "fine")]
    pub pending_timeout: Dur,
    /// Active health checks; none by default.
    pub health: Option<HealthConfig>,
    /// Passive ejection of failing endpoints.
    pub ejection: EjectionConfig,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            policy: Policy::RoundRobin,
            retries: 2,
            retry_body_limit: 64 * 1024,
            max_connections: 1024,
            max_pending: 1024,
            pending_timeout: Dur(Duration::from_secs(5)),
            health: None,
            ejection: EjectionConfig::default(),
        }
    }
}

/// `balance.health`: an active check of every endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// `GET` this path and expect a 2xx answer; a TCP connect check when
    /// absent (always for TCP tenants).
    pub path: Option<String>,
    /// Time between checks of one endpoint.
    #[serde(deserialize_with = "fine")]
    pub interval: Dur,
    /// Time allowed for one check.
    #[serde(deserialize_with = "fine")]
    pub timeout: Dur,
    /// Consecutive passed checks that put a down endpoint back.
    pub healthy_threshold: u32,
    /// Consecutive failed checks that take an endpoint out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: None,
            interval: Dur(Duration::from_secs(5)),
            timeout: Dur(Duration::from_secs(1)),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// `balance.ejection`: endpoints that keep failing are taken out for a
/// while.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EjectionConfig {
    /// Consecutive failures (connection failed, exchange broken, 5xx) that
    /// eject an endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// How long an ejected endpoint stays out.
    #[serde(deserialize_with = "fine")]
    pub ejection_time: Dur,
    /// Most endpoints out at once by ejection, in percent of the route's
    /// endpoints (at least one can always be ejected when there are two).
    pub max_ejection_percent: u8,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: 5,
            ejection_time: Dur(Duration::from_secs(30)),
            max_ejection_percent: 50,
        }
    }
}

impl BalanceConfig {
    /// Checks the numbers; `tcp`: for a TCP tenant (no HTTP health path).
    pub fn validate(&self, tcp: bool) -> Result<(), String> {
        if self.retries > 10 {
            return Err("retries must be at most 10".into());
        }
        if self.retry_body_limit > 1024 * 1024 {
            return Err("retry_body_limit must be at most 1048576 bytes".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.pending_timeout.0 > LONGEST_WAIT {
            return Err("pending_timeout must be at most 30s".into());
        }
        if self.ejection.max_ejection_percent > 100 {
            return Err("ejection.max_ejection_percent must be at most 100".into());
        }
        if let Some(h) = &self.health {
            if let Some(path) = &h.path {
                if tcp {
                    return Err(
                        "health.path is for HTTP routes; TCP tenants are checked by connecting"
                            .into(),
                    );
                }
                if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
                    return Err(format!(
                        "health.path {path:?} must start with '/' and hold no spaces or control characters"
                    ));
                }
            }
            if h.interval.0 < Duration::from_millis(100) {
                return Err("health.interval must be at least 100ms".into());
            }
            if h.timeout.0.is_zero() {
                return Err("health.timeout must be positive".into());
            }
            if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
                return Err("health thresholds must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// Checks a list of endpoints: not too many, none twice.
pub(crate) fn check_endpoint_list(list: &[String]) -> Result<(), String> {
    if list.len() > MAX_ENDPOINTS {
        return Err(format!("at most {MAX_ENDPOINTS} upstreams per route"));
    }
    let mut seen = std::collections::HashSet::new();
    for e in list {
        if !seen.insert(e.trim_end_matches('/')) {
            return Err(format!("upstream {e:?} is listed twice"));
        }
    }
    Ok(())
}
