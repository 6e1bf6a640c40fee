//! Authorization: compiled allow rules. Default deny.

use ward_pki::SpiffeIdPattern;

use crate::config::AllowRules;
use crate::identity::Identity;

/// Allow rules, parsed once.
#[derive(Clone, Debug, Default)]
pub struct Allow {
    spiffe: Vec<SpiffeIdPattern>,
    dns: Vec<String>,
    cn: Vec<String>,
}

impl Allow {
    /// Compiles the configured rules (validated earlier).
    pub fn compile(rules: &AllowRules) -> Result<Self, String> {
        Ok(Allow {
            spiffe: rules
                .spiffe_ids
                .iter()
                .map(|p| p.parse().map_err(|e: ward_pki::Error| e.to_string()))
                .collect::<Result<_, _>>()?,
            dns: rules.dns.iter().map(|d| d.to_ascii_lowercase()).collect(),
            cn: rules.cn.clone(),
        })
    }

    /// Whether any rule admits `id`. No rules admit nobody.
    pub fn allows(&self, id: &Identity) -> bool {
        if let Some(spiffe) = &id.spiffe_id
            && self.spiffe.iter().any(|p| p.matches(spiffe))
        {
            return true;
        }
        if id
            .dns
            .iter()
            .any(|name| self.dns.iter().any(|pat| dns_matches(pat, name)))
        {
            return true;
        }
        id.common_name
            .as_deref()
            .is_some_and(|cn| self.cn.iter().any(|c| c == cn))
    }
}

/// `*.example.org` matches one extra label; anything else matches exactly.
fn dns_matches(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(spiffe: Option<&str>, dns: &[&str], cn: Option<&str>) -> Identity {
        Identity {
            spiffe_id: spiffe.map(|s| s.parse().unwrap()),
            subject: String::new(),
            common_name: cn.map(str::to_owned),
            dns: dns.iter().map(|s| (*s).to_owned()).collect(),
            uris: Vec::new(),
            ips: Vec::new(),
            serial: String::new(),
            fingerprint: String::new(),
            chain: Vec::new().into(),
        }
    }

    #[test]
    fn rules_and_default_deny() {
        let allow = Allow::compile(&AllowRules {
            spiffe_ids: vec!["spiffe://td/ns/*".into(), "spiffe://td/exact".into()],
            dns: vec!["*.svc.example".into(), "db.example".into()],
            cn: vec!["legacy".into()],
        })
        .unwrap();
        assert!(allow.allows(&id(Some("spiffe://td/ns/a"), &[], None)));
        assert!(allow.allows(&id(Some("spiffe://td/exact"), &[], None)));
        assert!(!allow.allows(&id(Some("spiffe://td/ns"), &[], None)));
        assert!(!allow.allows(&id(Some("spiffe://td/other"), &[], None)));
        assert!(allow.allows(&id(None, &["a.svc.example"], None)));
        assert!(!allow.allows(&id(None, &["a.b.svc.example"], None)));
        assert!(allow.allows(&id(None, &["DB.example"], None)));
        assert!(allow.allows(&id(None, &[], Some("legacy"))));
        assert!(!allow.allows(&id(None, &[], Some("Legacy"))));
        assert!(!Allow::default().allows(&id(
            Some("spiffe://td/ns/a"),
            &["db.example"],
            Some("legacy")
        )));
    }
}
