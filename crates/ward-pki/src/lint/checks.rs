//! Key strength (`wkey.*`), signature (`wsig.*`), lifetime (`wlife.*`),
//! X509-SVID (`wsvid.*`) and site-policy (`wpolicy.*`) rules.

use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::facts::Facts;
use super::policy::LintPolicy;
use super::rules::{self, Rule};
use super::{Context, Finding, Role};
use crate::PublicKeyKind;
use crate::issue::humanize;

/// Signature OIDs with a broken hash: SHA-1 (RSA, ECDSA, DSA, the old
/// RSA alias) and MD2/MD5.
const WEAK_SIGNATURES: [(&str, &str); 6] = [
    ("1.2.840.113549.1.1.5", "SHA-1"),
    ("1.3.14.3.2.29", "SHA-1"),
    ("1.2.840.10045.4.1", "SHA-1"),
    ("1.2.840.10040.4.3", "SHA-1"),
    ("1.2.840.113549.1.1.4", "MD5"),
    ("1.2.840.113549.1.1.2", "MD2"),
];

/// Signature OIDs Ward knows to be sound.
const GOOD_SIGNATURES: [&str; 12] = [
    "1.2.840.113549.1.1.11",   // sha256WithRSAEncryption
    "1.2.840.113549.1.1.12",   // sha384WithRSAEncryption
    "1.2.840.113549.1.1.13",   // sha512WithRSAEncryption
    "1.2.840.113549.1.1.10",   // RSASSA-PSS
    "1.2.840.10045.4.3.2",     // ecdsa-with-SHA256
    "1.2.840.10045.4.3.3",     // ecdsa-with-SHA384
    "1.2.840.10045.4.3.4",     // ecdsa-with-SHA512
    "1.3.101.112",             // Ed25519
    "1.3.101.113",             // Ed448
    "2.16.840.1.101.3.4.3.17", // ML-DSA-44
    "2.16.840.1.101.3.4.3.18", // ML-DSA-65
    "2.16.840.1.101.3.4.3.19", // ML-DSA-87
];

/// Runs every rule of this file.
pub(super) fn check(
    der: &[u8],
    facts: &Facts,
    ctx: &Context<'_>,
    issuer: Option<&Facts>,
    verify_signature: bool,
    policy: &LintPolicy,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut flag = |rule: Rule, cond: bool, message: String| {
        if cond {
            out.push(rule.finding(message));
        }
    };
    key_rules(facts, &mut flag);
    post_quantum_rules(facts, issuer, &mut flag);
    signature_rules(der, facts, ctx, verify_signature, &mut flag);
    lifetime_rules(facts, ctx, issuer, policy, &mut flag);
    if ctx.role == Role::Leaf {
        svid_rules(facts, &mut flag);
        policy_rules(facts, policy, &mut flag);
    }
    out
}

fn key_rules(facts: &Facts, flag: &mut impl FnMut(Rule, bool, String)) {
    match facts.key {
        PublicKeyKind::Rsa { bits } => flag(
            rules::RSA_SIZE,
            bits < 2048,
            format!("RSA key of {bits} bits (2048 at least)"),
        ),
        PublicKeyKind::Ecdsa { bits } => flag(
            rules::EC_CURVE,
            bits != 256 && bits != 384,
            format!("ECDSA key of {bits} bits (P-256 or P-384)"),
        ),
        PublicKeyKind::EcdsaUnsupported { curve } => flag(
            rules::EC_CURVE,
            true,
            format!("ECDSA key on {curve} (P-256 or P-384)"),
        ),
        PublicKeyKind::Ed25519 | PublicKeyKind::MlDsa { .. } => {}
        PublicKeyKind::Other => flag(
            rules::KEY_ALGORITHM,
            true,
            "a key that is neither RSA, ECDSA on a named curve, Ed25519 nor ML-DSA".into(),
        ),
    }
}

/// keyUsage bits an ML-DSA key may carry (RFC 9881 §5).
const ML_DSA_USAGES: [&str; 4] = [
    "digitalSignature",
    "nonRepudiation",
    "keyCertSign",
    "cRLSign",
];

fn post_quantum_rules(
    facts: &Facts,
    issuer: Option<&Facts>,
    flag: &mut impl FnMut(Rule, bool, String),
) {
    let PublicKeyKind::MlDsa { level } = facts.key else {
        return;
    };
    let extra: Vec<&str> = facts
        .key_usage
        .iter()
        .map(String::as_str)
        .filter(|u| !ML_DSA_USAGES.contains(u))
        .collect();
    flag(
        rules::ML_DSA_KEY_USAGE,
        !extra.is_empty(),
        format!(
            "ML-DSA key with keyUsage {} (a signature-only key)",
            extra.join(", ")
        ),
    );
    let pq_signed = crate::key::ml_dsa_oid(&facts.signature_algorithm_oid).is_some();
    flag(
        rules::PQ_SIGNED_CLASSICALLY,
        !pq_signed,
        format!(
            "ML-DSA-{level} key signed with {}: no post-quantum assurance for this certificate",
            facts.signature_algorithm
        ),
    );
    if let Some(PublicKeyKind::MlDsa { level: theirs }) = issuer.map(|i| i.key) {
        flag(
            rules::PQ_ISSUER_WEAKER,
            theirs < level,
            format!("ML-DSA-{level} key certified by an ML-DSA-{theirs} issuer"),
        );
    }
}

