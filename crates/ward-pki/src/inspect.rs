//! A readable, serialisable summary of a certificate.
//!
//! Used by `ward cert inspect` and by every other command that reports on a
//! certificate. It describes public data only.

use std::net::IpAddr;

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::issue::{humanize, rfc3339};
use crate::{Error, Fingerprint, PublicKeyKind, Serial, SpiffeId};

/// Names of signature algorithms; built once (it is a map of every known
/// OID, and the CA's hot path inspects each certificate it signs).
static OID_NAMES: std::sync::LazyLock<x509_parser::oid_registry::OidRegistry<'static>> =
    std::sync::LazyLock::new(|| {
        x509_parser::oid_registry::OidRegistry::default()
            .with_crypto()
            .with_x509()
    });

/// What a certificate says, in plain terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Subject distinguished name (RFC 4514 order as x509-parser prints it).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Seconds until notAfter (negative once expired).
    pub seconds_left: i64,
    /// `valid`, `expired` or `not_yet_valid` at the time of inspection.
    pub status: &'static str,
    /// The SPIFFE ID, when the certificate carries exactly one valid one.
    pub spiffe_id: Option<String>,
    /// Subject alternative names by kind.
    pub sans: Sans,
    /// Public key algorithm and size.
    pub key: PublicKeyKind,
    /// Signature algorithm name.
    pub signature_algorithm: String,
    /// Key usage bits that are set.
    pub key_usage: Vec<String>,
    /// Extended key usages.
    pub extended_key_usage: Vec<String>,
    /// Whether the certificate is a CA.
    pub is_ca: bool,
    /// Path length constraint, for CAs.
    pub path_len: Option<u32>,
    /// Whether subject and issuer are the same name.
    pub self_issued: bool,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256_fingerprint: String,
}

/// Subject alternative names, grouped by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sans {
    /// dNSName entries.
    pub dns: Vec<String>,
    /// iPAddress entries.
    pub ip: Vec<String>,
    /// uniformResourceIdentifier entries (SPIFFE IDs among them).
    pub uri: Vec<String>,
    /// rfc822Name entries.
    pub email: Vec<String>,
}

