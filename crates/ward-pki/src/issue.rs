//! Building and signing certificates from Ward's own policy.
//!
//! Nothing here copies fields from a request: callers describe what they
//! want ([`CaSpec`], [`LeafRequest`]) and this module decides every
//! extension (ARCHITECTURE.md, trap 1). Every certificate gets a fresh
//! random serial (trap 2) and explicit basicConstraints (trap 3).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, KeyUsagePurpose, NameConstraints, SanType,
};
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Error, PrivateKey, PublicKeyKind, Serial, SpiffeId};

/// How far a leaf's notBefore is set back from the moment of issuance, so a
/// peer whose clock runs slightly behind does not reject a fresh certificate.
pub const NOT_BEFORE_SKEW: Duration = Duration::from_secs(30);

/// The shortest lifetime Ward issues.
pub const MIN_TTL: Duration = Duration::from_secs(10);

/// What a leaf certificate may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// TLS server authentication only (EKU serverAuth).
    Server,
    /// TLS client authentication only (EKU clientAuth).
    Client,
    /// Both, as SPIRE's X509-SVIDs (the default for online issuance).
    #[default]
    Peer,
}

impl Profile {
    /// The stable spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Server => "server",
            Profile::Client => "client",
            Profile::Peer => "peer",
        }
    }

    fn ekus(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Profile::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Profile::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Profile::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        }
    }
}

impl FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "server" => Ok(Profile::Server),
            "client" => Ok(Profile::Client),
            "peer" => Ok(Profile::Peer),
            _ => Err(Error::Policy(format!(
                "unknown profile {s:?} (expected server, client or peer)"
            ))),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shape of a new CA hierarchy.
#[derive(Clone, Debug)]
pub struct CaSpec {
    /// Organisation name shown in the CA subjects ("Ward" by default).
    pub name: String,
    /// How long the root lives.
    pub root_validity: Duration,
    /// How long the intermediate lives (capped at the root's notAfter).
    pub intermediate_validity: Duration,
    /// DNS subtrees the intermediate may issue for; empty means no DNS
    /// name constraint. SPIFFE IDs are constrained by Ward's policy instead
    /// (ARCHITECTURE.md, trap 11).
    pub permitted_dns: Vec<String>,
}

/// A certificate that was just signed.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The DER certificate.
    pub der: CertificateDer<'static>,
    /// Its serial number.
    pub serial: Serial,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

fn ca_name(org: &str, role: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, format!("{org} {role}"));
    dn
}

fn add(now: OffsetDateTime, d: Duration) -> Result<OffsetDateTime, Error> {
    let d = time::Duration::try_from(d).map_err(|_| Error::Policy("duration too large".into()))?;
    now.checked_add(d)
        .filter(|t| t.year() < 10_000)
        .ok_or_else(|| Error::Policy("validity ends after the year 9999".into()))
}

fn finish(params: CertificateParams, serial: Serial, der: CertificateDer<'static>) -> Issued {
    Issued {
        der,
        serial,
        not_before: params.not_before,
        not_after: params.not_after,
    }
}

