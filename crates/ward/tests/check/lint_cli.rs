//! `ward cert lint` on files: fixtures, Ward-issued certificates, policies
//! with Rego rules, the Rego input document against its schema, and the
//! exit statuses.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::{OutputText, Pki, ward};
use crate::validate;
use ward_testkit::fixture;

fn lint(args: &[&str]) -> (i32, serde_json::Value) {
    let mut argv = vec!["cert", "lint"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--format", "json"]);
    let out = ward(&argv);
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 1, "exit {code}: {}", out.stderr_text());
    (code, serde_json::from_str(&out.stdout_text()).unwrap())
}

fn ids(report: &serde_json::Value, severities: &[&str]) -> BTreeSet<String> {
    report["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["findings"].as_array().unwrap())
        .filter(|f| severities.contains(&f["severity"].as_str().unwrap()))
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn fixtures_are_reported_under_their_rule_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("p.toml");
    std::fs::write(&policy, "max_workload_lifetime = \"40000d\"\n").unwrap();
    for (name, want) in [
        ("sha1.crt", "wsig.weak_hash"),
        ("rsa-1024.crt", "wkey.rsa_size"),
        ("two-uris.crt", "wsvid.one_uri"),
        ("expired.crt", "wlife.expired"),
    ] {
        let (code, report) = lint(&[p(&fixture(name)), "--policy", p(&policy)]);
        assert_eq!(code, 1, "{name}");
        assert_eq!(
            ids(&report, &["error"]).into_iter().collect::<Vec<_>>(),
            [want],
            "{name}: {report:#}"
        );
    }
    // Default policy: a century-long SVID breaks the 24 h workload cap.
    let (code, report) = lint(&[p(&fixture("peer.crt"))]);
    assert_eq!(code, 1);
    assert!(ids(&report, &["error"]).contains("wlife.max_workload"));
    // A CA file is linted as a CA; as a leaf it fails.
    assert_eq!(lint(&[p(&fixture("root.crt"))]).0, 0);
    let (code, report) = lint(&[
        p(&fixture("ca-leaf.crt")),
        "--role",
        "leaf",
        "--policy",
        p(&policy),
    ]);
    assert_eq!(code, 1);
    assert!(ids(&report, &["error"]).contains("wsvid.leaf_not_ca"));
    // --fail-on decides what fails.
    let (code, _) = lint(&[p(&fixture("no-eku.crt")), "--policy", p(&policy)]);
    assert_eq!(code, 0);
    let (code, report) = lint(&[
        p(&fixture("no-eku.crt")),
        "--policy",
        p(&policy),
        "--fail-on",
        "warning",
    ]);
    assert_eq!(code, 1);
    assert_eq!(report["passed"], false);
}

#[test]
fn certificates_from_ward_cert_create_pass_every_rule() {
    let pki = Pki::init(&[]);
    for (i, key_type) in ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"]
        .iter()
        .enumerate()
    {
        for profile in ["server", "client", "peer"] {
            let prefix = pki.issue(
                profile,
                &format!("spiffe://example.org/ns{i}/{profile}"),
                &["--dns", "svc.example.org", "--key-type", key_type],
            );
            let (code, report) = lint(&[p(&prefix.with_extension("crt"))]);
            assert_eq!(code, 0, "{key_type} {profile}: {report:#}");
            assert!(
                ids(&report, &["error", "warning", "notice"]).is_empty(),
                "{key_type} {profile}: {report:#}"
            );
        }
    }
}

#[test]
fn rego_rules_and_the_input_schema() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("site.rego"),
        r#"package ward.lint

deny_localhost contains msg if {
    input.role == "leaf"
    some name in input.certificate.dns_names
    name == "localhost"
    msg := sprintf("%s is not a production name", [name])
}
"#,
    )
    .unwrap();
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        "max_workload_lifetime = \"40000d\"\nrego = \"site.rego\"\n",
    )
    .unwrap();
    let (code, report) = lint(&[p(&fixture("server.crt")), "--policy", p(&policy)]);
    assert_eq!(code, 1);
    let finding = &report["certificates"][0]["findings"][0];
    assert_eq!(finding["id"], "rego.deny_localhost", "{report:#}");
    assert_eq!(finding["message"], "localhost is not a production name");
    let (code, _) = lint(&[p(&fixture("client.crt")), "--policy", p(&policy)]);
    assert_eq!(code, 0);

    // The Rego input of assorted certificates matches the committed schema.
    for name in [
        "server.crt",
        "rsa-1024.crt",
        "sha1.crt",
        "ca-leaf.crt",
        "no-eku.crt",
        "root.crt",
        "imposter.crt",
    ] {
        let out = ward(&["cert", "lint", p(&fixture(name)), "--rego-input"]);
        assert!(out.status.success(), "{}", out.stderr_text());
        validate("lint-input.schema.json", &out.stdout_text());
    }
}

#[test]
fn bad_policies_and_inputs_are_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("typo.toml");
    std::fs::write(&typo, "max_server_lifetme = \"1d\"\n").unwrap();
    let no_rego = tmp.path().join("no-rego.toml");
    std::fs::write(&no_rego, "rego = \"missing.rego\"\n").unwrap();
    let not_cert = tmp.path().join("x.pem");
    std::fs::write(&not_cert, "hello").unwrap();
    for args in [
        vec![
            "cert",
            "lint",
            p(&fixture("server.crt")),
            "--policy",
            p(&typo),
        ],
        vec![
            "cert",
            "lint",
            p(&fixture("server.crt")),
            "--policy",
            p(&no_rego),
        ],
        vec!["cert", "lint", p(&not_cert)],
        vec![
            "cert",
            "lint",
            p(&fixture("server.crt")),
            "--fail-on",
            "fatal",
        ],
    ] {
        let out = ward(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            out.stderr_text()
        );
        assert!(out.stdout_text().is_empty());
    }
    let out = ward(&[
        "cert",
        "lint",
        p(&fixture("server.crt")),
        "--policy",
        p(&typo),
    ]);
    assert!(
        out.stderr_text().contains("max_server_lifetme"),
        "{}",
        out.stderr_text()
    );
}