impl CertInfo {
    /// Summarises a DER certificate as seen at `now`.
    pub fn from_der(der: &[u8], now: OffsetDateTime) -> Result<Self, Error> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| Error::InvalidCertificate(e.to_string()))?;
        Ok(Self::from_parsed(&cert, der, now))
    }

    /// Summarises `cert`, already parsed from `der`, as seen at `now` (for
    /// callers that need the parsed form too: one parse instead of two).
    pub(crate) fn from_parsed(cert: &X509Certificate<'_>, der: &[u8], now: OffsetDateTime) -> Self {
        let validity = cert.validity();
        let not_before = validity.not_before.to_datetime();
        let not_after = validity.not_after.to_datetime();
        let status = if now < not_before {
            "not_yet_valid"
        } else if now > not_after {
            "expired"
        } else {
            "valid"
        };
        let sans = sans_of(cert);
        let spiffe_id = match sans.uri.as_slice() {
            [one] => one.parse::<SpiffeId>().ok().map(|id| id.to_string()),
            _ => None,
        };
        let mut key_usage = Vec::new();
        let mut extended_key_usage = Vec::new();
        let mut is_ca = false;
        let mut path_len = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::KeyUsage(ku) => {
                    key_usage = ku.to_string().split(", ").map(str::to_owned).collect();
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let mut add = |cond: bool, name: &str| {
                        if cond {
                            extended_key_usage.push(name.to_owned());
                        }
                    };
                    add(eku.any, "any");
                    add(eku.server_auth, "serverAuth");
                    add(eku.client_auth, "clientAuth");
                    add(eku.code_signing, "codeSigning");
                    add(eku.email_protection, "emailProtection");
                    add(eku.time_stamping, "timeStamping");
                    add(eku.ocsp_signing, "OCSPSigning");
                    extended_key_usage.extend(eku.other.iter().map(|o| o.to_id_string()));
                }
                ParsedExtension::BasicConstraints(bc) => {
                    is_ca = bc.ca;
                    path_len = bc.path_len_constraint;
                }
                _ => {}
            }
        }
        let sig_oid = &cert.signature_algorithm.algorithm;
        let signature_algorithm = match crate::key::ml_dsa_oid(&sig_oid.to_id_string()) {
            Some(set) => set.key_type().as_str().to_ascii_uppercase(),
            None => OID_NAMES
                .get(sig_oid)
                .map_or_else(|| sig_oid.to_id_string(), |e| e.sn().to_owned()),
        };
        CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: Serial::from_be_bytes(cert.raw_serial())
                .map_or_else(|_| format!("{:x}", cert.serial), |s| s.to_string()),
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            seconds_left: (not_after - now).whole_seconds(),
            status,
            spiffe_id,
            sans,
            key: PublicKeyKind::from_spki(cert.public_key()),
            signature_algorithm,
            key_usage,
            extended_key_usage,
            is_ca,
            path_len,
            self_issued: cert.subject() == cert.issuer(),
            sha256_fingerprint: Fingerprint::of_der(der).to_string(),
        }
    }

    /// A multi-line, human-readable rendering.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &str| {
            if !v.is_empty() {
                out.push_str(&format!("  {k:<20}{v}\n"));
            }
        };
        line("Subject:", or_dash(&self.subject));
        line("Issuer:", &self.issuer);
        line("Serial:", &self.serial);
        line("Not before:", &self.not_before);
        let left = if self.seconds_left >= 0 {
            format!(
                "{} ({} left)",
                self.not_after,
                humanize(std::time::Duration::from_secs(
                    self.seconds_left.unsigned_abs()
                ))
            )
        } else {
            format!(
                "{} (EXPIRED {} ago)",
                self.not_after,
                humanize(std::time::Duration::from_secs(
                    self.seconds_left.unsigned_abs()
                ))
            )
        };
        line("Not after:", &left);
        if self.status == "not_yet_valid" {
            line("Status:", "NOT YET VALID");
        }
        line("SPIFFE ID:", self.spiffe_id.as_deref().unwrap_or(""));
        line("DNS names:", &self.sans.dns.join(", "));
        line("IP addresses:", &self.sans.ip.join(", "));
        let other_uris: Vec<&str> = self
            .sans
            .uri
            .iter()
            .map(String::as_str)
            .filter(|u| Some(*u) != self.spiffe_id.as_deref())
            .collect();
        line("URIs:", &other_uris.join(", "));
        line("Emails:", &self.sans.email.join(", "));
        line("Key:", &self.key.to_string());
        line("Signature:", &self.signature_algorithm);
        line("Key usage:", &self.key_usage.join(", "));
        line("Extended key usage:", &self.extended_key_usage.join(", "));
        let bc = match (self.is_ca, self.path_len) {
            (true, Some(n)) => format!("CA:true, pathLen {n}"),
            (true, None) => "CA:true".to_owned(),
            (false, _) => "CA:false".to_owned(),
        };
        line("Basic constraints:", &bc);
        line("SHA-256:", &self.sha256_fingerprint);
        out
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "(empty)" } else { s }
}

fn sans_of(cert: &X509Certificate<'_>) -> Sans {
    let mut sans = Sans::default();
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return sans;
    };
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => sans.dns.push((*d).to_owned()),
            GeneralName::URI(u) => sans.uri.push((*u).to_owned()),
            GeneralName::RFC822Name(e) => sans.email.push((*e).to_owned()),
            GeneralName::IPAddress(bytes) => sans.ip.push(ip_to_string(bytes)),
            _ => {}
        }
    }
    sans
}

fn ip_to_string(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default()).to_string(),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default()).to_string(),
        _ => format!("invalid ({} bytes)", bytes.len()),
    }
}

/// The URI SANs of a DER certificate (for identity checks).
pub fn uri_sans(der: &[u8]) -> Result<Vec<String>, Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    Ok(sans_of(&cert).uri)
}

/// The DNS SANs of a DER certificate, as written in it.
pub fn dns_sans(der: &[u8]) -> Result<Vec<String>, Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    Ok(sans_of(&cert).dns)
}

/// The SPIFFE ID of an X509-SVID: exactly one URI SAN, and it must parse.
pub fn spiffe_id_of(der: &[u8]) -> Result<Option<SpiffeId>, Error> {
    match uri_sans(der)?.as_slice() {
        [] => Ok(None),
        [one] => one.parse().map(Some),
        _ => Err(Error::InvalidCertificate(
            "an X509-SVID carries exactly one URI SAN; this certificate has several".into(),
        )),
    }
}
