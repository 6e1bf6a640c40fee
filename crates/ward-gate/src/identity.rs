//! Who is on the other end: the verified client certificate, reduced to
//! what authorization and the upstream need, computed once per connection.

use std::fmt::Write as _;

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;
use ward_pki::inspect::CertInfo;
use ward_pki::{Fingerprint, SpiffeId};

/// The client's identity.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    /// The SPIFFE ID, when the leaf is a valid X509-SVID.
    pub spiffe_id: Option<String>,
    /// Subject DN.
    pub subject: String,
    /// Subject CN, if any.
    #[serde(skip)]
    pub common_name: Option<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// IP address SANs.
    pub ips: Vec<String>,
    /// Serial, lowercase hex.
    pub serial: String,
    /// SHA-256 of the leaf DER, lowercase hex.
    pub fingerprint: String,
    /// The chain as presented, leaf first (for RFC 9440 headers).
    #[serde(skip)]
    pub chain: Vec<CertificateDer<'static>>,
}

impl Identity {
    /// Reads the identity from a verified chain.
    pub fn from_chain(chain: &[CertificateDer<'static>]) -> Option<Self> {
        let leaf = chain.first()?;
        let info = CertInfo::from_der(leaf, OffsetDateTime::now_utc()).ok()?;
        let common_name = info
            .subject
            .split(", ")
            .find_map(|part| part.strip_prefix("CN="))
            .map(str::to_owned);
        Some(Identity {
            spiffe_id: info.spiffe_id.filter(|id| id.parse::<SpiffeId>().is_ok()),
            subject: info.subject,
            common_name,
            dns: info.sans.dns,
            uris: info.sans.uri,
            ips: info.sans.ip,
            serial: info.serial,
            fingerprint: Fingerprint::of_der(leaf).to_string(),
            chain: chain.to_vec(),
        })
    }

    /// `x-forwarded-client-cert` in Envoy's format:
    /// `By=<gate URI>;Hash=<sha256>;Subject="<dn>";URI=<spiffe>;DNS=<name>…`.
    pub fn xfcc(&self, by: Option<&str>) -> String {
        let mut out = String::new();
        if let Some(by) = by {
            let _ = write!(out, "By={by};");
        }
        let _ = write!(out, "Hash={}", self.fingerprint);
        let subject = self.subject.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = write!(out, ";Subject=\"{subject}\"");
        for uri in &self.uris {
            let _ = write!(out, ";URI={uri}");
        }
        for dns in &self.dns {
            let _ = write!(out, ";DNS={dns}");
        }
        out
    }

    /// Every SAN for audit lines: URIs, then DNS names, then IP addresses.
    pub fn sans(&self) -> Vec<&str> {
        self.uris
            .iter()
            .chain(&self.dns)
            .chain(&self.ips)
            .map(String::as_str)
            .collect()
    }

    /// RFC 9440 `Client-Cert` (the leaf) value: `:base64(DER):`.
    pub fn rfc9440_cert(&self) -> Option<String> {
        self.chain.first().map(|c| sf_binary(c))
    }

    /// RFC 9440 `Client-Cert-Chain` value: the intermediates, comma-separated.
    pub fn rfc9440_chain(&self) -> Option<String> {
        (self.chain.len() > 1).then(|| {
            self.chain[1..]
                .iter()
                .map(|c| sf_binary(c))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

fn sf_binary(der: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}
