//! Lint tests: the committed hostile fixtures, certificates crafted with
//! rcgen to break one rule each, Rego policies, and a seeded property test
//! that everything Ward's issuance builds passes every rule.

use std::collections::BTreeSet;
use std::time::Duration;

use rcgen::{CertificateParams, CustomExtension, IsCa, KeyPair, SerialNumber};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::*;

mod issuance;
use crate::pem;

fn fixture(name: &str) -> Vec<CertificateDer<'static>> {
    let path = format!(
        "{}/../ward-testkit/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    pem::parse_certs(&std::fs::read(&path).unwrap()).unwrap()
}

/// The fixtures live for a century; lift the lifetime caps so each hostile
/// fixture shows only its own flaw.
fn long_lived() -> LintPolicy {
    LintPolicy {
        max_workload_lifetime: Duration::from_secs(40_000 * 86_400),
        max_server_lifetime: Duration::from_secs(40_000 * 86_400),
        ..LintPolicy::default()
    }
}

fn ids(findings: &[Finding], at_least: Severity) -> BTreeSet<String> {
    findings
        .iter()
        .filter(|f| f.severity >= at_least)
        .map(|f| f.id.clone())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn lint_leaf(chain: &[CertificateDer<'_>], policy: &LintPolicy) -> Vec<Finding> {
    let ctx = Context {
        role: Role::Leaf,
        issuer: chain.get(1).map(|c| c.as_ref()),
        now: OffsetDateTime::now_utc(),
    };
    lint(&chain[0], &ctx, policy)
}

#[test]
fn each_hostile_fixture_breaks_exactly_its_rule() {
    let intermediate = fixture("intermediate.crt");
    for (name, want) in [
        ("server.crt", &[][..]),
        ("client.crt", &[]),
        ("peer.crt", &[]),
        ("missing-intermediate.crt", &[]),
        ("wrong-td.crt", &[]),
        ("server-only.crt", &[]),
        ("expired.crt", &["wlife.expired"]),
        ("not-yet-valid.crt", &["wlife.not_yet_valid"]),
        ("ca-leaf.crt", &["wsvid.leaf_not_ca"]),
        ("two-uris.crt", &["wsvid.one_uri"]),
        ("rsa-1024.crt", &["wkey.rsa_size"]),
        ("sha1.crt", &["wsig.weak_hash"]),
    ] {
        let mut chain = fixture(name);
        if chain.len() == 1 {
            chain.push(intermediate[0].clone());
        }
        let found = lint_leaf(&chain, &long_lived());
        assert_eq!(
            ids(&found, Severity::Error),
            set(want),
            "{name}: {found:#?}"
        );
    }
    // No EKU is a warning for the linter (a verifier's refusal is an error).
    let found = lint_leaf(&fixture("no-eku.crt"), &long_lived());
    assert_eq!(ids(&found, Severity::Warning), set(&["w5280.eku_missing"]));
    // The imposter's own chain is consistent; against the real intermediate
    // neither its key identifier nor its signature fit.
    let mut imposter = fixture("imposter.crt");
    assert!(ids(&lint_leaf(&imposter, &long_lived()), Severity::Error).is_empty());
    imposter[1] = intermediate[0].clone();
    assert_eq!(
        ids(&lint_leaf(&imposter, &long_lived()), Severity::Error),
        set(&["w5280.aki_matches_issuer", "wsig.issuer_signature"])
    );
}

#[test]
fn fixture_cas_pass_as_cas_and_fail_as_leaves() {
    let linter = Linter::new(long_lived(), None);
    let mut chain = fixture("peer.crt");
    chain.extend(fixture("root.crt"));
    let reports = linter.lint_chain(&chain, OffsetDateTime::now_utc());
    let roles: Vec<Role> = reports.iter().map(|r| r.role).collect();
    assert_eq!(roles, [Role::Leaf, Role::Intermediate, Role::Root]);
    for r in &reports {
        assert!(ids(&r.findings, Severity::Warning).is_empty(), "{r:#?}");
    }
    let as_leaf = lint_leaf(&fixture("intermediate.crt"), &long_lived());
    assert!(ids(&as_leaf, Severity::Error).contains("w5280.leaf_not_ca"));
}

#[test]
fn default_lifetimes_flag_long_lived_leaves() {
    // A century-long SVID breaks the 24 h workload cap.
    let found = lint_leaf(&fixture("peer.crt"), &LintPolicy::default());
    assert_eq!(ids(&found, Severity::Error), set(&["wlife.max_workload"]));
    // Without a SPIFFE ID, the 398-day server cap applies.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["web.example.org".into()]).unwrap();
    params.not_before = OffsetDateTime::now_utc();
    params.not_after = params.not_before + time::Duration::days(399);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let der = params.self_signed(&key).unwrap().der().clone();
    let found = lint_leaf(&[der], &LintPolicy::default());
    assert!(
        ids(&found, Severity::Error).contains("wlife.max_server"),
        "{found:#?}"
    );
}

/// A leaf signed by a throwaway CA, shaped by `edit`.
fn crafted(edit: impl FnOnce(&mut CertificateParams)) -> Vec<CertificateDer<'static>> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_der = ca.self_signed(&ca_key).unwrap().der().clone();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["svc.example.org".into()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&[0x11; 16]));
    params.not_before = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    params.not_after = params.not_before + time::Duration::hours(2);
    edit(&mut params);
    let der = params.signed_by(&key, &issuer).unwrap().der().clone();
    vec![der, ca_der]
}

#[test]
fn crafted_certificates_break_one_rule_each() {
    let policy = LintPolicy::default();
    assert!(lint_leaf(&crafted(|_| {}), &policy).is_empty());
    type Edit = Box<dyn FnOnce(&mut CertificateParams)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "w5280.serial_positive",
            Box::new(|p| p.serial_number = Some(SerialNumber::from_slice(&[0]))),
        ),
        (
            "w5280.serial_length",
            Box::new(|p| p.serial_number = Some(SerialNumber::from_slice(&[0x11; 21]))),
        ),
        (
            "w5280.serial_entropy",
            Box::new(|p| p.serial_number = Some(SerialNumber::from_slice(&[0x11; 4]))),
        ),
        (
            "w5280.validity_order",
            Box::new(|p| std::mem::swap(&mut p.not_before, &mut p.not_after)),
        ),
        (
            "w5280.ku_eku_consistent",
            Box::new(|p| p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment]),
        ),
        (
            "w5280.leaf_key_cert_sign",
            Box::new(|p| p.key_usages.push(rcgen::KeyUsagePurpose::CrlSign)),
        ),
        (
            "w5280.eku_any",
            Box::new(|p| {
                p.extended_key_usages
                    .push(rcgen::ExtendedKeyUsagePurpose::Any)
            }),
        ),
        (
            "w5280.san_present",
            Box::new(|p| p.subject_alt_names.clear()),
        ),
        (
            "w5280.aki_present",
            Box::new(|p| p.use_authority_key_identifier_extension = false),
        ),
        (
            "w5280.control_chars",
            Box::new(|p| {
                p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                    uris: vec!["http://ca.example/crl\r\nX-Injected: 1".into()],
                }]
            }),
        ),
        (
            "w5280.control_chars",
            Box::new(|p| {
                p.subject_alt_names.push(rcgen::SanType::URI(
                    "https://svc.example.org/\n".try_into().unwrap(),
                ))
            }),
        ),
        (
            "w5280.control_chars",
            Box::new(|p| {
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, "svc\u{0}.example.org")
            }),
        ),
        (
            "w5280.critical_unknown",
            Box::new(|p| {
                let mut ext = CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 99999, 1],
                    vec![0x05, 0x00],
                );
                ext.set_criticality(true);
                p.custom_extensions.push(ext);
            }),
        ),
        (
            "wsvid.one_uri",
            Box::new(|p| {
                for u in ["spiffe://example.org/a", "https://example.org/"] {
                    p.subject_alt_names
                        .push(rcgen::SanType::URI(u.try_into().unwrap()));
                }
            }),
        ),
        (
            "wsvid.valid_id",
            Box::new(|p| {
                p.subject_alt_names.push(rcgen::SanType::URI(
                    "spiffe://Example.org/a".try_into().unwrap(),
                ))
            }),
        ),
        (
            "wsvid.leaf_not_ca",
            Box::new(|p| {
                p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p.subject_alt_names.push(rcgen::SanType::URI(
                    "spiffe://example.org/a".try_into().unwrap(),
                ));
            }),
        ),
        (
            "wlife.max_workload",
            Box::new(|p| {
                p.subject_alt_names.push(rcgen::SanType::URI(
                    "spiffe://example.org/a".try_into().unwrap(),
                ));
                p.not_after = p.not_before + time::Duration::hours(25);
            }),
        ),
        (
            "wlife.expiring_soon",
            Box::new(|p| p.not_before -= time::Duration::hours(5)),
        ),
    ];
    // rcgen always writes a positive serial: make a negative one by hand
    // (the signature breaks too, which the issuer rule reports).
    let mut chain = crafted(|_| {});
    let leaf = chain[0].to_vec();
    let at = leaf
        .windows(3)
        .position(|w| w == [0x02, 0x10, 0x11])
        .unwrap();
    let mut negative = leaf.clone();
    negative[at + 2] = 0x91;
    chain[0] = CertificateDer::from(negative);
    let found = ids(&lint_leaf(&chain, &policy), Severity::Error);
    assert_eq!(
        found,
        set(&["w5280.serial_positive", "wsig.issuer_signature"])
    );
    for (want, edit) in cases {
        let found = lint_leaf(&crafted(edit), &policy);
        assert!(
            found.iter().any(|f| f.id == want),
            "expected {want}: {found:#?}"
        );
    }
}

