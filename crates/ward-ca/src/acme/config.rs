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
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ward_pki::cidr::Cidr;
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
                Cidr::from_str(c).map_err(|e| ctx(format!("allow_ip: {e}")))?;
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
            .filter_map(|c| Cidr::from_str(c).ok())
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
