//! What the lint rules look at: one certificate, parsed once into plain data.
//!
//! The same structure is the Rego input (`input.certificate`), so its JSON
//! shape is a contract: `docs/lint-input.schema.json` describes it and a test
//! validates real output against that schema. Add fields; never rename them.

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::inspect::CertInfo;
use crate::issue::rfc3339;
use crate::{PublicKeyKind, SpiffeId, hex};

/// id-ad-ocsp (1.3.6.1.5.5.7.48.1).
const OID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

/// Key usage bit names in RFC 5280 order (bit 0 first).
const KEY_USAGE_NAMES: [&str; 9] = [
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];

/// One extension as present in the certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExtensionFact {
    /// Dotted OID.
    pub oid: String,
    /// The critical flag.
    pub critical: bool,
    /// Whether x509-parser (and so Ward) understands this extension.
    pub known: bool,
    /// Whether the extension's value failed to parse.
    pub malformed: bool,
}

/// A certificate's content, as the lint rules and Rego policies see it.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    /// X.509 version number (1, 2 or 3).
    pub version: u32,
    /// Serial number as lowercase hex of its DER INTEGER content.
    pub serial: String,
    /// Length of the DER INTEGER content of the serial, in octets.
    pub serial_octets: usize,
    /// Whether the serial is negative.
    pub serial_negative: bool,
    /// Whether the serial is zero.
    pub serial_zero: bool,
    /// Subject DN.
    pub subject: String,
    /// Whether the subject DN is empty.
    pub subject_empty: bool,
    /// Issuer DN.
    pub issuer: String,
    /// Whether subject and issuer are the same name.
    pub self_issued: bool,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Start of validity, Unix seconds.
    pub not_before_unix: i64,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
    /// notAfter minus notBefore, in seconds.
    pub lifetime_seconds: i64,
    /// Signature algorithm name (or dotted OID when unknown).
    pub signature_algorithm: String,
    /// Signature algorithm, dotted OID.
    pub signature_algorithm_oid: String,
    /// Whether the outer signatureAlgorithm equals tbsCertificate.signature.
    pub signature_algorithms_match: bool,
    /// The subject public key.
    pub key: PublicKeyKind,
    /// Whether basicConstraints is present.
    pub basic_constraints_present: bool,
    /// Whether basicConstraints is critical.
    pub basic_constraints_critical: bool,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint.
    pub path_len: Option<u32>,
    /// Whether keyUsage is present.
    pub key_usage_present: bool,
    /// Whether keyUsage is critical.
    pub key_usage_critical: bool,
    /// keyUsage bits set, by RFC 5280 name (`digitalSignature`, `keyCertSign`, …).
    pub key_usage: Vec<String>,
    /// Whether extendedKeyUsage is present.
    pub extended_key_usage_present: bool,
    /// Extended key usages, dotted OIDs.
    pub extended_key_usage: Vec<String>,
    /// Whether subjectAltName is present.
    pub san_present: bool,
    /// Whether subjectAltName is critical.
    pub san_critical: bool,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs (textual).
    pub ip_addresses: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// rfc822Name SANs.
    pub emails: Vec<String>,
    /// The SPIFFE ID, when there is exactly one URI SAN and it is a valid SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// authorityKeyIdentifier keyIdentifier, lowercase hex.
    pub authority_key_id: Option<String>,
    /// subjectKeyIdentifier, lowercase hex.
    pub subject_key_id: Option<String>,
    /// certificatePolicies policy OIDs, dotted.
    pub policies: Vec<String>,
    /// CRL distribution point URIs.
    pub crl_urls: Vec<String>,
    /// OCSP responder URIs from authorityInfoAccess.
    pub ocsp_urls: Vec<String>,
    /// Every extension, in certificate order.
    pub extensions: Vec<ExtensionFact>,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256_fingerprint: String,
}

