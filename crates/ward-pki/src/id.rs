//! SPIFFE identities, parsed strictly per the SPIFFE ID specification.
//!
//! Once a value is a [`SpiffeId`] it is canonical: nothing past the edge of the
//! program handles identities as bare strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

const SCHEME: &str = "spiffe://";
/// The specification caps a trust domain at 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// URIs in X.509 SANs should stay below 2048 bytes; the spec uses that limit.
const MAX_ID_LEN: usize = 2048;

/// A SPIFFE trust domain such as `example.org`: lowercase letters, digits,
/// `.`, `-` and `_`, at most 255 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain's name, without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of this trust domain with the given path, which must
    /// start with `/` and follow the path rules.
    pub fn id(&self, path: &str) -> Result<SpiffeId, Error> {
        format!("{SCHEME}{}{path}", self.0).parse()
    }
}

impl FromStr for TrustDomain {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidTrustDomain {
            input: input.to_owned(),
            reason,
        };
        // Accept `spiffe://td` as a convenience, but nothing after the name.
        let name = input.strip_prefix(SCHEME).unwrap_or(input);
        check_trust_domain(name).map_err(invalid)?;
        Ok(TrustDomain(name.to_owned()))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_trust_domain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("trust domain is empty");
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err("trust domain is longer than 255 bytes");
    }
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {}
            b'A'..=b'Z' => return Err("trust domain must be lowercase"),
            b':' => return Err("trust domain must not contain a port"),
            b'@' => return Err("trust domain must not contain userinfo"),
            b'/' => return Err("trust domain must not contain a path"),
            _ => return Err("trust domain contains a character outside [a-z0-9._-]"),
        }
    }
    Ok(())
}

/// A SPIFFE ID: `spiffe://<trust-domain>/<path>`.
///
/// The path may be empty (the trust domain's own ID); otherwise each segment
/// is non-empty, is not `.` or `..`, and uses only `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    /// Byte offset in `uri` where the path starts (the end of the trust domain).
    path_start: usize,
}

impl SpiffeId {
    /// The whole ID as a URI string.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.uri[SCHEME.len()..self.path_start].to_owned())
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.uri[self.path_start..]
    }

    /// Whether this ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        &self.uri[SCHEME.len()..self.path_start] == td.as_str()
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidSpiffeId {
            input: input.to_owned(),
            reason,
        };
        if input.len() > MAX_ID_LEN {
            return Err(invalid("longer than 2048 bytes"));
        }
        let rest = match input.get(..SCHEME.len()) {
            Some(prefix) if prefix == SCHEME => &input[SCHEME.len()..],
            Some(prefix) if prefix.eq_ignore_ascii_case(SCHEME) => {
                return Err(invalid("scheme must be lowercase \"spiffe\""));
            }
            _ => return Err(invalid("must start with spiffe://")),
        };
        if rest.contains('?') {
            return Err(invalid("must not contain a query"));
        }
        if rest.contains('#') {
            return Err(invalid("must not contain a fragment"));
        }
        let td_end = rest.find('/').unwrap_or(rest.len());
        check_trust_domain(&rest[..td_end]).map_err(invalid)?;
        let path = &rest[td_end..];
        if !path.is_empty() {
            check_path(path).map_err(invalid)?;
        }
        Ok(SpiffeId {
            uri: input.to_owned(),
            path_start: SCHEME.len() + td_end,
        })
    }
}

fn check_path(path: &str) -> Result<(), &'static str> {
    // `path` starts with '/'; splitting yields an empty first element.
    for segment in path.split('/').skip(1) {
        match segment {
            "" => return Err("path has an empty segment (or a trailing slash)"),
            "." | ".." => return Err("path must not contain '.' or '..' segments"),
            _ => {}
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err("path contains a character outside [A-Za-z0-9._-]");
        }
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A pattern that matches SPIFFE IDs: an exact ID, or a prefix ending in
/// `/*` that matches every ID strictly below that path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpiffeIdPattern {
    /// Matches this ID only.
    Exact(SpiffeId),
    /// `spiffe://td/a/*`: matches `spiffe://td/a/b`, `spiffe://td/a/b/c`, not `spiffe://td/a`.
    Prefix(SpiffeId),
}

