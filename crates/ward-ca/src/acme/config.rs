//! `[acme]` in `ca.toml`: how challenges are validated and, per
//! provisioner (one ACME directory each), what it may issue.
//!
//! ```toml
//! [acme]
//! http01_port = 80
//! tlsalpn01_port = 443
//! dns_resolver = "127.0.0.1:8053"
//!
//! [acme.provisioners.web]
//! allow_dns = ["example.test", "*.example.test"]
//! allow_ip = ["127.0.0.0/8"]
//! eab_required = false
//! challenges = ["http-01", "dns-01", "tls-alpn-01"]
//! profiles = { default = "24h", shortlived = "6h" }
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ward_pki::parse_duration;

use crate::Error;

/// `[acme]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeSection {
    /// Port the http-01 validator connects to (RFC 8555 says 80).
    pub http01_port: u16,
    /// Port the tls-alpn-01 validator connects to (RFC 8737 says 443).
    pub tlsalpn01_port: u16,
    /// `IP:PORT` of the DNS server the validator asks (A, AAAA and TXT);
    /// unset: the system resolver for addresses and the first `nameserver`
    /// of /etc/resolv.conf for TXT.
    pub dns_resolver: Option<String>,
    /// One ACME directory per provisioner: `/acme/NAME/directory`.
    pub provisioners: BTreeMap<String, AcmeProvisioner>,
}

impl Default for AcmeSection {
    fn default() -> Self {
        AcmeSection {
            http01_port: 80,
            tlsalpn01_port: 443,
            dns_resolver: None,
            provisioners: BTreeMap::new(),
        }
    }
}

/// `[acme.provisioners.NAME]`: the policy of one ACME directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeProvisioner {
    /// DNS names it may issue for: exact names, or `*.zone` for any name
    /// below `zone` (one or more labels); a wildcard identifier needs a
    /// `*.` pattern that covers it. Empty: no DNS names.
    pub allow_dns: Vec<String>,
    /// IP networks (CIDR) it may issue for. Empty: no IP addresses.
    pub allow_ip: Vec<String>,
    /// Whether new accounts must carry an external account binding
    /// (`ward acme eab create`).
    pub eab_required: bool,
    /// Challenge types offered: `http-01`, `dns-01`, `tls-alpn-01`.
    pub challenges: Vec<String>,
    /// Certificate profiles: name → lifetime. The first in name order is
    /// used when an order names none, unless one is called `default`.
    pub profiles: BTreeMap<String, String>,
}

impl Default for AcmeProvisioner {
    fn default() -> Self {
        AcmeProvisioner {
            allow_dns: Vec::new(),
            allow_ip: Vec::new(),
            eab_required: false,
            challenges: vec!["http-01".into(), "dns-01".into(), "tls-alpn-01".into()],
            profiles: BTreeMap::from([("default".to_owned(), "24h".to_owned())]),
        }
    }
}

/// The challenge types Ward validates.
pub const CHALLENGE_TYPES: [&str; 3] = ["http-01", "dns-01", "tls-alpn-01"];

/// An IP network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` (a bare address is a host network).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, total: u32, prefix: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (total - u32::from(prefix))
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl AcmeSection {
    /// Checks every provisioner; `max_ttl` caps profile lifetimes.
    pub fn validate(&self, max_ttl: Duration) -> Result<(), Error> {
        if let Some(r) = &self.dns_resolver {
            r.parse::<SocketAddr>().map_err(|_| {
                Error::Config(format!("ca.toml: acme.dns_resolver {r:?} is not IP:PORT"))
            })?;
        }
        for (name, p) in &self.provisioners {
            let ctx = |m: String| Error::Config(format!("ca.toml: acme.provisioners.{name}: {m}"));
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ctx(
                    "a provisioner name uses letters, digits, '-' and '_'".into()
                ));
            }
            for d in &p.allow_dns {
                ward_pki::issue::check_dns_name(d).map_err(|e| ctx(format!("allow_dns: {e}")))?;
            }
            for c in &p.allow_ip {
                Cidr::parse(c).map_err(|e| ctx(format!("allow_ip: {e}")))?;
            }
            if p.challenges.is_empty() {
                return Err(ctx("challenges must name at least one type".into()));
            }
            for c in &p.challenges {
                if !CHALLENGE_TYPES.contains(&c.as_str()) {
                    return Err(ctx(format!(
                        "unknown challenge type {c:?} (http-01, dns-01, tls-alpn-01)"
                    )));
                }
            }
            if p.profiles.is_empty() {
                return Err(ctx("profiles must name at least one profile".into()));
            }
            for (profile, ttl) in &p.profiles {
                let ttl =
                    parse_duration(ttl).map_err(|e| ctx(format!("profiles.{profile}: {e}")))?;
                if ttl > max_ttl {
                    return Err(ctx(format!(
                        "profiles.{profile} ({}) exceeds issuance.max_ttl",
                        p.profiles[profile]
                    )));
                }
            }
        }
        Ok(())
    }
}

impl AcmeProvisioner {
    /// The profile used when an order names none.
    pub fn default_profile(&self) -> Option<&str> {
        if self.profiles.contains_key("default") {
            Some("default")
        } else {
            self.profiles.keys().next().map(String::as_str)
        }
    }

    /// Whether policy allows the DNS name (`*.x` for a wildcard identifier).
    pub fn allows_dns(&self, name: &str) -> bool {
        self.allow_dns.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            if pattern == name {
                return true;
            }
            match pattern.strip_prefix("*.") {
                // `*.zone` covers `a.zone`, `a.b.zone` and `*.zone`.
                Some(zone) => name
                    .strip_suffix(zone)
                    .and_then(|head| head.strip_suffix('.'))
                    .is_some_and(|head| !head.is_empty()),
                None => false,
            }
        })
    }

    /// Whether policy allows the IP address.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allow_ip
            .iter()
            .filter_map(|c| Cidr::parse(c).ok())
            .any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_patterns_cover_what_they_say() {
        let p = AcmeProvisioner {
            allow_dns: vec!["example.test".into(), "*.apps.test".into()],
            ..Default::default()
        };
        assert!(p.allows_dns("example.test"));
        assert!(!p.allows_dns("a.example.test"));
        assert!(p.allows_dns("a.apps.test"));
        assert!(p.allows_dns("a.b.apps.test"));
        assert!(p.allows_dns("*.apps.test"));
        assert!(!p.allows_dns("apps.test"));
        assert!(!p.allows_dns("evilapps.test"));
    }

    #[test]
    fn cidrs_contain_their_addresses() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(!c.contains("128.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let h = Cidr::parse("::1").unwrap();
        assert!(h.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("9.9.9.9".parse().unwrap())
        );
    }

    #[test]
    fn bad_provisioners_are_refused() {
        let mut s = AcmeSection::default();
        s.provisioners.insert(
            "web".into(),
            AcmeProvisioner {
                challenges: vec!["http-02".into()],
                ..Default::default()
            },
        );
        assert!(s.validate(Duration::from_secs(86_400)).is_err());
        s.provisioners.get_mut("web").unwrap().challenges = vec!["http-01".into()];
        assert!(s.validate(Duration::from_secs(86_400)).is_ok());
        s.provisioners.get_mut("web").unwrap().profiles =
            BTreeMap::from([("long".into(), "30d".into())]);
        assert!(s.validate(Duration::from_secs(86_400)).is_err());
    }
}