impl Facts {
    /// Parses a DER certificate; the error is x509-parser's reason.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        // One parse serves both: the summary and the facts only it has.
        let info = CertInfo::from_parsed(&cert, der, OffsetDateTime::UNIX_EPOCH);
        let raw_serial = cert.raw_serial();
        let validity = cert.validity();
        let not_before = validity.not_before.to_datetime();
        let not_after = validity.not_after.to_datetime();
        let mut facts = Facts {
            version: cert.version().0 + 1,
            serial: hex::encode(raw_serial),
            serial_octets: raw_serial.len(),
            serial_negative: raw_serial.first().is_some_and(|b| b & 0x80 != 0),
            serial_zero: raw_serial.iter().all(|b| *b == 0),
            subject_empty: cert.subject().iter().next().is_none(),
            subject: info.subject,
            issuer: info.issuer,
            self_issued: info.self_issued,
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            not_before_unix: not_before.unix_timestamp(),
            not_after_unix: not_after.unix_timestamp(),
            lifetime_seconds: (not_after - not_before).whole_seconds(),
            signature_algorithm: info.signature_algorithm,
            signature_algorithm_oid: cert.signature_algorithm.algorithm.to_id_string(),
            signature_algorithms_match: cert.signature_algorithm == cert.tbs_certificate.signature,
            key: info.key,
            basic_constraints_present: false,
            basic_constraints_critical: false,
            is_ca: false,
            path_len: None,
            key_usage_present: false,
            key_usage_critical: false,
            key_usage: Vec::new(),
            extended_key_usage_present: false,
            extended_key_usage: Vec::new(),
            san_present: false,
            san_critical: false,
            dns_names: info.sans.dns,
            ip_addresses: info.sans.ip,
            uris: info.sans.uri,
            emails: info.sans.email,
            spiffe_id: info.spiffe_id,
            authority_key_id: None,
            subject_key_id: None,
            policies: Vec::new(),
            crl_urls: Vec::new(),
            ocsp_urls: Vec::new(),
            extensions: Vec::new(),
            sha256_fingerprint: info.sha256_fingerprint,
        };
        for ext in cert.extensions() {
            facts.extensions.push(ExtensionFact {
                oid: ext.oid.to_id_string(),
                critical: ext.critical,
                known: !ext.parsed_extension().unsupported(),
                malformed: matches!(ext.parsed_extension(), ParsedExtension::ParseError { .. }),
            });
            facts.absorb(ext.critical, ext.parsed_extension());
        }
        Ok(facts)
    }

    fn absorb(&mut self, critical: bool, ext: &ParsedExtension<'_>) {
        match ext {
            ParsedExtension::BasicConstraints(bc) => {
                self.basic_constraints_present = true;
                self.basic_constraints_critical = critical;
                self.is_ca = bc.ca;
                self.path_len = bc.path_len_constraint;
            }
            ParsedExtension::KeyUsage(ku) => {
                self.key_usage_present = true;
                self.key_usage_critical = critical;
                self.key_usage = KEY_USAGE_NAMES
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| (ku.flags >> bit) & 1 == 1)
                    .map(|(_, name)| (*name).to_owned())
                    .collect();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                self.extended_key_usage_present = true;
                let mut add = |on: bool, oid: &str| {
                    if on {
                        self.extended_key_usage.push(oid.to_owned());
                    }
                };
                add(eku.any, super::policy::EKU_ANY);
                add(eku.server_auth, super::policy::EKU_SERVER_AUTH);
                add(eku.client_auth, super::policy::EKU_CLIENT_AUTH);
                add(eku.code_signing, "1.3.6.1.5.5.7.3.3");
                add(eku.email_protection, "1.3.6.1.5.5.7.3.4");
                add(eku.time_stamping, "1.3.6.1.5.5.7.3.8");
                add(eku.ocsp_signing, "1.3.6.1.5.5.7.3.9");
                self.extended_key_usage
                    .extend(eku.other.iter().map(|o| o.to_id_string()));
            }
            ParsedExtension::SubjectAlternativeName(_) => {
                self.san_present = true;
                self.san_critical = critical;
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                self.authority_key_id = aki.key_identifier.as_ref().map(|k| hex::encode(k.0));
            }
            ParsedExtension::SubjectKeyIdentifier(ski) => {
                self.subject_key_id = Some(hex::encode(ski.0));
            }
            ParsedExtension::CertificatePolicies(policies) => {
                self.policies = policies
                    .iter()
                    .map(|p| p.policy_id.to_id_string())
                    .collect();
            }
            ParsedExtension::CRLDistributionPoints(points) => {
                for point in points.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &point.distribution_point
                    {
                        self.crl_urls.extend(uris_of(names));
                    }
                }
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for desc in &aia.accessdescs {
                    if desc.access_method.to_id_string() == OID_AD_OCSP {
                        self.ocsp_urls
                            .extend(uris_of(std::slice::from_ref(&desc.access_location)));
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether keyUsage has the named bit (RFC 5280 name).
    pub fn has_key_usage(&self, name: &str) -> bool {
        self.key_usage.iter().any(|k| k == name)
    }

    /// Whether extendedKeyUsage has the dotted OID.
    pub fn has_eku(&self, oid: &str) -> bool {
        self.extended_key_usage.iter().any(|e| e == oid)
    }

    /// The URI SANs that use the `spiffe` scheme.
    pub fn spiffe_uris(&self) -> Vec<&str> {
        self.uris
            .iter()
            .map(String::as_str)
            .filter(|u| {
                u.get(..9)
                    .is_some_and(|s| s.eq_ignore_ascii_case("spiffe://"))
            })
            .collect()
    }

    /// Whether the certificate claims a SPIFFE identity (any spiffe:// URI SAN).
    pub fn is_svid(&self) -> bool {
        !self.spiffe_uris().is_empty()
    }

    /// Whether a SPIFFE URI SAN is a valid SPIFFE ID.
    pub fn spiffe_uri_valid(uri: &str) -> bool {
        uri.parse::<SpiffeId>().is_ok()
    }

    /// Every SAN as text, for pattern policies.
    pub fn all_sans(&self) -> impl Iterator<Item = &str> {
        self.dns_names
            .iter()
            .chain(&self.ip_addresses)
            .chain(&self.uris)
            .chain(&self.emails)
            .map(String::as_str)
    }
}

fn uris_of<'a>(names: &'a [GeneralName<'a>]) -> impl Iterator<Item = String> + 'a {
    names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some((*u).to_owned()),
        _ => None,
    })
}
