//! Which request header fields a client may pass to the upstream, and the
//! forwarding headers the gate writes itself. Both HTTP paths (hyper's in
//! [`crate::proxy`], the HTTP/1.1 fast path in `server/h1`) ask here.
//!
//! The policy:
//!
//! - Identity fields (`x-forwarded-client-cert`, `x-ward-*`, `client-cert`,
//!   `client-cert-chain`) are the gate's: what a client sends is dropped
//!   and the connection's own values are set.
//! - Forwarding fields (`x-forwarded-for`, `x-forwarded-proto`,
//!   `x-forwarded-host`, `forwarded`, `x-real-ip`) describe the connection.
//!   By default the gate drops what the client sent and sets
//!   `x-forwarded-for` (the client's address) and `x-forwarded-proto`
//!   (`https`) from the connection. Only a client connecting from a network
//!   listed in `[listen] trusted_proxies` (`--trust-forwarded-from`) keeps
//!   its `x-forwarded-for` (the gate appends the address it sees),
//!   `forwarded`, `x-real-ip` and `x-forwarded-host`; `x-forwarded-proto`
//!   is always the gate's.
//! - A field named like one of the above or like a hop-by-hop field with
//!   `_` in place of `-` (`x_ward_spiffe_id`) is dropped: servers that map
//!   both spellings to one name (CGI, nginx, many frameworks) would take it
//!   for the real one.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Fields the gate sets from the connection's identity.
const IDENTITY: [&str; 3] = [
    "x-forwarded-client-cert",
    "client-cert",
    "client-cert-chain",
];
/// The prefix of the gate's own fields (`x-ward-spiffe-id`).
const WARD_PREFIX: &str = "x-ward-";
/// Fields that describe the connection; kept from trusted proxies only.
const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
];
/// Always the gate's.
const PROTO: &str = "x-forwarded-proto";
/// Hop-by-hop fields (RFC 9110 §7.6.1), never forwarded.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
];

/// Whether `name` equals `canonical` (lowercase, with `-`), ignoring case
/// and reading `_` as `-`.
fn same_field(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name
            .bytes()
            .zip(canonical.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// Whether `name` starts with `prefix` in the same sense as [`same_field`].
fn same_prefix(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|start| same_field(start, prefix))
}

/// Whether a client could use a field of this name (any case, `_` for
/// `-`) to spoof an identity.
pub(crate) fn is_identity_header(name: &str) -> bool {
    IDENTITY.iter().any(|c| same_field(name, c)) || same_prefix(name, WARD_PREFIX)
}

/// Whether a client-sent field of this name is dropped before the request
/// goes upstream (hop-by-hop fields named in `Connection` aside).
/// `trusted`: the client is a trusted proxy.
pub(crate) fn drop_from_client(name: &str, trusted: bool) -> bool {
    if is_identity_header(name) || same_field(name, PROTO) {
        return true;
    }
    let underscore = name.contains('_');
    if underscore && HOP_BY_HOP.iter().any(|h| same_field(name, h)) {
        return true;
    }
    if FORWARDING.iter().any(|f| same_field(name, f)) {
        // The underscore spelling never passes; the real one from trusted
        // proxies only.
        return underscore || !trusted;
    }
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses
    /// match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid network {s:?}: not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid network {s:?}: the prefix must be 0-{max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `ip` is in one of `networks`.
pub fn is_trusted(networks: &[Cidr], ip: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscore_spellings_are_the_same_field() {
        for name in [
            "x_ward_spiffe_id",
            "X_Forwarded_Client_Cert",
            "client_cert",
            "x-ward_anything",
        ] {
            assert!(is_identity_header(name), "{name}");
            assert!(drop_from_client(name, true), "{name}");
        }
        for name in [
            "transfer_encoding",
            "proxy_authorization",
            "x_forwarded_for",
            "x_real_ip",
        ] {
            assert!(drop_from_client(name, true), "{name}");
        }
        for name in [
            "x_custom",
            "content-type",
            "x-request-id",
            "accept_language",
        ] {
            assert!(!drop_from_client(name, false), "{name}");
        }
    }

    #[test]
    fn forwarding_fields_pass_from_trusted_proxies_only() {
        for name in [
            "Forwarded",
            "X-Real-IP",
            "x-forwarded-for",
            "X-Forwarded-Host",
        ] {
            assert!(drop_from_client(name, false), "{name}");
            assert!(!drop_from_client(name, true), "{name}");
        }
        assert!(drop_from_client("x-forwarded-proto", true));
    }

    #[test]
    fn networks_parse_and_match() {
        let n: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert_eq!(n.to_string(), "10.0.0.0/8");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }
}