impl SpiffeIdPattern {
    /// Whether `id` matches this pattern.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            SpiffeIdPattern::Exact(want) => want == id,
            SpiffeIdPattern::Prefix(base) => id
                .as_str()
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/')),
        }
    }
}

impl FromStr for SpiffeIdPattern {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        match input.strip_suffix("/*") {
            Some(base) => Ok(SpiffeIdPattern::Prefix(base.parse()?)),
            None => Ok(SpiffeIdPattern::Exact(input.parse()?)),
        }
    }
}

impl fmt::Display for SpiffeIdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiffeIdPattern::Exact(id) => write!(f, "{id}"),
            SpiffeIdPattern::Prefix(base) => write!(f, "{base}/*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_round_trip() {
        for input in [
            "spiffe://example.org",
            "spiffe://example.org/ns/prod/sa/web",
            "spiffe://td_1-x.y/a.b-c_D/0",
            "spiffe://a/..a/.b",
        ] {
            let id: SpiffeId = input.parse().unwrap();
            assert_eq!(id.to_string(), input);
            assert_eq!(id.to_string().parse::<SpiffeId>().unwrap(), id);
        }
        let id: SpiffeId = "spiffe://example.org/ns/prod".parse().unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/ns/prod");
    }

    #[test]
    fn invalid_ids_are_rejected_with_reason() {
        let cases = [
            ("", "must start with spiffe://"),
            ("https://example.org/a", "must start with spiffe://"),
            ("SPIFFE://example.org/a", "scheme must be lowercase"),
            ("spiffe://", "trust domain is empty"),
            ("spiffe:///path", "trust domain is empty"),
            ("spiffe://Example.org/a", "lowercase"),
            ("spiffe://example.org:8080/a", "port"),
            ("spiffe://user@example.org/a", "userinfo"),
            ("spiffe://example.org/a?x=1", "query"),
            ("spiffe://example.org/a#frag", "fragment"),
            ("spiffe://example.org/", "empty segment"),
            ("spiffe://example.org/a//b", "empty segment"),
            ("spiffe://example.org/a/", "empty segment"),
            ("spiffe://example.org/./a", "'.' or '..'"),
            ("spiffe://example.org/a/..", "'.' or '..'"),
            ("spiffe://example.org/a b", "character outside"),
            ("spiffe://example.org/a%20b", "character outside"),
            ("spiffe://exa mple.org/a", "character outside"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert!(long.parse::<SpiffeId>().is_err());
    }

    #[test]
    fn trust_domains() {
        let td: TrustDomain = "prod.example.org".parse().unwrap();
        assert_eq!(td.to_string(), "prod.example.org");
        assert_eq!(
            "spiffe://prod.example.org".parse::<TrustDomain>().unwrap(),
            td
        );
        assert!("Prod.example.org".parse::<TrustDomain>().is_err());
        assert!("".parse::<TrustDomain>().is_err());
        assert!("example.org/a".parse::<TrustDomain>().is_err());
        assert!("x".repeat(256).parse::<TrustDomain>().is_err());
        assert_eq!(
            td.id("/ward/admin").unwrap().as_str(),
            "spiffe://prod.example.org/ward/admin"
        );
        let id: SpiffeId = "spiffe://prod.example.org/a".parse().unwrap();
        assert!(id.is_member_of(&td));
        assert!(!id.is_member_of(&"prod.example.or".parse().unwrap()));
    }

    #[test]
    fn patterns() {
        let p: SpiffeIdPattern = "spiffe://td/ns/*".parse().unwrap();
        let yes: SpiffeId = "spiffe://td/ns/a".parse().unwrap();
        let deep: SpiffeId = "spiffe://td/ns/a/b".parse().unwrap();
        let base: SpiffeId = "spiffe://td/ns".parse().unwrap();
        let sibling: SpiffeId = "spiffe://td/nsx/a".parse().unwrap();
        assert!(p.matches(&yes) && p.matches(&deep));
        assert!(!p.matches(&base) && !p.matches(&sibling));
        assert_eq!(p.to_string(), "spiffe://td/ns/*");
        let e: SpiffeIdPattern = "spiffe://td/ns".parse().unwrap();
        assert!(e.matches(&base) && !e.matches(&yes));
        assert!("spiffe://td/ns/**".parse::<SpiffeIdPattern>().is_err());
    }
}
