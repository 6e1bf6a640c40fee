//! The lint policy: parameters of the built-in rules, read from TOML.
//!
//! Every field has a default, so an empty file (or no file) means Ward's
//! defaults; unknown fields are errors, so a typo never silently weakens a
//! check. Values are parsed here (durations, EKU names, SAN patterns, OIDs),
//! and rule ids named in `disable` and `severity` must exist.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{Severity, rules};
use crate::{Error, parse_duration};

/// id-kp-serverAuth.
pub(crate) const EKU_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
/// id-kp-clientAuth.
pub(crate) const EKU_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
/// anyExtendedKeyUsage.
pub(crate) const EKU_ANY: &str = "2.5.29.37.0";

const EKU_NAMES: [(&str, &str); 7] = [
    ("serverAuth", EKU_SERVER_AUTH),
    ("clientAuth", EKU_CLIENT_AUTH),
    ("codeSigning", "1.3.6.1.5.5.7.3.3"),
    ("emailProtection", "1.3.6.1.5.5.7.3.4"),
    ("timeStamping", "1.3.6.1.5.5.7.3.8"),
    ("OCSPSigning", "1.3.6.1.5.5.7.3.9"),
    ("any", EKU_ANY),
];

/// Parameters of the built-in rules, and the optional Rego policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LintPolicy {
    /// Longest lifetime of a leaf without a SPIFFE ID (`wlife.max_server`);
    /// default 398 days, the CA/Browser Forum limit.
    #[serde(deserialize_with = "human_duration")]
    pub max_server_lifetime: Duration,
    /// Longest lifetime of a leaf with a SPIFFE ID (`wlife.max_workload`);
    /// default 24 hours, the CA's default online maximum.
    #[serde(deserialize_with = "human_duration")]
    pub max_workload_lifetime: Duration,
    /// Slack added to both maxima, because CAs backdate notBefore for clock
    /// skew (Ward by 30 seconds); default 5 minutes.
    #[serde(deserialize_with = "human_duration")]
    pub backdate_allowance: Duration,
    /// Warn when fewer days than this remain (`wlife.expiring_soon`); 0
    /// turns the warning off. Default 14.
    pub expiry_warning_days: u32,
    /// EKUs the leaf must carry: `serverAuth`, `clientAuth`, `codeSigning`,
    /// `emailProtection`, `timeStamping`, `OCSPSigning`, or a dotted OID.
    pub required_eku: Vec<Eku>,
    /// When not empty, every SAN of the leaf must match one of these.
    pub san_allow: Vec<SanPattern>,
    /// No SAN of the leaf may match any of these.
    pub san_deny: Vec<SanPattern>,
    /// certificatePolicies OIDs the leaf must carry (dotted).
    pub required_policy_oids: Vec<Oid>,
    /// A Rego file (relative to the policy file) with `package ward.lint`;
    /// see docs/lint-rules.md.
    pub rego: Option<PathBuf>,
    /// Rule ids to skip entirely.
    pub disable: Vec<String>,
    /// Severity overrides by rule id (`"wlife.expiring_soon" = "error"`).
    pub severity: BTreeMap<String, Severity>,
}

impl Default for LintPolicy {
    fn default() -> Self {
        LintPolicy {
            max_server_lifetime: Duration::from_secs(398 * 86_400),
            max_workload_lifetime: Duration::from_secs(86_400),
            backdate_allowance: Duration::from_secs(300),
            expiry_warning_days: 14,
            required_eku: Vec::new(),
            san_allow: Vec::new(),
            san_deny: Vec::new(),
            required_policy_oids: Vec::new(),
            rego: None,
            disable: Vec::new(),
            severity: BTreeMap::new(),
        }
    }
}

impl LintPolicy {
    /// Parses and validates a TOML policy.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let policy: LintPolicy =
            toml::from_str(text).map_err(|e| Error::Policy(format!("lint policy: {e}")))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks that every rule id named in `disable` and `severity` exists
    /// (`rego.*` ids are dynamic and always accepted).
    pub fn validate(&self) -> Result<(), Error> {
        for id in self.disable.iter().chain(self.severity.keys()) {
            if !id.starts_with("rego.") && rules::find(id).is_none() {
                return Err(Error::Policy(format!(
                    "lint policy: unknown rule id {id:?} (see docs/lint-rules.md)"
                )));
            }
        }
        Ok(())
    }
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A dotted object identifier, checked for shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Oid(String);

impl Oid {
    /// The dotted form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Oid {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let arcs: Vec<&str> = s.split('.').collect();
        let ok = arcs.len() >= 2
            && arcs
                .iter()
                .all(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()));
        if ok {
            Ok(Oid(s.to_owned()))
        } else {
            Err(Error::Policy(format!("{s:?} is not a dotted OID")))
        }
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Oid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An extended key usage, by name or OID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Eku {
    name: String,
    oid: Oid,
}

impl Eku {
    /// The dotted OID.
    pub fn oid(&self) -> &str {
        self.oid.as_str()
    }

