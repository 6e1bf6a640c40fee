//! Workload selectors of registration entries (node attestation): what the
//! kernel says about a caller of a node agent's Workload API socket.
//!
//! Accepted forms, parsed strictly (no spaces, no leading `+`, no case
//! folding except for the SHA-256 digest, which is lowercased):
//! `unix:uid:N`, `unix:gid:N` (decimal, 0..=4294967294), `unix:path:/ABS`
//! (the executable's absolute path, at most 4096 bytes, no NUL, no `..`
//! segment), `unix:sha256:HEX` (64 hex digits: the executable's SHA-256)
//! and `unix:cgroup:/PATH` (the cgroup v2 path from `/proc/PID/cgroup`).

use std::fmt;
use std::str::FromStr;

/// Most selectors one entry may carry.
pub const MAX_SELECTORS: usize = 16;

/// Longest path a `unix:path:` or `unix:cgroup:` selector may name.
pub const MAX_PATH: usize = 4096;

/// One selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// The caller's effective user id.
    Uid(u32),
    /// The caller's effective group id.
    Gid(u32),
    /// The caller's executable (`/proc/PID/exe`).
    Path(String),
    /// SHA-256 of the caller's executable, lowercase hex.
    Sha256(String),
    /// The caller's cgroup v2 path.
    Cgroup(String),
}

/// A selector that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {input:?}: {reason}")]
pub struct SelectorError {
    input: String,
    reason: &'static str,
}

fn id_number(s: &str) -> Result<u32, &'static str> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the id must be a decimal number");
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err("the id must not have leading zeros");
    }
    match s.parse::<u32>() {
        // (uid_t)-1 means "no id" to the kernel.
        Ok(u32::MAX) | Err(_) => Err("the id is out of range"),
        Ok(n) => Ok(n),
    }
}

fn abs_path(s: &str) -> Result<String, &'static str> {
    if !s.starts_with('/') {
        return Err("the path must be absolute");
    }
    if s.len() > MAX_PATH {
        return Err("the path is longer than 4096 bytes");
    }
    if s.bytes().any(|b| b == 0 || b == b'\n') {
        return Err("the path contains NUL or a newline");
    }
    if s.split('/').any(|seg| seg == "..") {
        return Err("the path must not contain a .. segment");
    }
    Ok(s.to_owned())
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<Self, SelectorError> {
        let fail = |reason| SelectorError {
            input: input.chars().take(80).collect(),
            reason,
        };
        let rest = input
            .strip_prefix("unix:")
            .ok_or_else(|| fail("only unix: selectors are supported"))?;
        let (kind, value) = rest
            .split_once(':')
            .ok_or_else(|| fail("expected unix:KIND:VALUE"))?;
        match kind {
            "uid" => id_number(value).map(Selector::Uid).map_err(fail),
            "gid" => id_number(value).map(Selector::Gid).map_err(fail),
            "path" => abs_path(value).map(Selector::Path).map_err(fail),
            "cgroup" => abs_path(value).map(Selector::Cgroup).map_err(fail),
            "sha256" => {
                if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(Selector::Sha256(value.to_ascii_lowercase()))
                } else {
                    Err(fail("the digest must be 64 hex digits"))
                }
            }
            _ => Err(fail("unknown kind (uid, gid, path, sha256, cgroup)")),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Uid(n) => write!(f, "unix:uid:{n}"),
            Selector::Gid(n) => write!(f, "unix:gid:{n}"),
            Selector::Path(p) => write!(f, "unix:path:{p}"),
            Selector::Sha256(h) => write!(f, "unix:sha256:{h}"),
            Selector::Cgroup(p) => write!(f, "unix:cgroup:{p}"),
        }
    }
}

/// Parses an entry's selectors: 1 to [`MAX_SELECTORS`], sorted and without
/// duplicates; at most one uid and one gid (an entry asking for two uids
/// could never match).
pub fn parse_selectors<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<Selector>, SelectorError> {
    let whole = |reason| SelectorError {
        input: String::new(),
        reason,
    };
    if inputs.is_empty() {
        return Err(whole("an entry needs at least one selector"));
    }
    if inputs.len() > MAX_SELECTORS {
        return Err(whole("an entry has at most 16 selectors"));
    }
    let mut out = inputs
        .iter()
        .map(|s| s.as_ref().parse())
        .collect::<Result<Vec<Selector>, _>>()?;
    out.sort();
    out.dedup();
    let count = |f: fn(&Selector) -> bool| out.iter().filter(|s| f(s)).count();
    if count(|s| matches!(s, Selector::Uid(_))) > 1
        || count(|s| matches!(s, Selector::Gid(_))) > 1
        || count(|s| matches!(s, Selector::Path(_))) > 1
        || count(|s| matches!(s, Selector::Sha256(_))) > 1
        || count(|s| matches!(s, Selector::Cgroup(_))) > 1
    {
        return Err(whole("an entry has at most one selector of each kind"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn selectors_parse_strictly() {
        assert_eq!("unix:uid:1000".parse(), Ok(Selector::Uid(1000)));
        assert_eq!("unix:gid:0".parse(), Ok(Selector::Gid(0)));
        let h = "AB".repeat(32);
        assert_eq!(
            format!("unix:sha256:{h}")
                .parse::<Selector>()
                .unwrap()
                .to_string(),
            format!("unix:sha256:{}", h.to_lowercase())
        );
        for bad in [
            "unix:uid:",
            "unix:uid:-1",
            "unix:uid:+1",
            "unix:uid: 1",
            "unix:uid:01",
            "unix:uid:4294967295",
            "unix:uid:99999999999",
            "unix:path:relative",
            "unix:path:/a/../b",
            "unix:sha256:abc",
            "unix:pid:1",
            "k8s:ns:default",
            "unix",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad}");
        }
        assert!(parse_selectors::<&str>(&[]).is_err());
        assert!(parse_selectors(&["unix:uid:1", "unix:uid:2"]).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("unix:path:/p{i}")).collect();
        assert!(parse_selectors(&many).is_err());
        let ok = parse_selectors(&["unix:gid:5", "unix:uid:1", "unix:uid:1"]).unwrap();
        assert_eq!(ok, vec![Selector::Uid(1), Selector::Gid(5)]);
    }
}
