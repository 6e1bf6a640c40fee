//! CRL verification: a DER CRL is accepted only when its signature verifies
//! against an issuer certificate the caller trusts ([`Trust`]): a configured
//! root, or an intermediate that validates to one (learned from a bundle or
//! from client chains that passed a handshake). The gate keeps the set of
//! CRLs in force, `ward check` judges one CRL; both verify here.
//!
//! Pure: the caller fetches the bytes and hands in the clock.

use std::collections::HashSet;
use std::sync::Arc;

use aws_lc_rs::digest;
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_CRL_NUMBER,
    OID_X509_EXT_ISSUER_DISTRIBUTION_POINT,
};
use x509_parser::prelude::{
    ASN1Time, CertificateRevocationList, FromDer, ParsedExtension, X509Certificate,
};

/// Most intermediates learned from client chains.
const MAX_LEARNED: usize = 256;
/// Most distinct intermediates remembered as already looked at.
const MAX_SEEN: usize = 4096;
/// How far in the future a CRL's thisUpdate may lie (clock skew).
const SKEW_SECONDS: i64 = 300;

/// Identifies an issuing key: SHA-256 over the subject name and the SPKI.
pub type IssuerKey = [u8; 32];

/// SHA-256 of `bytes` (how CRLs and intermediates are told apart).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

fn issuer_key(subject: &[u8], spki: &[u8]) -> IssuerKey {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&(subject.len() as u64).to_be_bytes());
    ctx.update(subject);
    ctx.update(spki);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A serial without the leading zero bytes DER may add.