/// `name` as an rcgen name that encodes the same: each attribute with its
/// OID, PrintableString kept, every other string as UTF8String (how Ward
/// writes its CA names).
fn same_name(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName, Error> {
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .map(|arcs| arcs.collect())
            .ok_or_else(|| Error::InvalidCertificate("an attribute OID too large".into()))?;
        let text = attr.as_str().map_err(|e| {
            Error::InvalidCertificate(format!("a subject attribute is not a string: {e}"))
        })?;
        let value = if attr.attr_value().header.tag()
            == x509_parser::der_parser::asn1_rs::Tag::PrintableString
        {
            rcgen::DnValue::PrintableString(text.try_into().map_err(|_| {
                Error::InvalidCertificate("a PrintableString that is not printable".into())
            })?)
        } else {
            rcgen::DnValue::Utf8String(text.to_owned())
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// Builds and self-signs a root: CA:true with pathLen 1, keyCertSign and
/// cRLSign.
pub fn new_root(spec: &CaSpec, key: &PrivateKey, now: OffsetDateTime) -> Result<Issued, Error> {
    let serial = Serial::random(now)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(&spec.name, "Root CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now;
    params.not_after = add(now, spec.root_validity)?;
    params.serial_number = Some(serial.to_rcgen());
    let cert = params.self_signed(key)?;
    Ok(finish(params, serial, cert.der().clone()))
}

/// What [`Issuer::rollover`] makes.
#[derive(Clone, Debug)]
pub struct Rollover {
    /// The next root (self-signed).
    pub root: Issued,
    /// The next root's key certified by the current root.
    pub new_with_old: Issued,
    /// The current root's key certified by the next root.
    pub old_with_new: Issued,
}

/// A CA certificate with its key, ready to sign.
pub struct Issuer {
    cert_der: CertificateDer<'static>,
    inner: rcgen::Issuer<'static, PrivateKey>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// Its key is RSA or held in a token: signing costs milliseconds, not
    /// microseconds.
    rsa: bool,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Issuer {
    /// Pairs a CA certificate with its private key, checking that the key
    /// belongs to the certificate and that the certificate may sign
    /// certificates.
    pub fn new(cert_der: CertificateDer<'static>, key: PrivateKey) -> Result<Self, Error> {
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| Error::InvalidCertificate(format!("CA certificate: {e}")))?;
        if cert.public_key().raw != key.public_key_der().as_slice() {
            return Err(Error::InvalidKey(
                "the private key does not belong to the CA certificate".into(),
            ));
        }
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let can_sign = cert
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|ku| ku.value.key_cert_sign());
        if !is_ca || !can_sign {
            return Err(Error::InvalidCertificate(
                "not a CA certificate (needs CA:true and keyCertSign)".into(),
            ));
        }
        let validity = cert.validity();
        let not_before = validity.not_before.to_datetime();
        let not_after = validity.not_after.to_datetime();
        let rsa = PublicKeyKind::from_spki(cert.public_key()).is_rsa() || key.is_remote();
        let inner = rcgen::Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| Error::InvalidCertificate(format!("CA certificate: {e}")))?;
        Ok(Issuer {
            cert_der,
            inner,
            not_before,
            not_after,
            rsa,
        })
    }

    /// Whether the signing key is RSA or held in a token (each signature
    /// costs milliseconds, worth moving off an async worker).
    pub fn is_rsa(&self) -> bool {
        self.rsa
    }

    /// The rcgen issuer, for signing CRLs in [`crate::crl`].
    pub(crate) fn rcgen_issuer(&self) -> &rcgen::Issuer<'static, PrivateKey> {
        &self.inner
    }

    /// The issuer's own certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// When the issuer itself expires; nothing it signs outlives this.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// When the issuer became valid.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// Signs an intermediate CA (pathLen 0; keyCertSign, cRLSign and
    /// digitalSignature, the last for OCSP responses).
    pub fn sign_intermediate(
        &self,
        spec: &CaSpec,
        key: &PrivateKey,
        now: OffsetDateTime,
    ) -> Result<Issued, Error> {
        let serial = Serial::random(now)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_name(&spec.name, "Intermediate CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        if !spec.permitted_dns.is_empty() {
            let permitted_subtrees = spec
                .permitted_dns
                .iter()
                .map(|d| Ok(GeneralSubtree::DnsName(check_dns_name(d)?)))
                .collect::<Result<_, Error>>()?;
            params.name_constraints = Some(NameConstraints {
                permitted_subtrees,
                excluded_subtrees: Vec::new(),
            });
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = now.max(self.not_before);
        params.not_after = add(now, spec.intermediate_validity)?.min(self.not_after);
        params.serial_number = Some(serial.to_rcgen());
        let cert = params.signed_by(key, &self.inner)?;
        Ok(finish(params, serial, cert.der().clone()))
    }

    /// A root key rollover (RFC 4210 section 4.4, RFC 5280 self-issued
    /// certificates): the next root, self-signed by `new_key` with this
    /// root's subject, and the two rollover certificates: `new_key`
    /// certified by this root (NewWithOld, for peers that trust only this
    /// root) and this root's key certified by the next one (OldWithNew, for
    /// peers that trust only the next root). The subjects are the same, so
    /// the rollover certificates are self-issued and do not count against
    /// the roots' path length; AKI and SKI tell the keys apart.
    pub fn rollover(
        &self,
        new_key: &PrivateKey,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<Rollover, Error> {
        let (_, old) = X509Certificate::from_der(&self.cert_der)
            .map_err(|e| Error::InvalidCertificate(format!("the current root: {e}")))?;
        let subject = same_name(old.subject())?;
        let root_params = |not_before, not_after, serial: &Serial, aki: bool| {
            let mut params = CertificateParams::default();
            params.distinguished_name = subject.clone();
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.use_authority_key_identifier_extension = aki;
            params.not_before = not_before;
            params.not_after = not_after;
            params.serial_number = Some(serial.to_rcgen());
            params
        };
        let not_after = add(now, validity)?;
        let serial = Serial::random(now)?;
        let params = root_params(now, not_after, &serial, false);
        let root_der = params.self_signed(new_key)?.der().clone();
        let root = finish(params, serial, root_der);

        // NewWithOld: valid while both are.
        let serial = Serial::random(now)?;
        let params = root_params(
            now.max(self.not_before),
            not_after.min(self.not_after),
            &serial,
            true,
        );
        let der = params.signed_by(new_key, &self.inner)?.der().clone();
        let new_with_old = finish(params, serial, der);

        // OldWithNew: the old key for as long as the old root lives.
        let next = rcgen::Issuer::from_ca_cert_der(&root.der, new_key)
            .map_err(|e| Error::InvalidCertificate(format!("the next root: {e}")))?;
        let old_spki = rcgen::SubjectPublicKeyInfo::from_der(old.public_key().raw)
            .map_err(|e| Error::InvalidCertificate(format!("the current root's key: {e}")))?;
        let serial = Serial::random(now)?;
        let params = root_params(now, self.not_after.min(not_after), &serial, true);
        let der = params.signed_by(&old_spki, &next)?.der().clone();
        let old_with_new = finish(params, serial, der);
        Ok(Rollover {
            root,
            new_with_old,
            old_with_new,
        })
    }

    /// Signs a leaf for the public key `spki_der` (DER SubjectPublicKeyInfo)
    /// as `req` describes, valid from `now`.
    pub fn sign_leaf(
        &self,
        spki_der: &[u8],
        req: &LeafRequest,
        now: OffsetDateTime,
    ) -> Result<Issued, Error> {
        let kind = PublicKeyKind::from_spki_der(spki_der)?;
        kind.key_type()?; // refuse weak or unknown keys
        let public_key = crate::key::CertifiedKey::from_spki_der(spki_der)?;
        let (not_before, not_after) = self.leaf_validity(req, now)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &req.common_name {
            params
                .distinguished_name
                .push(DnType::CommonName, cn.as_str());
        }
        params.subject_alt_names = req.subject_alt_names()?;
        if params.subject_alt_names.is_empty() {
            return Err(Error::Policy(
                "a certificate needs at least one SPIFFE ID, DNS name or IP address".into(),
            ));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = if kind.is_rsa() {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        params.extended_key_usages = req.profile.ekus();
        if let Some(url) = &req.crl_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        if let Some(url) = &req.ocsp_url {
            params.custom_extensions.push(crate::aia::extension(url)?);
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(req.serial.to_rcgen());
        let cert = params.signed_by(&public_key, &self.inner)?;
        Ok(finish(params, req.serial.clone(), cert.der().clone()))
    }

    fn leaf_validity(
        &self,
        req: &LeafRequest,
        now: OffsetDateTime,
    ) -> Result<(OffsetDateTime, OffsetDateTime), Error> {
        if req.ttl < MIN_TTL {
            return Err(Error::Policy(format!(
                "lifetime {}s is below the minimum of {}s",
                req.ttl.as_secs(),
                MIN_TTL.as_secs()
            )));
        }
        if now >= self.not_after {
            return Err(Error::Policy(format!(
                "the issuing CA expired at {}",
                rfc3339(self.not_after)
            )));
        }
        let wanted = add(now, req.ttl)?;
        let not_after = if wanted > self.not_after {
            if !req.clamp_to_issuer {
                return Err(Error::Policy(format!(
                    "lifetime {} would outlive the issuing CA, which expires at {}",
                    humanize(req.ttl),
                    rfc3339(self.not_after)
                )));
            }
            self.not_after
        } else {
            wanted
        };
        let skew = time::Duration::try_from(NOT_BEFORE_SKEW).unwrap_or(time::Duration::ZERO);
        let not_before = (now - skew).max(self.not_before);
        Ok((not_before, not_after))
    }
}

/// Everything that decides a leaf certificate's content.
#[derive(Clone, Debug)]
pub struct LeafRequest {
    /// EKU profile.
    pub profile: Profile,
    /// The one SPIFFE ID, written as the only URI SAN.
    pub spiffe_id: Option<SpiffeId>,
    /// DNS SANs (validated and lowercased when the certificate is built).
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Optional subject CN; with none the subject is empty and the SAN
    /// extension critical (RFC 5280 §4.2.1.6).
    pub common_name: Option<String>,
    /// Requested lifetime.
    pub ttl: Duration,
    /// When the lifetime would outlive the issuer: cut it to the issuer's
    /// notAfter (`true`) or refuse (`false`).
    pub clamp_to_issuer: bool,
    /// The serial to use; callers pick it so they can record it first.
    pub serial: Serial,
    /// URL written as the CRL Distribution Point, if any.
    pub crl_url: Option<String>,
    /// OCSP responder URL written into an Authority Information Access
    /// extension (id-ad-ocsp), if any.
    pub ocsp_url: Option<String>,
}

impl LeafRequest {
    fn subject_alt_names(&self) -> Result<Vec<SanType>, Error> {
        let mut sans = Vec::new();
        if let Some(id) = &self.spiffe_id {
            sans.push(SanType::URI(ia5(id.as_str())?));
        }
        for name in &self.dns_names {
            sans.push(SanType::DnsName(ia5(&check_dns_name(name)?)?));
        }
        sans.extend(self.ip_addresses.iter().copied().map(SanType::IpAddress));
        Ok(sans)
    }
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, Error> {
    rcgen::string::Ia5String::try_from(s)
        .map_err(|_| Error::Policy(format!("{s:?} is not an IA5 (ASCII) string")))
}

/// Validates a DNS name for a SAN or a name constraint: ASCII labels of
/// letters, digits and hyphens, at most 63 bytes each and 253 in all, with an
/// optional leading `*.` wildcard. Returns it lowercased.
pub fn check_dns_name(name: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Policy(format!("invalid DNS name {name:?}: {why}"));
    let lower = name.to_ascii_lowercase();
    let body = lower.strip_prefix("*.").unwrap_or(&lower);
    if body.is_empty() || lower.len() > 253 {
        return Err(bad("must be 1 to 253 characters"));
    }
    for label in body.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each label must be 1 to 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label must not start or end with '-'"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                "only letters, digits, '-' and a leading '*.' are allowed",
            ));
        }
    }
    Ok(lower)
}

/// RFC 3339 form of a timestamp, for messages and JSON.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A short human form of a duration: `1h`, `90s`, `2d3h`.
pub fn humanize(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests;
