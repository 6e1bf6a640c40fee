//! Integration tests: the exposition is accepted by a real Prometheus text
//! parser, and tracing setup reports a second installation as an error.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a broken test

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use ward_telemetry::{Error, LogFormat, Registry, init_tracing};

/// Parses stdin with `prometheus_client` and prints every sample as JSON.
const PARSER: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    sys.stderr.write("MISSING_MODULE: %s\n" % e)
    sys.exit(3)
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "documentation": fam.documentation,
                    "name": s.name, "labels": s.labels, "value": repr(float(s.value))})
print(json.dumps(out))
"#;

fn parse_with_prometheus_client(text: &str) -> Vec<Value> {
    let mut child = match Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "this test needs python3 with prometheus_client \
             (`pip install prometheus-client`), but python3 could not be started: {e}"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(3),
        "this test needs the Python package prometheus_client: \
         run `pip install prometheus-client` ({stderr})"
    );
    assert!(
        output.status.success(),
        "prometheus_client rejected the exposition: {stderr}\n---\n{text}"
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn find<'a>(samples: &'a [Value], name: &str, label: Option<(&str, &str)>) -> &'a Value {
    samples
        .iter()
        .find(|s| {
            s["name"] == name && label.is_none_or(|(k, v)| s["labels"][k].as_str() == Some(v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {label:?} in {samples:#?}"))
}

#[test]
fn render_output_is_accepted_by_prometheus_client_parser() {
    let r = Registry::new();
    let hostile = "quote \" backslash \\ newline \n unicode é ✓ brace } comma ,";
    let requests = r
        .counter(
            "ward_gate_requests_total",
            "Requests by route and status; help with \\ and\nnewline.",
            &["route", "status"],
        )
        .unwrap();
    requests.with(&[hostile, "403"]).inc_by(7);
    requests.with(&["/ok", "200"]).inc();
    r.gauge("ward_gate_connections_active", "Open connections.", &[])
        .unwrap()
        .with(&[])
        .set(3);
    let hist = r
        .histogram(
            "ward_gate_handshake_seconds",
            "Handshake latency.",
            &["result"],
            ward_telemetry::DEFAULT_LATENCY_BUCKETS,
        )
        .unwrap();
    let ok = hist.with(&["ok"]);
    for v in [0.0004, 0.003, 0.2, 42.0] {
        ok.observe(v);
    }
    let text = r.render();
    let samples = parse_with_prometheus_client(&text);

    let hostile_sample = find(
        &samples,
        "ward_gate_requests_total",
        Some(("status", "403")),
    );
    assert_eq!(hostile_sample["labels"]["route"], hostile);
    assert_eq!(hostile_sample["value"], "7.0");
    assert_eq!(
        hostile_sample["documentation"],
        "Requests by route and status; help with \\ and\nnewline."
    );
    assert_eq!(hostile_sample["type"], "counter");
    assert_eq!(
        find(&samples, "ward_gate_connections_active", None)["value"],
        "3.0"
    );
    let inf = find(
        &samples,
        "ward_gate_handshake_seconds_bucket",
        Some(("le", "+Inf")),
    );
    assert_eq!(inf["value"], "4.0");
    assert_eq!(inf["type"], "histogram");
    let le_1ms = find(
        &samples,
        "ward_gate_handshake_seconds_bucket",
        Some(("le", "0.001")),
    );
    assert_eq!(le_1ms["value"], "1.0");
    let count = find(&samples, "ward_gate_handshake_seconds_count", None);
    assert_eq!(count["value"], "4.0");
    // 14 finite buckets + Inf + sum + count.
    let hist_samples = samples
        .iter()
        .filter(|s| s["family"] == "ward_gate_handshake_seconds")
        .count();
    assert_eq!(
        hist_samples,
        ward_telemetry::DEFAULT_LATENCY_BUCKETS.len() + 3
    );
}

#[test]
fn second_tracing_init_is_an_error_not_a_panic() {
    // The only test in this binary that installs a subscriber.
    init_tracing(LogFormat::Json, "off").unwrap();
    let err = init_tracing(LogFormat::Text, "off").unwrap_err();
    assert!(matches!(err, Error::TracingInit { .. }), "{err}");
}