pub fn normalize_serial(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw[start..].to_vec()
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn authority_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// A certificate that may sign CRLs (a root of a client CA bundle or a
/// validated intermediate).
#[derive(Debug, Clone)]
pub struct IssuerCert {
    der: Arc<[u8]>,
    subject: Vec<u8>,
    key: IssuerKey,
    ski: Option<Vec<u8>>,
}

impl IssuerCert {
    fn parse(der: &[u8]) -> Option<Self> {
        let (rest, cert) = X509Certificate::from_der(der).ok()?;
        if !rest.is_empty() {
            return None;
        }
        Some(IssuerCert {
            subject: cert.subject().as_raw().to_vec(),
            key: issuer_key(cert.subject().as_raw(), cert.public_key().raw),
            ski: subject_key_id(&cert),
            der: Arc::from(der),
        })
    }

    /// Runs `f` on the parsed certificate.
    fn with_cert<T>(&self, f: impl FnOnce(&X509Certificate<'_>) -> T) -> Option<T> {
        X509Certificate::from_der(&self.der)
            .ok()
            .map(|(_, cert)| f(&cert))
    }
}

/// Issuer certificates trusted to sign CRLs.
#[derive(Debug, Default, Clone)]
pub struct Trust {
    roots: Vec<IssuerCert>,
    learned: Vec<IssuerCert>,
    /// SHA-256 of every intermediate already looked at (learned or not).
    seen: HashSet<[u8; 32]>,
}

impl Trust {
    /// Replaces the configured roots; returns whether they changed. Learned
    /// intermediates are forgotten when the roots change (they are learned
    /// again from the next client chains).
    pub fn set_roots(&mut self, ders: &[Vec<u8>]) -> bool {
        let roots: Vec<IssuerCert> = ders.iter().filter_map(|d| IssuerCert::parse(d)).collect();
        let same = roots.len() == self.roots.len()
            && roots.iter().zip(&self.roots).all(|(a, b)| a.der == b.der);
        if same {
            return false;
        }
        self.roots = roots;
        self.learned.clear();
        self.seen.clear();
        true
    }

    /// Whether the intermediate with this DER digest was looked at already.
    pub fn has_seen(&self, digest: &[u8; 32]) -> bool {
        self.seen.contains(digest)
    }

    /// The digests of every intermediate looked at.
    pub fn seen(&self) -> &HashSet<[u8; 32]> {
        &self.seen
    }

    /// Whether no further intermediate will be looked at.
    pub fn seen_full(&self) -> bool {
        self.seen.len() >= MAX_SEEN || self.learned.len() >= MAX_LEARNED
    }

    fn issuers_named<'a>(&'a self, subject: &'a [u8]) -> impl Iterator<Item = &'a IssuerCert> {
        self.roots
            .iter()
            .chain(&self.learned)
            .filter(move |c| c.subject == subject)
    }

    /// Looks at an intermediate from a client chain: it is learned when it
    /// is a CA certificate, valid at `now` (Unix seconds), whose signature
    /// verifies with a trusted issuer's key. Returns whether it was learned.
    pub fn learn(&mut self, der: &[u8], now: i64) -> bool {
        let digest = sha256(der);
        if self.seen.contains(&digest) || self.seen.len() >= MAX_SEEN {
            return false;
        }
        self.seen.insert(digest);
        if self.learned.len() >= MAX_LEARNED {
            return false;
        }
        let Ok((rest, cert)) = X509Certificate::from_der(der) else {
            return false;
        };
        let valid_now = ASN1Time::from_timestamp(now).is_ok_and(|t| cert.validity().is_valid_at(t));
        if !rest.is_empty() || !cert.is_ca() || !valid_now {
            return false;
        }
        let issued = self.issuers_named(cert.issuer().as_raw()).any(|issuer| {
            issuer
                .with_cert(|i| crate::sig::verify_cert(&cert, i.public_key()).is_ok())
                .unwrap_or(false)
        });
        if !issued {
            return false;
        }
        match IssuerCert::parse(der) {
            Some(c)
                if !self
                    .learned
                    .iter()
                    .any(|l| l.key == c.key && l.der == c.der) =>
            {
                self.learned.push(c);
                true
            }
            _ => false,
        }
    }
}

/// A CRL whose signature and issuer were verified.
#[derive(Debug, Clone)]
pub struct VerifiedCrl {
    /// The issuing key.
    pub issuer: IssuerKey,
    /// The issuer's subject name (raw DER).
    pub issuer_name: Vec<u8>,
    /// The issuer's subject key identifier.
    pub issuer_ski: Option<Vec<u8>>,
    /// The issuer certificate, to check a leaf's signature when key
    /// identifiers cannot decide.
    pub issuer_der: Arc<[u8]>,
    /// The issuer's subject, readable, for logs.
    pub issuer_display: String,
    /// The CRL number, big-endian without leading zeros.
    pub number: Option<Vec<u8>>,
    /// thisUpdate (Unix seconds).
    pub this_update: i64,
    /// nextUpdate (Unix seconds), if present.
    pub next_update: Option<i64>,
    /// Revoked serials, normalized.
    pub revoked: HashSet<Vec<u8>>,
}

impl VerifiedCrl {
    /// The CRL number for logs (decimal when it fits in 128 bits).
    pub fn number_display(&self) -> String {
        match &self.number {
            None => "-".into(),
            Some(n) if n.len() <= 16 => {
                let mut v: u128 = 0;
                for b in n {
                    v = (v << 8) | u128::from(*b);
                }
                v.to_string()
            }
            Some(n) => n.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Whether this CRL is older than `other` by CRL number (a rollback).
    pub fn older_than(&self, other: &VerifiedCrl) -> bool {
        match (&self.number, &other.number) {
            (Some(a), Some(b)) => (a.len(), a) < (b.len(), b),
            _ => self.this_update < other.this_update,
        }
    }
}

/// Why a CRL was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    /// Not a DER (or PEM) CRL.
    #[error("malformed CRL: {0}")]
    Malformed(String),
    /// No trusted certificate carries the CRL's issuer name (yet).
    #[error("no trusted issuer certificate named {0} (waiting for a client chain that carries it)")]
    UnknownIssuer(String),
    /// A trusted certificate has the issuer's name, but none verifies the signature.
    #[error("the CRL's signature does not verify with any trusted certificate named {0}")]
    BadSignature(String),
    /// A feature Ward does not evaluate (delta or indirect CRL, partial scope, unknown critical extension).
    #[error("unsupported CRL: {0}")]
    Unsupported(String),
    /// thisUpdate lies in the future.
    #[error("the CRL's thisUpdate lies in the future")]
    NotYetValid,
}

impl CrlError {
    /// A short label for metrics (the gate's `ward_gate_crl_refresh_total`).
    pub fn label(&self) -> &'static str {
        match self {
            CrlError::Malformed(_) => "malformed",
            CrlError::UnknownIssuer(_) => "pending",
            CrlError::BadSignature(_) => "untrusted",
            CrlError::Unsupported(_) => "unsupported",
            CrlError::NotYetValid => "not_yet_valid",
        }
    }

    /// Whether the CRL may verify later, once more intermediates are known.
    pub fn retry_on_learn(&self) -> bool {
        matches!(self, CrlError::UnknownIssuer(_) | CrlError::BadSignature(_))
    }
}

/// Parses a CRL given as DER or as a PEM `X509 CRL` block.
pub fn decode(bytes: &[u8]) -> Result<Vec<u8>, CrlError> {
    use rustls_pki_types::CertificateRevocationListDer;
    use rustls_pki_types::pem::PemObject;
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let der = CertificateRevocationListDer::from_pem_slice(trimmed)
            .map_err(|e| CrlError::Malformed(format!("PEM: {e}")))?;
        Ok(der.as_ref().to_vec())
    } else {
        Ok(bytes.to_vec())
    }
}

/// Verifies a DER CRL against `trust` at `now` (Unix seconds).
pub fn verify(der: &[u8], trust: &Trust, now: i64) -> Result<VerifiedCrl, CrlError> {
    let (rest, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| CrlError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CrlError::Malformed(format!(
            "{} bytes after the CRL",
            rest.len()
        )));
    }
    let name = crl.issuer().as_raw();
    let display = crl.issuer().to_string();
    let mut candidates = trust.issuers_named(name).peekable();
    if candidates.peek().is_none() {
        return Err(CrlError::UnknownIssuer(display));
    }
    let issuer = candidates
        .find(|c| {
            c.with_cert(|cert| {
                let may_sign = match cert.key_usage() {
                    Ok(Some(ku)) => ku.value.crl_sign(),
                    Ok(None) => true,
                    Err(_) => false,
                };
                may_sign && crate::sig::verify_crl(&crl, cert.public_key()).is_ok()
            })
            .unwrap_or(false)
        })
        .ok_or_else(|| CrlError::BadSignature(display.clone()))?;
    for ext in crl.extensions() {
        if let ParsedExtension::IssuingDistributionPoint(idp) = ext.parsed_extension() {
            if idp.indirect_crl
                || idp.only_contains_ca_certs
                || idp.only_contains_attribute_certs
                || idp.only_some_reasons.is_some()
            {
                return Err(CrlError::Unsupported(
                    "the issuing distribution point limits its scope".into(),
                ));
            }
        } else if ext.critical
            && ext.oid != OID_X509_EXT_CRL_NUMBER
            && ext.oid != OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER
            && ext.oid != OID_X509_EXT_ISSUER_DISTRIBUTION_POINT
        {
            return Err(CrlError::Unsupported(format!(
                "critical extension {} (a delta CRL?)",
                ext.oid
            )));
        }
    }
    let this_update = crl.last_update().timestamp();
    if this_update > now + SKEW_SECONDS {
        return Err(CrlError::NotYetValid);
    }
    let mut revoked = HashSet::new();
    for entry in crl.iter_revoked_certificates() {
        if let Some(ext) = entry.extensions().iter().find(|e| e.critical) {
            return Err(CrlError::Unsupported(format!(
                "critical entry extension {} (an indirect CRL?)",
                ext.oid
            )));
        }
        revoked.insert(normalize_serial(entry.raw_serial()));
    }
    Ok(VerifiedCrl {
        issuer: issuer.key,
        issuer_name: issuer.subject.clone(),
        issuer_ski: issuer.ski.clone(),
        issuer_der: issuer.der.clone(),
        issuer_display: display,
        number: crl.crl_number().map(|n| normalize_serial(&n.to_bytes_be())),
        this_update,
        next_update: crl.next_update().map(|t| t.timestamp()),
        revoked,
    })
}

