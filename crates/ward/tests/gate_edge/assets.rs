//! The shipped operator assets: `deploy/prometheus` (promtool checks and
//! unit-tests the rules) and `deploy/grafana/ward.json` (valid JSON, and
//! every metric it or the rules name is one Ward's code registers).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::OutputText;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `promtool check rules` and `promtool test rules`; skipped with a
/// message only when promtool is absent outside CI.
pub(crate) fn promtool_rules() {
    let dir = repo().join("deploy/prometheus");
    let Ok(out) = Command::new("promtool")
        .args(["check", "rules", "ward-alerts.yml"])
        .current_dir(&dir)
        .output()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required under CI (Debian package prometheus)"
        );
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        out.stdout_text(),
        out.stderr_text()
    );
    let out = Command::new("promtool")
        .args(["test", "rules", "ward-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
    // Every alert is exercised by the tests.
    let rules = std::fs::read_to_string(dir.join("ward-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("ward-alerts.test.yml")).unwrap();
    for name in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "alert {name} has no test"
        );
    }
}

/// Metric names (`ward_…`) in `text`, histogram suffixes removed.
fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ward_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if before_ok {
            // A histogram's series: `<name>_bucket`, `_sum`, `_count`.
            let whole = &text[start..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| whole.strip_suffix(s))
                .unwrap_or(whole);
            out.push(name.to_owned());
        }
        i = end.max(start + 1);
    }
    out.sort();
    out.dedup();
    out
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The dashboard parses, and it and the rules use only registered metrics.
pub(crate) fn every_metric_exists() {
    let root = repo();
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/ward.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("ward.json is JSON");
    let panels = parsed["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut code = String::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            sources(&src, &mut code);
        }
    }
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/ward-alerts.yml")).unwrap();
    let mut checked = 0;
    for (what, text) in [("ward.json", &dashboard), ("ward-alerts.yml", &rules)] {
        for name in names(text) {
            assert!(
                code.contains(&format!("\"{name}\"")),
                "{what} names {name}, which no crate registers"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} metric names found");
    // The check can fail: a made-up name is not found.
    assert!(!code.contains("\"ward_gate_made_up_total\""));
}
