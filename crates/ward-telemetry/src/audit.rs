//! The audit log: one JSON object per line, one line per handshake or
//! request (SPEC §6), to stdout, stderr or an append-only file.
//!
//! Each line is built in full before a mutex is taken and written with one
//! `write_all`, so lines from concurrent callers never interleave. A failed
//! write must never take the service down: it is counted and logged (at
//! increasing intervals, so a full disk does not flood the logs), and the
//! caller carries on. Events must never carry keys, tokens or passwords.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

use crate::Error;

/// A thread-safe JSON-lines audit writer. Cloning is cheap and shares the
/// sink.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when auditing is off: events are not even serialized.
    sink: Option<Mutex<Box<dyn Write + Send>>>,
    failures: AtomicU64,
}

impl AuditLog {
    /// An audit log writing to `writer` (for tests: a [`MemorySink`]).
    pub fn to_writer(writer: Box<dyn Write + Send>) -> Self {
        Self {
            inner: Arc::new(Inner {
                sink: Some(Mutex::new(writer)),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// An audit log that drops every event without serializing it.
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(Inner {
                sink: None,
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// `"stdout"`, `"stderr"`, or a file path, opened for appending and
    /// created with mode 0600 (an existing file keeps its mode). Write
    /// `./stdout` for a file of that name.
    pub fn from_spec(spec: &str) -> Result<Self, Error> {
        let writer: Box<dyn Write + Send> = match spec {
            "stdout" => Box::new(io::stdout()),
            "stderr" => Box::new(io::stderr()),
            path => {
                let mut options = OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let file = options.open(path).map_err(|source| Error::AuditSink {
                    path: PathBuf::from(path),
                    source,
                })?;
                Box::new(file)
            }
        };
        Ok(Self::to_writer(writer))
    }

    /// Writes `event` as one JSON line. An object gets a leading `"time"`
    /// field (RFC 3339 UTC, milliseconds) unless it already has one; any
    /// other JSON value is wrapped as `{"time": ..., "event": value}`.
    /// Failures are counted in [`AuditLog::failures`], never returned.
    pub fn record<T: Serialize + ?Sized>(&self, event: &T) {
        if self.inner.sink.is_none() {
            return;
        }
        match serde_json::to_vec(event) {
            Ok(body) => self.write_line(&stamp(body, &now_rfc3339_millis())),
            Err(error) => self.fail("serialization", &error),
        }
    }

    /// Whether events are written at all; callers skip building events
    /// when not.
    pub fn is_enabled(&self) -> bool {
        self.inner.sink.is_some()
    }

    /// How many events were lost to serialization or write errors.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    fn write_line(&self, line: &[u8]) {
        let Some(sink) = &self.inner.sink else {
            return;
        };
        let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
        let result = sink.write_all(line).and_then(|()| sink.flush());
        drop(sink);
        if let Err(error) = result {
            self.fail("write", &error);
        }
    }

    fn fail(&self, stage: &str, error: &dyn std::fmt::Display) {
        let failures = self.inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
        // Log the 1st, 2nd, 4th, 8th... failure: visible, but bounded.
        if failures.is_power_of_two() {
            tracing::error!(%error, stage, failures, "audit event lost");
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

/// The serialized event, time-stamped if needed, with its newline.
fn stamp(body: Vec<u8>, time: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + time.len() + 24);
    match body.strip_prefix(b"{") {
        Some(_) if has_time(&body) => line.extend_from_slice(&body),
        Some(rest) => {
            line.extend_from_slice(b"{\"time\":\"");
            line.extend_from_slice(time.as_bytes());
            line.push(b'"');
            if rest != b"}" {
                line.push(b',');
            }
            line.extend_from_slice(rest);
        }
        None => {
            line.extend_from_slice(b"{\"time\":\"");
            line.extend_from_slice(time.as_bytes());
            line.extend_from_slice(b"\",\"event\":");
            line.extend_from_slice(&body);
            line.push(b'}');
        }
    }
    line.push(b'\n');
    line
}

/// Whether a serialized JSON object has a top-level `"time"` key (whatever
/// its value, even `null`).
fn has_time(object: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "present")]
        time: bool,
    }
    fn present<'de, D: Deserializer<'de>>(value: D) -> Result<bool, D::Error> {
        IgnoredAny::deserialize(value).map(|_| true)
    }
    // A parse error here can only be a duplicate "time" key: it has one.
    serde_json::from_slice::<Probe>(object).map_or(true, |probe| probe.time)
}

/// Now, as `2025-01-02T03:04:05.678Z`.
fn now_rfc3339_millis() -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// An in-memory audit sink shared with a test: clone it, hand one clone to
/// [`AuditLog::to_writer`], read the lines from the other.
#[derive(Clone, Debug, Default)]
pub struct MemorySink(Arc<Mutex<Vec<u8>>>);

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything written so far, as lines (lossily decoded as UTF-8).
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.contents())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for MemorySink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