    /// The name it was given by (`serverAuth`, or the OID).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// id-kp-serverAuth.
    pub fn server_auth() -> Self {
        Eku {
            name: "serverAuth".into(),
            oid: Oid(EKU_SERVER_AUTH.into()),
        }
    }
}

impl FromStr for Eku {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some((name, oid)) = EKU_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Ok(Eku {
                name: (*name).to_owned(),
                oid: Oid((*oid).to_owned()),
            });
        }
        let oid: Oid = s.parse().map_err(|_| {
            Error::Policy(format!(
                "unknown EKU {s:?} (expected serverAuth, clientAuth, codeSigning, emailProtection, timeStamping, OCSPSigning or a dotted OID)"
            ))
        })?;
        Ok(Eku {
            name: s.to_owned(),
            oid,
        })
    }
}

impl<'de> Deserialize<'de> for Eku {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A SAN pattern: `*` matches any run of characters except `.` and `/`,
/// `**` any run at all; everything else matches itself, ASCII
/// case-insensitively. `*.example.org` matches `a.example.org` but not
/// `a.b.example.org`; `**.example.org` matches both;
/// `spiffe://example.org/ns/**` matches every ID under `ns/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SanPattern(String);

impl SanPattern {
    /// Whether `san` matches.
    pub fn matches(&self, san: &str) -> bool {
        glob(self.0.as_bytes(), san.to_ascii_lowercase().as_bytes())
    }
}

impl fmt::Display for SanPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SanPattern {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() || !s.is_ascii() || s.contains("***") {
            return Err(Error::Policy(format!(
                "invalid SAN pattern {s:?}: ASCII, not empty, `*` or `**` as wildcards"
            )));
        }
        Ok(SanPattern(s.to_ascii_lowercase()))
    }
}

impl<'de> Deserialize<'de> for SanPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Backtracking glob over bytes; patterns and names are short.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        [b'*', rest @ ..] => {
            let run = text
                .iter()
                .position(|b| *b == b'.' || *b == b'/')
                .unwrap_or(text.len());
            (0..=run).any(|i| glob(rest, &text[i..]))
        }
        [p, rest @ ..] => text.first() == Some(p) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_an_empty_file_agree() {
        assert_eq!(LintPolicy::from_toml("").unwrap(), LintPolicy::default());
    }

    #[test]
    fn a_full_policy_parses() {
        let p = LintPolicy::from_toml(
            r#"
            max_server_lifetime = "90d"
            max_workload_lifetime = "1h"
            backdate_allowance = "1m"
            expiry_warning_days = 7
            required_eku = ["serverAuth", "1.2.3.4"]
            san_allow = ["*.example.org", "spiffe://example.org/**"]
            san_deny = ["admin.example.org"]
            required_policy_oids = ["2.23.140.1.2.1"]
            rego = "extra.rego"
            disable = ["w5280.ski_leaf", "rego.deny_x"]
            [severity]
            "wlife.expiring_soon" = "error"
            "#,
        )
        .unwrap();
        assert_eq!(p.max_server_lifetime, Duration::from_secs(90 * 86_400));
        assert_eq!(p.required_eku[0].oid(), EKU_SERVER_AUTH);
        assert_eq!(p.required_eku[1].oid(), "1.2.3.4");
        assert_eq!(p.severity["wlife.expiring_soon"], Severity::Error);
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        for bad in [
            "max_server_lifetme = \"1d\"",
            "max_server_lifetime = \"soon\"",
            "required_eku = [\"serverauthx\"]",
            "required_policy_oids = [\"1.2.x\"]",
            "san_deny = [\"\"]",
            "disable = [\"w5280.nonsense\"]",
            "[severity]\n\"wkey.rsa_size\" = \"fatal\"",
        ] {
            assert!(LintPolicy::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn san_patterns() {
        let one: SanPattern = "*.Example.org".parse().unwrap();
        assert!(one.matches("a.example.org") && one.matches("A.EXAMPLE.ORG"));
        assert!(!one.matches("a.b.example.org") && !one.matches("example.org"));
        let deep: SanPattern = "**.example.org".parse().unwrap();
        assert!(deep.matches("a.b.example.org") && !deep.matches("example.org.evil"));
        let ids: SanPattern = "spiffe://example.org/ns/**".parse().unwrap();
        assert!(ids.matches("spiffe://example.org/ns/a/b"));
        assert!(!ids.matches("spiffe://example.org/nsx/a"));
        let exact: SanPattern = "127.0.0.1".parse().unwrap();
        assert!(exact.matches("127.0.0.1") && !exact.matches("127.0.0.10"));
    }
}
