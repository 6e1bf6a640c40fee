//! Who is on the other end: the verified client certificate, reduced to
//! what authorization and the upstream need, computed once per connection.
//!
//! This runs on every handshake, so it parses the leaf once, formats only
//! what is used, and keeps one shared copy of the chain.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use ward_pki::SpiffeId;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The client's identity.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    /// The SPIFFE ID, when the leaf is a valid X509-SVID (exactly one URI
    /// SAN, and it parses); parsed once per connection.
    pub spiffe_id: Option<SpiffeId>,
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
    /// The chain as presented, leaf first (revocation tracking, RFC 9440
    /// headers): one shared copy per connection.
    #[serde(skip)]
    pub chain: Arc<[CertificateDer<'static>]>,
}

impl Identity {
    /// Reads the identity from a verified chain (leaf first).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = chain.first()?;
        let (_, cert) = X509Certificate::from_der(leaf).ok()?;
        let mut dns = Vec::new();
        let mut uris = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::IPAddress(bytes) => ips.push(ip_to_string(bytes)),
                    _ => {}
                }
            }
        }
        let spiffe_id = match uris.as_slice() {
            [one] => one.parse::<SpiffeId>().ok(),
            _ => None,
        };
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let raw_serial = cert.raw_serial();
        let magnitude = &raw_serial[raw_serial
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(raw_serial.len())..];
        let serial = if magnitude.is_empty() || magnitude.len() > 20 {
            format!("{:x}", cert.serial)
        } else {
            hex(magnitude)
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf);
        Some(Identity {
            spiffe_id,
            subject: cert.subject().to_string(),
            common_name,
            dns,
            uris,
            ips,
            serial,
            fingerprint: hex(digest.as_ref()),
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
        })
    }

    /// No verified certificate (an audit-mode tenant let the client in
    /// without one): no identity field goes upstream, no allow rule
    /// matches.
    pub fn anonymous() -> Self {
        Identity {
            spiffe_id: None,
            subject: String::new(),
            common_name: None,
            dns: Vec::new(),
            uris: Vec::new(),
            ips: Vec::new(),
            serial: String::new(),
            fingerprint: String::new(),
            chain: Arc::from(Vec::new()),
        }
    }

    /// Whether this identity comes from a verified certificate.
    pub fn is_verified(&self) -> bool {
        !self.chain.is_empty()
    }

    /// The SPIFFE ID as a string.
    pub fn spiffe_str(&self) -> Option<&str> {
        self.spiffe_id.as_ref().map(SpiffeId::as_str)
    }

    /// `x-forwarded-client-cert` in Envoy's format:
    /// `By=<gate URI>;Hash=<sha256>;Subject="<dn>";URI=<spiffe>;DNS=<name>…`.
    pub fn xfcc(&self, by: Option<&str>) -> String {
        let mut out = String::with_capacity(128);
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

/// Lowercase hex, without going through the formatting machinery per byte.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn ip_to_string(bytes: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        IpAddr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        IpAddr::from(v6).to_string()
    } else {
        format!("invalid ({} bytes)", bytes.len())
    }
}

fn sf_binary(der: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;
    use ward_pki::inspect::CertInfo;

    /// The cheap path must say exactly what the full inspection says.
    #[test]
    fn identity_matches_the_full_inspection() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["svc.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc \"quoted\"");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/ns/a".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("::1".parse().unwrap()));
        params.serial_number = Some(vec![0x00, 0x8f, 0x01, 0xab].into());
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().clone();
        let id = Identity::from_chain(std::slice::from_ref(&der)).unwrap();
        let info = CertInfo::from_der(&der, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(id.subject, info.subject);
        assert_eq!(id.serial, info.serial);
        assert_eq!(id.serial, "8f01ab");
        assert_eq!(id.fingerprint, info.sha256_fingerprint);
        assert_eq!(id.spiffe_str(), info.spiffe_id.as_deref());
        assert_eq!(id.dns, info.sans.dns);
        assert_eq!(id.uris, info.sans.uri);
        assert_eq!(id.ips, info.sans.ip);
        assert_eq!(id.common_name.as_deref(), Some("svc \"quoted\""));
        assert_eq!(id.chain.len(), 1);
        assert!(
            id.xfcc(None)
                .contains("Subject=\"CN=svc \\\"quoted\\\", O=Example\"")
        );
    }

    #[test]
    fn two_uri_sans_are_no_spiffe_id() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for uri in ["spiffe://example.org/a", "spiffe://example.org/b"] {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        }
        let der = params.self_signed(&key).unwrap().der().clone();
        let id = Identity::from_chain(&[der]).unwrap();
        assert_eq!(id.spiffe_id, None);
        assert_eq!(id.uris.len(), 2);
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }
}