/// When the DER CRL `der` says the certificate with the normalized
/// `serial` was revoked (Unix seconds); `None` when it does not list it or
/// does not parse. For reports: [`verify`] is what decides.
pub fn revoked_at(der: &[u8], serial: &[u8]) -> Option<i64> {
    let (_, crl) = CertificateRevocationList::from_der(der).ok()?;
    crl.iter_revoked_certificates()
        .find(|entry| normalize_serial(entry.raw_serial()) == serial)
        .map(|entry| entry.revocation_date.timestamp())
}

/// What revocation checks need from a client's leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafRef {
    /// Issuer name (raw DER).
    pub issuer_name: Vec<u8>,
    /// Authority key identifier.
    pub aki: Option<Vec<u8>>,
    /// Serial, normalized.
    pub serial: Vec<u8>,
    /// The leaf DER, for a signature check when key identifiers cannot decide.
    pub der: Arc<[u8]>,
}

impl LeafRef {
    /// Reads the fields from a parsed leaf.
    pub fn of(cert: &X509Certificate<'_>, der: &[u8]) -> Self {
        LeafRef {
            issuer_name: cert.issuer().as_raw().to_vec(),
            aki: authority_key_id(cert),
            serial: normalize_serial(cert.raw_serial()),
            der: Arc::from(der),
        }
    }

    /// Parses a DER leaf.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(LeafRef::of(&cert, der))
    }

    /// Whether the CRL's issuer issued this leaf: same name, and the key
    /// identifiers agree (or, without them, the leaf's signature verifies).
    pub fn issued_by(&self, crl: &VerifiedCrl) -> bool {
        if self.issuer_name != crl.issuer_name {
            return false;
        }
        if let (Some(aki), Some(ski)) = (&self.aki, &crl.issuer_ski) {
            return aki == ski;
        }
        let Ok((_, issuer)) = X509Certificate::from_der(&crl.issuer_der) else {
            return false;
        };
        X509Certificate::from_der(&self.der)
            .map(|(_, leaf)| crate::sig::verify_cert(&leaf, issuer.public_key()).is_ok())
            .unwrap_or(false)
    }
}
