//! What one certificate's ACME client is told: the `[tenants.acme]` table
//! of the gate, and the `--acme-*` flags of `gate serve`, `ca serve` and
//! `agent run`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The challenge type the client answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ChallengeKind {
    /// RFC 8737: a certificate served for ALPN `acme-tls/1` on port 443.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3: `/.well-known/acme-challenge/TOKEN` on port 80.
    #[serde(rename = "http-01")]
    Http01,
    /// RFC 8555 §8.4: a TXT record at `_acme-challenge.NAME`, set by a hook.
    #[serde(rename = "dns-01")]
    Dns01,
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tls-alpn-01" => Ok(ChallengeKind::TlsAlpn01),
            "http-01" => Ok(ChallengeKind::Http01),
            "dns-01" => Ok(ChallengeKind::Dns01),
            other => Err(format!(
                "unknown challenge {other:?} (tls-alpn-01, http-01 or dns-01)"
            )),
        }
    }
}

/// One certificate's ACME settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcmeSettings {
    /// The directory URL (`https://…/directory`).
    pub directory: String,
    /// The DNS names of the certificate; the first is its subject.
    pub domains: Vec<String>,
    /// Account contact (`mailto:…`).
    #[serde(default)]
    pub contact: Option<String>,
    /// Which challenge to answer.
    #[serde(default)]
    pub challenge: ChallengeKind,
    /// PEM roots the ACME server's HTTPS certificate chains to (a private
    /// ACME server); the system's roots when absent.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// External account binding key id (with `eab_hmac_file`).
    #[serde(default)]
    pub eab_kid: Option<String>,
    /// File holding the EAB HMAC key, base64url (with `eab_kid`).
    #[serde(default)]
    pub eab_hmac_file: Option<PathBuf>,
    /// Certificate profile to ask for (draft-aaron-acme-profiles).
    #[serde(default)]
    pub profile: Option<String>,
    /// Where the account key and the current certificate live.
    pub state_dir: PathBuf,
    /// dns-01: the hook run as `HOOK present|cleanup FQDN VALUE`.
    #[serde(default)]
    pub dns_hook: Option<PathBuf>,
    /// http-01: the plain listener answering challenges (`127.0.0.1:80`);
    /// it redirects every other request to HTTPS.
    #[serde(default)]
    pub http01_listen: Option<String>,
}

/// Longest DNS name accepted (RFC 1035).
const MAX_NAME: usize = 253;

impl AcmeSettings {
    /// Checks the settings without touching the network or the disk.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if !self.directory.starts_with("https://") {
            return bad(format!(
                "directory {:?} must be an https:// URL",
                self.directory
            ));
        }
        if self.domains.is_empty() {
            return bad("at least one domain is required".into());
        }
        for d in &self.domains {
            if let Err(e) = check_name(d) {
                return bad(format!("domain {d:?}: {e}"));
            }
            if d.starts_with("*.") && self.challenge != ChallengeKind::Dns01 {
                return bad(format!(
                    "domain {d:?}: a wildcard needs the dns-01 challenge"
                ));
            }
        }
        if self.eab_kid.is_some() != self.eab_hmac_file.is_some() {
            return bad("eab_kid and eab_hmac_file go together".into());
        }
        match self.challenge {
            ChallengeKind::Dns01 if self.dns_hook.is_none() => {
                return bad("challenge dns-01 needs dns_hook".into());
            }
            ChallengeKind::Http01 if self.http01_listen.is_none() => {
                return bad("challenge http-01 needs http01_listen".into());
            }
            _ => {}
        }
        if let Some(p) = &self.profile
            && (p.is_empty() || p.len() > 64)
        {
            return bad(format!("profile {p:?} must be 1 to 64 characters"));
        }
        Ok(())
    }
}

/// A DNS name (optionally a leading `*.`) in the ASCII form ACME wants.
fn check_name(name: &str) -> Result<(), &'static str> {
    let name = name.strip_prefix("*.").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME {
        return Err("must be 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("every label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only lowercase letters, digits and '-' (use the A-label of an IDN)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AcmeSettings {
        AcmeSettings {
            directory: "https://acme.test/dir".into(),
            domains: vec!["api.example.test".into()],
            contact: None,
            challenge: ChallengeKind::TlsAlpn01,
            ca_bundle: None,
            eab_kid: None,
            eab_hmac_file: None,
            profile: None,
            state_dir: "state".into(),
            dns_hook: None,
            http01_listen: None,
        }
    }

    #[test]
    fn rejects_what_no_server_would_accept() {
        assert!(settings().validate().is_ok());
        type Change = fn(&mut AcmeSettings);
        let cases: Vec<(Change, &str)> = vec![
            (|s| s.directory = "http://acme.test/dir".into(), "https://"),
            (|s| s.domains.clear(), "at least one"),
            (|s| s.domains = vec!["Api.example".into()], "lowercase"),
            (|s| s.domains = vec!["a..b".into()], "label"),
            (|s| s.domains = vec!["*.x.test".into()], "wildcard"),
            (|s| s.eab_kid = Some("k".into()), "go together"),
            (|s| s.challenge = ChallengeKind::Dns01, "dns_hook"),
            (|s| s.challenge = ChallengeKind::Http01, "http01_listen"),
        ];
        for (change, want) in cases {
            let mut s = settings();
            change(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn challenge_names_round_trip() {
        for k in [
            ChallengeKind::TlsAlpn01,
            ChallengeKind::Http01,
            ChallengeKind::Dns01,
        ] {
            let name = serde_json::to_string(&k).unwrap();
            let back: ChallengeKind = name.trim_matches('"').parse().unwrap();
            assert_eq!(back, k);
        }
        assert!("tls-sni-01".parse::<ChallengeKind>().is_err());
    }
}
