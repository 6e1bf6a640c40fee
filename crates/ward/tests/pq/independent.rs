//! The independent judge: `tests/pq/verify_mldsa.py` on pyca
//! `cryptography`, plus `openssl verify` when the system OpenSSL is 3.5+.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{OutputText, Pki};

/// The judge's script, next to this file.
pub(crate) fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pq/verify_mldsa.py").to_owned()
}

/// Runs the Python judge on `root` + `chain` (+ `--key`, `--crl`, `--ocsp`
/// files). Returns the JSON report, or `None` (after saying why) when this
/// machine's `cryptography` cannot do ML-DSA and `CI` is unset; under CI
/// that is a failure.
pub(crate) fn judge(root: &Path, chain: &Path, extra: &[(&str, &Path)]) -> Option<Value> {
    let mut cmd = Command::new("python3");
    cmd.arg(script()).arg(root).arg(chain);
    for (flag, path) in extra {
        cmd.arg(flag).arg(path);
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "python3 is missing: {e}");
            println!("skipped: python3 is missing ({e})");
            return None;
        }
    };
    let report: Value = serde_json::from_str(&out.stdout_text()).unwrap_or_else(|e| {
        panic!(
            "the judge printed no JSON ({e}): {}{}",
            out.stdout_text(),
            out.stderr_text()
        )
    });
    if out.status.code() == Some(3) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs pyca cryptography with ML-DSA (pip install 'cryptography>=48'): {report}"
        );
        println!("skipped: {report}");
        return None;
    }
    assert!(out.status.success(), "the judge refused: {report}");
    println!(
        "verified by {} : {}",
        report["implementation"], report["checked"]
    );
    Some(report)
}

/// The system `openssl` version, when it is 3.5 or newer (the first with
/// ML-DSA); prints why not otherwise.
pub(crate) fn openssl_with_ml_dsa() -> Option<String> {
    let out = Command::new("openssl").arg("version").output().ok()?;
    let text = out.stdout_text();
    let version = text.split_whitespace().nth(1)?.to_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next()?, parts.next()?);
    if major > 3 || (major == 3 && minor >= 5) {
        Some(version)
    } else {
        println!("openssl {version} has no ML-DSA (3.5+ needed): judged by pyca cryptography only");
        None
    }
}

#[test]
fn every_parameter_set_is_verified_by_an_independent_implementation() {
    for kt in ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"] {
        let pki = Pki::init(&["--key-type", kt]);
        let leaf = pki.issue(
            "peer",
            "spiffe://example.org/ns/pq",
            &["--key-type", kt, "--dns", "pq.example.org"],
        );
        let chain = leaf.with_extension("crt");
        let key = leaf.with_extension("key");
        let Some(report) = judge(&pki.root(), &chain, &[("--key", &key)]) else {
            return;
        };
        let checked: Vec<&str> = report["checked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let level = kt.trim_start_matches("ml-dsa-");
        // Leaf, intermediate and root signatures, each ML-DSA of the set.
        assert_eq!(
            checked
                .iter()
                .filter(|c| c.ends_with(&format!("ML-DSA-{level} signature")))
                .count(),
            3,
            "{kt}: {report}"
        );
        assert!(
            checked.iter().any(|c| c.starts_with("PKCS#8")),
            "{kt}: {report}"
        );
        if let Some(version) = openssl_with_ml_dsa() {
            let (ok, text) = crate::common::openssl_verify(&pki.root(), &chain, "sslclient");
            assert!(ok, "openssl {version} refused the {kt} chain: {text}");
            println!("verified by openssl {version}");
        }
    }
}

#[test]
fn a_forged_ml_dsa_chain_is_refused_by_the_judge_and_by_ward() {
    let pki = Pki::init(&["--key-type", "ml-dsa-65"]);
    let other = Pki::init(&["--key-type", "ml-dsa-65"]);
    let leaf = other.issue(
        "client",
        "spiffe://example.org/ns/x",
        &["--key-type", "ml-dsa-65"],
    );
    let chain = leaf.with_extension("crt");
    // The chain of another CA against this root: the intermediate's
    // signature does not verify with this root's key.
    let out = Command::new("python3")
        .arg(script())
        .arg(pki.root())
        .arg(&chain)
        .output()
        .unwrap();
    if out.status.code() == Some(3) {
        assert!(std::env::var_os("CI").is_none(), "{}", out.stdout_text());
        println!("skipped: {}", out.stdout_text());
    } else {
        assert_eq!(out.status.code(), Some(1), "{}", out.stdout_text());
        let report: Value = serde_json::from_str(&out.stdout_text()).unwrap();
        assert!(
            report["failed"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str().unwrap().contains("InvalidSignature")),
            "{report}"
        );
    }
    let out = crate::common::ward(&[
        "cert",
        "verify",
        chain.to_str().unwrap(),
        "--roots",
        pki.root().to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", out.stdout_text());
    let out = crate::common::ward(&[
        "cert",
        "verify",
        chain.to_str().unwrap(),
        "--roots",
        other.root().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        out.stdout_text(),
        out.stderr_text()
    );
}

#[test]
fn inspect_and_lint_describe_ml_dsa_certificates() {
    let pki = Pki::init(&["--key-type", "ml-dsa-87"]);
    let leaf = pki.issue(
        "client",
        "spiffe://example.org/ns/i",
        &["--key-type", "ml-dsa-44"],
    );
    let chain = leaf.with_extension("crt");
    let out = crate::common::ward(&[
        "cert",
        "inspect",
        chain.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let json: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let certs = json["certificates"].as_array().unwrap();
    assert_eq!(certs[0]["key"]["type"], "ml-dsa", "{json}");
    assert_eq!(certs[0]["key"]["level"], 44, "{json}");
    assert_eq!(certs[0]["signature_algorithm"], "ML-DSA-87", "{json}");
    assert_eq!(certs[1]["key"]["level"], 87, "{json}");
    // Text form names the key too.
    let out = crate::common::ward(&["cert", "inspect", chain.to_str().unwrap()]);
    assert!(
        out.stdout_text().contains("ML-DSA-44"),
        "{}",
        out.stdout_text()
    );
    // lint: a clean chain (no errors); the ML-DSA-44 leaf under an
    // ML-DSA-87 issuer is fine (stronger issuer).
    let out = crate::common::ward(&["cert", "lint", chain.to_str().unwrap(), "--format", "json"]);
    let text = out.stdout_text();
    assert!(out.status.success(), "{text}{}", out.stderr_text());
    assert!(!text.contains("wkey.") && !text.contains("wsig."), "{text}");
}
