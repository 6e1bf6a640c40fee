//! RFC 5280 structure rules (`w5280.*`): serial, validity order, basic
//! constraints, key usage against extended key usage, SAN, key identifiers,
//! critical extensions. Each rule reads [`Facts`] only.

use super::facts::Facts;
use super::policy::{EKU_ANY, EKU_CLIENT_AUTH, EKU_SERVER_AUTH};
use super::rules::{self, Rule};
use super::{Finding, Role};

/// Runs every structure rule.
pub(super) fn check(facts: &Facts, role: Role, issuer: Option<&Facts>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut flag = |rule: Rule, cond: bool, message: String| {
        if cond {
            out.push(rule.finding(message));
        }
    };

    flag(
        rules::VERSION,
        facts.version != 3 && !facts.extensions.is_empty(),
        format!("version {} certificate with extensions", facts.version),
    );
    flag(
        rules::SERIAL_POSITIVE,
        facts.serial_negative || facts.serial_zero,
        format!("serial number {} is not positive", facts.serial),
    );
    flag(
        rules::SERIAL_LENGTH,
        facts.serial_octets > 20,
        format!("serial number is {} octets long", facts.serial_octets),
    );
    let magnitude = facts.serial_octets - usize::from(facts.serial.starts_with("00"));
    flag(
        rules::SERIAL_ENTROPY,
        !facts.serial_zero && !facts.serial_negative && magnitude < 8,
        format!("serial number has only {} octets", magnitude),
    );
    flag(
        rules::SIGNATURE_MISMATCH,
        !facts.signature_algorithms_match,
        "the signature algorithm inside the signed part differs from the outer one".into(),
    );
    flag(
        rules::VALIDITY_ORDER,
        facts.not_before_unix > facts.not_after_unix,
        format!(
            "notBefore {} is after notAfter {}",
            facts.not_before, facts.not_after
        ),
    );
    if let Some((field, value, at, c)) = control_char(facts) {
        flag(
            rules::CONTROL_CHARS,
            true,
            format!(
                "{field} {value:?} contains the control character U+{:04X} at byte {at}",
                u32::from(c)
            ),
        );
    }

    match role {
        Role::Leaf => leaf_rules(facts, &mut flag),
        Role::Intermediate | Role::Root => {
            flag(
                rules::CA_BASIC_CONSTRAINTS,
                !(facts.is_ca && facts.basic_constraints_critical),
                if facts.basic_constraints_present {
                    format!(
                        "basicConstraints is cA {}, critical {}",
                        facts.is_ca, facts.basic_constraints_critical
                    )
                } else {
                    "a CA certificate without basicConstraints".into()
                },
            );
            flag(
                rules::CA_KEY_CERT_SIGN,
                !facts.has_key_usage("keyCertSign"),
                "a CA certificate whose keyUsage lacks keyCertSign".into(),
            );
            flag(
                rules::SKI_CA,
                facts.subject_key_id.is_none(),
                "a CA certificate without subjectKeyIdentifier".into(),
            );
        }
    }

    flag(
        rules::KU_CRITICAL,
        facts.key_usage_present && !facts.key_usage_critical,
        "keyUsage is not critical".into(),
    );
    flag(
        rules::AKI_PRESENT,
        !facts.self_issued && facts.authority_key_id.is_none(),
        "no authorityKeyIdentifier keyIdentifier (verifiers use it to find the issuer)".into(),
    );
    if let (Some(aki), Some(issuer)) = (&facts.authority_key_id, issuer)
        && let Some(ski) = &issuer.subject_key_id
    {
        flag(
            rules::AKI_MATCHES_ISSUER,
            aki != ski,
            format!("authorityKeyIdentifier {aki} is not the issuer's subjectKeyIdentifier {ski}"),
        );
    }
    for ext in &facts.extensions {
        flag(
            rules::CRITICAL_UNKNOWN,
            ext.critical && !ext.known,
            format!("critical extension {} is not understood", ext.oid),
        );
        flag(
            rules::MALFORMED_EXTENSION,
            ext.malformed,
            format!("extension {} does not parse", ext.oid),
        );
    }
    out
}

fn leaf_rules(facts: &Facts, flag: &mut impl FnMut(Rule, bool, String)) {
    // An SVID that is a CA is reported by wsvid.leaf_not_ca instead.
    flag(
        rules::LEAF_NOT_CA,
        facts.is_ca && !facts.is_svid(),
        "an end-entity certificate with basicConstraints cA true".into(),
    );
    let signs = ["keyCertSign", "cRLSign"]
        .into_iter()
        .filter(|k| facts.has_key_usage(k))
        .collect::<Vec<_>>();
    flag(
        rules::LEAF_KEY_CERT_SIGN,
        !signs.is_empty() && !facts.is_ca,
        format!(
            "an end-entity certificate with keyUsage {}",
            signs.join(", ")
        ),
    );
    let tls = facts.has_eku(EKU_SERVER_AUTH) || facts.has_eku(EKU_CLIENT_AUTH);
    flag(
        rules::KU_EKU_CONSISTENT,
        tls && facts.key_usage_present && !facts.has_key_usage("digitalSignature"),
        format!(
            "EKU for TLS but keyUsage is {} (TLS 1.3 and ECDHE need digitalSignature)",
            facts.key_usage.join(", ")
        ),
    );
    flag(
        rules::EKU_ANY,
        facts.has_eku(EKU_ANY),
        "extendedKeyUsage contains anyExtendedKeyUsage".into(),
    );
    flag(
        rules::EKU_MISSING,
        !facts.extended_key_usage_present,
        "no extendedKeyUsage: many verifiers accept it for any purpose, Ward refuses it".into(),
    );
    flag(
        rules::SAN_PRESENT,
        !facts.san_present,
        "no subjectAltName: TLS clients match names only there".into(),
    );
    flag(
        rules::SAN_CRITICAL,
        facts.san_present && facts.subject_empty && !facts.san_critical,
        "empty subject but subjectAltName is not critical".into(),
    );
    flag(
        rules::SKI_LEAF,
        facts.subject_key_id.is_none(),
        "no subjectKeyIdentifier".into(),
    );
}

/// The first name or URI holding a control character: (field, value, byte
/// offset, character). Clients that copy these into logs, HTTP requests or
/// access decisions must never meet a CR, LF or NUL there.
fn control_char(facts: &Facts) -> Option<(&'static str, &str, usize, char)> {
    let single = [("subject", &facts.subject), ("issuer", &facts.issuer)];
    let lists: [(&'static str, &Vec<String>); 5] = [
        ("DNS SAN", &facts.dns_names),
        ("URI SAN", &facts.uris),
        ("email SAN", &facts.emails),
        ("CRL distribution point", &facts.crl_urls),
        ("OCSP responder URL", &facts.ocsp_urls),
    ];
    single
        .into_iter()
        .map(|(f, v)| (f, v.as_str()))
        .chain(
            lists
                .into_iter()
                .flat_map(|(f, vs)| vs.iter().map(move |v| (f, v.as_str()))),
        )
        .find_map(|(field, value)| {
            crate::uri::first_control_char(value).map(|(at, c)| (field, value, at, c))
        })
}
