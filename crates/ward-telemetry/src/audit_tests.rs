//! Audit line shape, time stamps, concurrency and failure handling.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::thread;

use serde::Serialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::*;

fn log() -> (AuditLog, MemorySink) {
    let sink = MemorySink::new();
    (AuditLog::to_writer(Box::new(sink.clone())), sink)
}

#[derive(Serialize)]
struct Handshake<'a> {
    remote: &'a str,
    result: &'a str,
    spiffe_id: Option<&'a str>,
    duration_ms: f64,
}

#[test]
fn objects_get_a_leading_millisecond_utc_time() {
    let (audit, sink) = log();
    audit.record(&Handshake {
        remote: "127.0.0.1:5555",
        result: "ok",
        spiffe_id: Some("spiffe://example.org/a"),
        duration_ms: 1.5,
    });
    let lines = sink.lines();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert!(line.starts_with("{\"time\":\""), "{line}");
    // Field order of the event is preserved after the time.
    assert!(
        line.ends_with(
            ",\"remote\":\"127.0.0.1:5555\",\"result\":\"ok\",\
             \"spiffe_id\":\"spiffe://example.org/a\",\"duration_ms\":1.5}"
        ),
        "{line}"
    );
    let value: Value = serde_json::from_str(line).unwrap();
    let time = value["time"].as_str().unwrap();
    assert_eq!(time.len(), "2025-01-02T03:04:05.678Z".len(), "{time}");
    assert!(time.ends_with('Z'), "{time}");
    let parsed = OffsetDateTime::parse(time, &Rfc3339).unwrap();
    let age = OffsetDateTime::now_utc() - parsed;
    assert!(age.whole_seconds().abs() < 60, "{time}");
    assert_eq!(sink.contents().last(), Some(&b'\n'));
}

#[test]
fn an_existing_time_is_kept() {
    let (audit, sink) = log();
    audit.record(&json!({"time": "2020-01-01T00:00:00.000Z", "x": 1}));
    audit.record(&json!({"x": 2, "time": null}));
    let lines = sink.lines();
    assert_eq!(lines[0], r#"{"time":"2020-01-01T00:00:00.000Z","x":1}"#);
    let second: BTreeMap<String, Value> = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second.len(), 2);
    assert_eq!(second["time"], Value::Null);
}

#[test]
fn empty_objects_and_non_objects_are_stamped() {
    let (audit, sink) = log();
    audit.record(&BTreeMap::<String, u8>::new());
    audit.record("just a string");
    audit.record(&[1, 2]);
    let lines = sink.lines();
    let empty: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(empty.as_object().unwrap().len(), 1);
    assert!(empty["time"].is_string());
    let wrapped: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(wrapped["event"], "just a string");
    let wrapped: Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(wrapped["event"], json!([1, 2]));
}

#[test]
fn newlines_inside_values_stay_escaped_on_one_line() {
    let (audit, sink) = log();
    audit.record(&json!({"subject": "CN=evil\n{\"forged\":true}"}));
    let lines = sink.lines();
    assert_eq!(lines.len(), 1);
    let v: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["subject"], "CN=evil\n{\"forged\":true}");
}

#[test]
fn concurrent_writers_never_interleave_lines() {
    const THREADS: usize = 8;
    const EVENTS: usize = 500;
    let (audit, sink) = log();
    thread::scope(|s| {
        for t in 0..THREADS {
            let audit = audit.clone();
            s.spawn(move || {
                let padding = "x".repeat(64 * (t + 1));
                for seq in 0..EVENTS {
                    audit.record(&json!({"thread": t, "seq": seq, "padding": padding}));
                }
            });
        }
    });
    let text = String::from_utf8(sink.contents()).unwrap();
    assert!(text.ends_with('\n'));
    let mut seen = HashSet::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["time"].is_string());
        let key = (v["thread"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
        assert!(seen.insert(key), "duplicate {key:?}");
    }
    assert_eq!(seen.len(), THREADS * EVENTS);
    assert_eq!(audit.failures(), 0);
}

struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("disk full"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_failures_are_counted_not_fatal() {
    let audit = AuditLog::to_writer(Box::new(Broken));
    for _ in 0..5 {
        audit.record(&json!({"a": 1}));
    }
    assert_eq!(audit.failures(), 5);
}

#[test]
fn serialization_failures_are_counted_not_fatal() {
    let (audit, sink) = log();
    let mut bad = HashMap::new();
    bad.insert((1_u8, 2_u8), 3_u8); // JSON object keys must be strings
    audit.record(&bad);
    assert_eq!(audit.failures(), 1);
    assert!(sink.contents().is_empty());
}

#[test]
fn file_sink_appends_and_is_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let path_str = path.to_str().unwrap();
    AuditLog::from_spec(path_str)
        .unwrap()
        .record(&json!({"n": 1}));
    AuditLog::from_spec(path_str)
        .unwrap()
        .record(&json!({"n": 2}));
    let text = std::fs::read_to_string(&path).unwrap();
    let ns: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [1, 2]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn unopenable_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = AuditLog::from_spec(dir.path().to_str().unwrap()).unwrap_err();
    assert!(matches!(err, Error::AuditSink { .. }), "{err}");
    assert!(AuditLog::from_spec("stdout").is_ok());
    assert!(AuditLog::from_spec("stderr").is_ok());
}
