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

use std::net::IpAddr;

pub use ward_pki::cidr::Cidr;

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
    fn trust_follows_the_listed_networks() {
        let nets: Vec<Cidr> = ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(is_trusted(&nets, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&nets, "2001:db8::1".parse().unwrap()));
        assert!(!is_trusted(&nets, "11.0.0.1".parse().unwrap()));
        assert!(!is_trusted(&[], "10.1.2.3".parse().unwrap()));
    }
}