fn signature_rules(
    der: &[u8],
    facts: &Facts,
    ctx: &Context<'_>,
    verify_signature: bool,
    flag: &mut impl FnMut(Rule, bool, String),
) {
    let oid = facts.signature_algorithm_oid.as_str();
    let weak = WEAK_SIGNATURES.iter().find(|(o, _)| *o == oid);
    // A root's self-signature protects nothing (trust comes from the
    // anchor store), so a weak one there is not an error.
    flag(
        rules::WEAK_HASH,
        weak.is_some() && ctx.role != Role::Root,
        format!(
            "signed with {} ({})",
            facts.signature_algorithm,
            weak.map_or("", |(_, h)| h)
        ),
    );
    flag(
        rules::UNKNOWN_SIGNATURE,
        weak.is_none() && !GOOD_SIGNATURES.contains(&oid),
        format!(
            "signature algorithm {} is unknown to Ward",
            facts.signature_algorithm
        ),
    );
    let Some(issuer_der) = ctx.issuer.filter(|_| verify_signature) else {
        return;
    };
    // x509-parser cannot check every algorithm; only a definite "does not
    // verify" with a known-good algorithm is reported.
    if weak.is_some() || !GOOD_SIGNATURES.contains(&oid) {
        return;
    }
    let (Ok((_, cert)), Ok((_, issuer))) = (
        X509Certificate::from_der(der),
        X509Certificate::from_der(issuer_der),
    ) else {
        return;
    };
    if let Err(x509_parser::error::X509Error::SignatureVerificationError) =
        crate::sig::verify_cert(&cert, issuer.public_key())
    {
        flag(
            rules::ISSUER_SIGNATURE,
            true,
            format!(
                "the signature does not verify with the key of {}",
                issuer.subject()
            ),
        );
    }
}

fn lifetime_rules(
    facts: &Facts,
    ctx: &Context<'_>,
    issuer: Option<&Facts>,
    policy: &LintPolicy,
    flag: &mut impl FnMut(Rule, bool, String),
) {
    let now = ctx.now.unix_timestamp();
    let left = facts.not_after_unix - now;
    flag(
        rules::EXPIRED,
        left < 0,
        format!("expired at {} ({} ago)", facts.not_after, human(-left)),
    );
    flag(
        rules::NOT_YET_VALID,
        now < facts.not_before_unix,
        format!(
            "valid only from {} (in {})",
            facts.not_before,
            human(facts.not_before_unix - now)
        ),
    );
    let days = i64::from(policy.expiry_warning_days) * 86_400;
    let threshold = days.min(facts.lifetime_seconds / 3);
    flag(
        rules::EXPIRING_SOON,
        left >= 0 && threshold > 0 && left < threshold,
        format!("expires at {} (in {})", facts.not_after, human(left)),
    );
    if ctx.role == Role::Leaf {
        let lifetime = facts.lifetime_seconds;
        let (rule, max, what) = if facts.is_svid() {
            (
                rules::MAX_WORKLOAD,
                policy.max_workload_lifetime,
                "workload (SPIFFE)",
            )
        } else {
            (rules::MAX_SERVER, policy.max_server_lifetime, "server")
        };
        let limit = secs(max) + secs(policy.backdate_allowance);
        flag(
            rule,
            lifetime > limit,
            format!(
                "lifetime {} exceeds the {what} maximum of {}",
                human(lifetime),
                humanize(max)
            ),
        );
    }
    if let Some(issuer) = issuer {
        flag(
            rules::OUTLIVES_ISSUER,
            !facts.self_issued && facts.not_after_unix > issuer.not_after_unix,
            format!(
                "valid until {}, after its issuer expires at {}",
                facts.not_after, issuer.not_after
            ),
        );
    }
}

fn svid_rules(facts: &Facts, flag: &mut impl FnMut(Rule, bool, String)) {
    let spiffe = facts.spiffe_uris();
    if spiffe.is_empty() {
        return;
    }
    flag(
        rules::SVID_ONE_URI,
        facts.uris.len() != 1,
        format!(
            "{} URI SANs ({}); an X509-SVID has exactly one",
            facts.uris.len(),
            facts.uris.join(", ")
        ),
    );
    for uri in spiffe {
        flag(
            rules::SVID_VALID_ID,
            !Facts::spiffe_uri_valid(uri),
            format!("{uri:?} is not a valid SPIFFE ID"),
        );
    }
    flag(
        rules::SVID_LEAF_NOT_CA,
        facts.is_ca,
        "a leaf X509-SVID with basicConstraints cA true".into(),
    );
}

fn policy_rules(facts: &Facts, policy: &LintPolicy, flag: &mut impl FnMut(Rule, bool, String)) {
    let missing: Vec<&str> = policy
        .required_eku
        .iter()
        .filter(|e| !facts.has_eku(e.oid()))
        .map(|e| e.name())
        .collect();
    flag(
        rules::REQUIRED_EKU,
        !missing.is_empty(),
        format!("extendedKeyUsage lacks {}", missing.join(", ")),
    );
    for san in facts.all_sans() {
        if let Some(p) = policy.san_deny.iter().find(|p| p.matches(san)) {
            flag(
                rules::SAN_DENIED,
                true,
                format!("SAN {san} matches the denied pattern {p}"),
            );
        }
        flag(
            rules::SAN_NOT_ALLOWED,
            !policy.san_allow.is_empty() && !policy.san_allow.iter().any(|p| p.matches(san)),
            format!("SAN {san} matches no allowed pattern"),
        );
    }
    let missing: Vec<&str> = policy
        .required_policy_oids
        .iter()
        .map(|o| o.as_str())
        .filter(|o| !facts.policies.iter().any(|p| p == o))
        .collect();
    flag(
        rules::REQUIRED_POLICY,
        !missing.is_empty(),
        format!("certificatePolicies lacks {}", missing.join(", ")),
    );
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn human(secs: i64) -> String {
    humanize(Duration::from_secs(secs.max(0).unsigned_abs()))
}