#[test]
fn site_policy_rules_and_overrides() {
    let chain = crafted(|p| {
        p.subject_alt_names.push(rcgen::SanType::DnsName(
            "admin.example.org".try_into().unwrap(),
        ));
    });
    let policy = LintPolicy::from_toml(
        r#"
        required_eku = ["clientAuth"]
        san_allow = ["*.example.org"]
        san_deny = ["admin.**"]
        required_policy_oids = ["2.23.140.1.2.1"]
        "#,
    )
    .unwrap();
    let found = lint_leaf(&chain, &policy);
    assert_eq!(
        ids(&found, Severity::Error),
        set(&[
            "wpolicy.required_eku",
            "wpolicy.san_denied",
            "wpolicy.required_policy_oid"
        ])
    );
    let strict = LintPolicy::from_toml("san_allow = [\"web.example.org\"]").unwrap();
    assert!(ids(&lint_leaf(&chain, &strict), Severity::Error).contains("wpolicy.san_not_allowed"));
    let relaxed = LintPolicy::from_toml(
        "required_eku = [\"clientAuth\"]\ndisable = [\"wpolicy.required_eku\"]\n[severity]\n\"w5280.ski_leaf\" = \"error\"",
    )
    .unwrap();
    let found = lint_leaf(&chain, &relaxed);
    assert!(!found.iter().any(|f| f.id == "wpolicy.required_eku"));
}

