//! The catalog of rule ids: every finding Ward reports carries one of these.
//!
//! Ids are stable: scripts and policy files (`disable`, `severity`) refer to
//! them, so a rule may be reworded but never renamed. `docs/lint-rules.md`
//! lists the same rules; a test keeps the two in step.

use super::{Finding, Severity};

/// One rule: a stable id, its default severity and what it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable id such as `w5280.serial_positive`.
    pub id: &'static str,
    /// Severity unless a policy overrides it.
    pub severity: Severity,
    /// One line: what the rule requires.
    pub summary: &'static str,
}

impl Rule {
    /// A finding of this rule with a specific message.
    pub fn finding(&self, message: impl Into<String>) -> Finding {
        Finding {
            id: self.id.to_owned(),
            severity: self.severity,
            message: message.into(),
        }
    }
}

macro_rules! rules {
    ($( $(#[$doc:meta])* $name:ident = ($id:literal, $sev:ident, $summary:literal); )*) => {
        $(
            $(#[$doc])*
            pub const $name: Rule = Rule { id: $id, severity: Severity::$sev, summary: $summary };
        )*
        /// Every rule, in documentation order.
        pub const ALL: &[Rule] = &[$($name),*];
    };
}

rules! {
    /// Unparseable certificate.
    PARSE = ("w5280.parse", Error, "The certificate is well-formed DER X.509.");
    /// Version.
    VERSION = ("w5280.version", Error, "A certificate with extensions is version 3.");
    /// Serial sign.
    SERIAL_POSITIVE = ("w5280.serial_positive", Error, "The serial number is a positive integer.");
    /// Serial size.
    SERIAL_LENGTH = ("w5280.serial_length", Error, "The serial number is at most 20 octets.");
    /// Serial entropy.
    SERIAL_ENTROPY = ("w5280.serial_entropy", Warning, "The serial number has at least 64 bits (8 octets), room for the randomness CAs must put there.");
    /// Inner and outer signature algorithm.
    SIGNATURE_MISMATCH = ("w5280.signature_mismatch", Error, "tbsCertificate.signature equals signatureAlgorithm.");
    /// Validity order.
    VALIDITY_ORDER = ("w5280.validity_order", Error, "notBefore is not after notAfter.");
    /// CA:true leaf (not an SVID).
    LEAF_NOT_CA = ("w5280.leaf_not_ca", Error, "An end-entity certificate is not a CA (basicConstraints cA false or absent).");
    /// CA basic constraints.
    CA_BASIC_CONSTRAINTS = ("w5280.ca_basic_constraints", Error, "A CA certificate has a critical basicConstraints with cA true.");
    /// CA key usage.
    CA_KEY_CERT_SIGN = ("w5280.ca_key_cert_sign", Error, "A CA certificate has keyUsage with keyCertSign.");
    /// Leaf key usage.
    LEAF_KEY_CERT_SIGN = ("w5280.leaf_key_cert_sign", Error, "An end-entity certificate has neither keyCertSign nor cRLSign.");
    /// KU/EKU consistency.
    KU_EKU_CONSISTENT = ("w5280.ku_eku_consistent", Error, "A TLS (serverAuth/clientAuth) certificate's keyUsage allows digitalSignature.");
    /// KU criticality.
    KU_CRITICAL = ("w5280.ku_critical", Warning, "keyUsage is marked critical.");
    /// anyExtendedKeyUsage.
    EKU_ANY = ("w5280.eku_any", Warning, "An end-entity certificate does not claim anyExtendedKeyUsage.");
    /// No EKU.
    EKU_MISSING = ("w5280.eku_missing", Warning, "An end-entity certificate has an extendedKeyUsage extension (verifiers accept a leaf without one for any purpose).");
    /// SAN presence.
    SAN_PRESENT = ("w5280.san_present", Error, "An end-entity certificate has a subjectAltName (verifiers ignore the CN).");
    /// SAN criticality with an empty subject.
    SAN_CRITICAL = ("w5280.san_critical", Error, "With an empty subject, subjectAltName is critical (RFC 5280 4.2.1.6).");
    /// Control characters in names.
    CONTROL_CHARS = ("w5280.control_chars", Error, "No name or URI (subject, issuer, SANs, CRL distribution points, OCSP responders) contains a control character.");
    /// AKI presence.
    AKI_PRESENT = ("w5280.aki_present", Error, "A certificate that is not self-issued has an authorityKeyIdentifier with a keyIdentifier.");
    /// AKI matches the issuer's SKI.
    AKI_MATCHES_ISSUER = ("w5280.aki_matches_issuer", Error, "The authorityKeyIdentifier equals the issuer's subjectKeyIdentifier.");
    /// CA SKI.
    SKI_CA = ("w5280.ski_ca", Error, "A CA certificate has a subjectKeyIdentifier.");
    /// Leaf SKI.
    SKI_LEAF = ("w5280.ski_leaf", Notice, "An end-entity certificate has a subjectKeyIdentifier (RFC 5280: SHOULD).");
    /// Unknown critical extension.
    CRITICAL_UNKNOWN = ("w5280.critical_unknown", Error, "Every critical extension is one verifiers understand.");
    /// Malformed extension.
    MALFORMED_EXTENSION = ("w5280.malformed_extension", Error, "Every extension parses.");
    /// RSA size.
    RSA_SIZE = ("wkey.rsa_size", Error, "An RSA key has at least 2048 bits.");
    /// EC curve.
    EC_CURVE = ("wkey.ec_curve", Error, "An ECDSA key is on P-256 or P-384.");
    /// Key algorithm.
    KEY_ALGORITHM = ("wkey.algorithm", Error, "The key is RSA, ECDSA, Ed25519 or ML-DSA (an ML-DSA key of its parameter set's size, without parameters).");
    /// ML-DSA key usage.
    ML_DSA_KEY_USAGE = ("wkey.ml_dsa_key_usage", Error, "An ML-DSA key's keyUsage has only signing bits: digitalSignature, nonRepudiation, keyCertSign, cRLSign (RFC 9881 section 5).");
    /// ML-DSA key under a classical signature.
    PQ_SIGNED_CLASSICALLY = ("wkey.pq_signed_classically", Warning, "A certificate for an ML-DSA key is signed with ML-DSA (under a classical signature it gives no post-quantum assurance).");
    /// ML-DSA issuer weaker than its subject.
    PQ_ISSUER_WEAKER = ("wkey.pq_issuer_weaker", Notice, "An ML-DSA certificate's issuer key is an ML-DSA parameter set at least as strong as its own (a chain is as strong as its weakest signature).");
    /// Weak hash.
    WEAK_HASH = ("wsig.weak_hash", Error, "The signature does not use SHA-1, MD5 or MD2.");
    /// Unknown signature algorithm.
    UNKNOWN_SIGNATURE = ("wsig.unknown_algorithm", Warning, "The signature algorithm is one Ward knows (RSA PKCS#1/PSS with SHA-2, ECDSA with SHA-2, Ed25519, ML-DSA).");
    /// Signature check against the issuer.
    ISSUER_SIGNATURE = ("wsig.issuer_signature", Error, "The signature verifies with the issuer's public key.");
    /// Expired.
    EXPIRED = ("wlife.expired", Error, "The certificate has not expired.");
    /// Not yet valid.
    NOT_YET_VALID = ("wlife.not_yet_valid", Error, "The certificate is already valid.");
    /// Expiring soon.
    EXPIRING_SOON = ("wlife.expiring_soon", Warning, "More than expiry_warning_days remain (or, for a certificate shorter-lived than three times that, more than a third of its lifetime).");
    /// Server lifetime.
    MAX_SERVER = ("wlife.max_server", Error, "A leaf without a SPIFFE ID lives at most max_server_lifetime (398 days).");
    /// Workload lifetime.
    MAX_WORKLOAD = ("wlife.max_workload", Error, "A leaf with a SPIFFE ID lives at most max_workload_lifetime (24 hours).");
    /// Outlives the issuer.
    OUTLIVES_ISSUER = ("wlife.outlives_issuer", Warning, "The certificate does not outlive its issuer.");
    /// One URI SAN.
    SVID_ONE_URI = ("wsvid.one_uri", Error, "An X509-SVID has exactly one URI SAN.");
    /// Valid SPIFFE ID.
    SVID_VALID_ID = ("wsvid.valid_id", Error, "A spiffe:// URI SAN is a valid SPIFFE ID.");
    /// SVID leaf CA flag.
    SVID_LEAF_NOT_CA = ("wsvid.leaf_not_ca", Error, "A leaf X509-SVID is not a CA.");
    /// Required EKU.
    REQUIRED_EKU = ("wpolicy.required_eku", Error, "The leaf has every EKU in required_eku.");
    /// Denied SAN.
    SAN_DENIED = ("wpolicy.san_denied", Error, "No SAN matches a san_deny pattern.");
    /// SAN not allowed.
    SAN_NOT_ALLOWED = ("wpolicy.san_not_allowed", Error, "Every SAN matches a san_allow pattern (when the list is not empty).");
    /// Required policy OID.
    REQUIRED_POLICY = ("wpolicy.required_policy_oid", Error, "The leaf's certificatePolicies hold every OID in required_policy_oids.");
    /// Rego failed.
    REGO_ERROR = ("rego.error", Error, "The Rego policy evaluates without error (deny_*/warn_*/notice_* rules report as rego.<rule>).");
}

/// Rules reported by `ward check` about an endpoint rather than one certificate.
pub mod check {
    use super::{Rule, Severity};

    rules! {
        /// Path validation: unknown issuer.
        UNKNOWN_ISSUER = ("wchain.unknown_issuer", Error, "The presented chain builds to a trusted root (the message names a missing issuer).");
        /// Path validation: expired.
        CHAIN_EXPIRED = ("wchain.expired", Error, "Every certificate on the path is within its validity (expired).");
        /// Path validation: not yet valid.
        CHAIN_NOT_YET_VALID = ("wchain.not_yet_valid", Error, "Every certificate on the path is within its validity (not yet valid).");
        /// Path validation: wrong EKU.
        CHAIN_WRONG_EKU = ("wchain.wrong_eku", Error, "The leaf carries EKU serverAuth.");
        /// Path validation: weak signature.
        CHAIN_WEAK_SIGNATURE = ("wchain.weak_signature", Error, "Verifiers accept every signature on the path.");
        /// Path validation: weak key.
        CHAIN_WEAK_KEY = ("wchain.weak_key", Error, "Verifiers accept every key on the path.");
        /// Path validation: CA as leaf.
        CHAIN_CA_AS_LEAF = ("wchain.ca_as_leaf", Error, "The leaf is not a CA certificate.");
        /// Path validation: anything else.
        CHAIN_INVALID = ("wchain.invalid", Error, "The path is otherwise valid for rustls-webpki.");
        /// No roots.
        NO_ROOTS = ("wchain.no_roots", Notice, "Path building needs --roots; without them it is skipped.");
        /// Name mismatch.
        NAME_MISMATCH = ("wname.mismatch", Error, "The leaf is valid for the name the client asks for (--sni, default the host).");
        /// SPIFFE ID mismatch.
        SPIFFE_ID_MISMATCH = ("wname.spiffe_id_mismatch", Error, "The leaf's SPIFFE ID matches --spiffe-id.");
        /// Revoked.
        REVOKED = ("wrev.revoked", Error, "The leaf is not revoked (CRL distribution point or OCSP responder).");
        /// Revocation status unknown.
        REVOCATION_UNCHECKED = ("wrev.unchecked", Notice, "The leaf's revocation status could be checked (no CRL DP or OCSP URL, or none reachable).");
        /// Revocation source unusable.
        REVOCATION_BAD_SOURCE = ("wrev.bad_response", Warning, "The CRL or OCSP response is signed by the issuer, current and parseable.");
        /// TLS 1.0.
        TLS10 = ("wtls.tls10", Error, "The endpoint refuses TLS 1.0.");
        /// TLS 1.1.
        TLS11 = ("wtls.tls11", Error, "The endpoint refuses TLS 1.1.");
        /// TLS 1.2 CBC.
        TLS12_CBC = ("wtls.tls12_cbc", Error, "The endpoint refuses TLS 1.2 with non-AEAD (CBC, RC4, 3DES) cipher suites.");
        /// Legacy probe inconclusive.
        LEGACY_PROBE = ("wtls.legacy_probe", Notice, "Each legacy-protocol probe got an answer.");
        /// No TLS 1.3.
        NO_TLS13 = ("wtls.no_tls13", Notice, "The endpoint negotiates TLS 1.3.");
        /// No modern handshake at all.
        NO_MODERN = ("wtls.no_modern", Error, "A modern client (rustls: TLS 1.3, or TLS 1.2 with ECDHE and AEAD) can connect.");
        /// Handshake failed after the chain was seen.
        HANDSHAKE = ("wtls.handshake", Warning, "A modern client (rustls) completes the handshake.");
    }
}

/// Looks a rule up by id among both catalogs.
pub fn find(id: &str) -> Option<&'static Rule> {
    ALL.iter().chain(check::ALL).find(|r| r.id == id)
}