const REGO: &str = r#"
package ward.lint

deny_long_lived contains msg if {
    input.role == "leaf"
    input.certificate.lifetime_seconds > 3600
    msg := sprintf("lives %d seconds", [input.certificate.lifetime_seconds])
}

warn_rsa contains "RSA key" if input.certificate.key.type == "rsa"

notice_dns contains {"msg": name} if {
    some name in input.certificate.dns_names
}

helper := true
"#;

#[test]
fn rego_rules_become_findings() {
    let rego = RegoPolicy::compile("site.rego", REGO).unwrap();
    let linter = Linter::new(LintPolicy::default(), Some(rego));
    let chain = crafted(|_| {});
    let ctx = Context {
        role: Role::Leaf,
        issuer: Some(&chain[1]),
        now: OffsetDateTime::now_utc(),
    };
    let found = linter.lint(&chain[0], &ctx);
    let deny = found
        .iter()
        .find(|f| f.id == "rego.deny_long_lived")
        .unwrap();
    assert_eq!(deny.severity, Severity::Error);
    assert!(deny.message.starts_with("lives 7"), "{deny:?}");
    let notice = found.iter().find(|f| f.id == "rego.notice_dns").unwrap();
    assert_eq!(
        (notice.severity, notice.message.as_str()),
        (Severity::Notice, "svc.example.org")
    );
    assert!(
        !found
            .iter()
            .any(|f| f.id == "rego.warn_rsa" || f.id == "rego.helper")
    );

    assert!(RegoPolicy::compile("x.rego", "package other\ndeny contains 1 if true").is_err());
    assert!(RegoPolicy::compile("x.rego", "package ward.lint\ndeny contains").is_err());
    let broken = RegoPolicy::compile(
        "x.rego",
        "package ward.lint\ndeny contains msg if { msg := 1 / 0 }",
    )
    .unwrap();
    let found = Linter::new(LintPolicy::default(), Some(broken)).lint(&chain[0], &ctx);
    let error = found.iter().find(|f| f.id == "rego.error").unwrap();
    assert_eq!(error.severity, Severity::Error, "{found:#?}");
}

#[test]
fn the_rule_catalog_is_documented_and_unique() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/lint-rules.md"
    ))
    .unwrap();
    let mut seen = BTreeSet::new();
    for rule in rules::ALL.iter().chain(rules::check::ALL) {
        assert!(seen.insert(rule.id), "duplicate id {}", rule.id);
        assert!(rules::find(rule.id).is_some());
        let row = format!("| `{}` | {} |", rule.id, rule.severity);
        assert!(doc.contains(&row), "docs/lint-rules.md lacks the row {row}");
    }
}

#[test]
fn names_follow_webpki() {
    let chain = fixture("server.crt");
    assert!(valid_for_name(&chain[0], "localhost").unwrap());
    assert!(valid_for_name(&chain[0], "127.0.0.1").unwrap());
    assert!(!valid_for_name(&chain[0], "example.org").unwrap());
    assert!(valid_for_name(&chain[0], "not a name").is_err());
}
