//! Log lines that a peer cannot blow up: each line is bounded in length,
//! and each target's lines are rate-limited.
//!
//! Much of what a server logs is driven by what its peers send, before any
//! authentication: rustls warns about an invalid SNI and quotes it (one
//! 65,000-byte name, one 65,000-character line), h2 warns once per
//! connection that resets streams too fast. [`Bounded`] sits between the
//! formatter and stderr: a line longer than [`MAX_LINE`] bytes is cut (in
//! JSON lines, each long string value is cut, so the line stays JSON), and
//! each target may write [`LINES_PER_SECOND`] lines a second; the lines
//! over that are dropped and counted, and the target's next line that
//! passes is preceded by one "suppressed K lines" line. The rate can be
//! changed with the `WARD_LOG_RATE` environment variable (lines per second
//! per target).

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// Longest line written, in bytes (newline excluded).
pub const MAX_LINE: usize = 4096;
/// Longest string value kept whole in a JSON line, in characters.
pub const MAX_JSON_STRING: usize = 512;
/// Lines one target may write per second (unless `WARD_LOG_RATE` says).
pub const LINES_PER_SECOND: u32 = 20;

/// The rate from `WARD_LOG_RATE`, else [`LINES_PER_SECOND`].
pub fn rate_from_env() -> u32 {
    std::env::var("WARD_LOG_RATE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(LINES_PER_SECOND)
}

/// A per-target line budget.
#[derive(Debug)]
struct Budget {
    window: Instant,
    used: u32,
    suppressed: u64,
}

/// Bounds the lines written to `W` (see the module docs).
#[derive(Debug)]
pub struct Bounded<W> {
    inner: W,
    per_second: u32,
    budgets: Arc<Mutex<HashMap<String, Budget>>>,
}

impl<W> Bounded<W> {
    /// Wraps a writer factory (`std::io::stderr`).
    pub fn new(inner: W) -> Self {
        Self::with_rate(inner, LINES_PER_SECOND)
    }

    /// Wraps a writer factory with a rate other than [`LINES_PER_SECOND`].
    pub fn with_rate(inner: W, per_second: u32) -> Self {
        Bounded {
            inner,
            per_second: per_second.max(1),
            budgets: Arc::default(),
        }
    }

    /// Whether a line of `target` may be written now; when it may, also
    /// how many lines were suppressed since the last one written.
    fn admit(&self, target: &str) -> Option<u64> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let budget = match budgets.get_mut(target) {
            Some(b) => b,
            None => budgets.entry(target.to_owned()).or_insert(Budget {
                window: now,
                used: 0,
                suppressed: 0,
            }),
        };
        if now.duration_since(budget.window).as_secs() >= 1 {
            budget.window = now;
            budget.used = 0;
        }
        if budget.used >= self.per_second {
            budget.suppressed += 1;
            return None;
        }
        budget.used += 1;
        Some(std::mem::take(&mut budget.suppressed))
    }
}

/// The writer for one line.
#[derive(Debug)]
pub struct Line<W> {
    inner: Option<W>,
    target: String,
    suppressed: u64,
    per_second: u32,
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Bounded<W> {
    type Writer = Line<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            inner: Some(self.inner.make_writer()),
            target: String::new(),
            suppressed: 0,
            per_second: self.per_second,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        match self.admit(meta.target()) {
            Some(suppressed) => Line {
                inner: Some(self.inner.make_writer_for(meta)),
                target: if suppressed > 0 {
                    meta.target().to_owned()
                } else {
                    String::new()
                },
                suppressed,
                per_second: self.per_second,
            },
            None => Line {
                inner: None,
                target: String::new(),
                suppressed: 0,
                per_second: self.per_second,
            },
        }
    }
}

impl<W: Write> Write for Line<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(inner) = &mut self.inner else {
            return Ok(buf.len());
        };
        if self.suppressed > 0 {
            let json = buf.first() == Some(&b'{');
            let note = summary(&self.target, self.suppressed, self.per_second, json);
            self.suppressed = 0;
            inner.write_all(note.as_bytes())?;
        }
        inner.write_all(&bound(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(inner) => inner.flush(),
            None => Ok(()),
        }
    }
}

/// The line that stands for suppressed ones, in the format of the line
/// that follows it.
fn summary(target: &str, count: u64, per_second: u32, json: bool) -> String {
    let message =
        format!("suppressed {count} log line(s) from {target} (more than {per_second} a second)");
    if json {
        let mut line = serde_json::json!({
            "level": "WARN",
            "target": "ward_telemetry",
            "message": message,
        })
        .to_string();
        line.push('\n');
        line
    } else {
        format!("WARN ward_telemetry: {message}\n")
    }
}

/// `line` cut to [`MAX_LINE`] bytes; a JSON object keeps its shape, with
/// long string values cut instead.
fn bound(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    if body.len() <= MAX_LINE {
        return std::borrow::Cow::Borrowed(line);
    }
    if body.first() == Some(&b'{')
        && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body)
    {
        cut_strings(&mut value);
        let mut out = value.to_string().into_bytes();
        if out.len() <= MAX_LINE {
            out.push(b'\n');
            return std::borrow::Cow::Owned(out);
        }
    }
    let mut end = MAX_LINE;
    while end > 0 && !is_char_start(body[end]) {
        end -= 1;
    }
    let mut out = body[..end].to_vec();
    out.extend_from_slice(format!("… [{} bytes cut]\n", body.len() - end).as_bytes());
    std::borrow::Cow::Owned(out)
}

fn is_char_start(b: u8) -> bool {
    // Not a UTF-8 continuation byte.
    b & 0xC0 != 0x80
}

fn cut_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.chars().count() > MAX_JSON_STRING => {
            let total = s.chars().count();
            let kept: String = s.chars().take(MAX_JSON_STRING).collect();
            *s = format!("{kept}… [{} characters cut]", total - MAX_JSON_STRING);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(cut_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(cut_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer factory collecting into a shared buffer.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    fn subscriber(sink: &Sink, json: bool) -> tracing::Dispatch {
        let builder = tracing_subscriber::fmt()
            .with_writer(Bounded::with_rate(sink.clone(), 5))
            .with_ansi(false);
        if json {
            tracing::Dispatch::new(builder.json().flatten_event(true).finish())
        } else {
            tracing::Dispatch::new(builder.finish())
        }
    }

    #[test]
    fn long_lines_are_cut_and_json_stays_json() {
        let huge = "a".repeat(65_000);
        for json in [false, true] {
            let sink = Sink::default();
            tracing::dispatcher::with_default(&subscriber(&sink, json), || {
                tracing::warn!(target: "rustls::msgs", sni = %huge, "Illegal SNI hostname received");
            });
            let out = text(&sink);
            let line = out.lines().next().unwrap();
            assert!(line.len() <= MAX_LINE + 64, "{json}: {} bytes", line.len());
            assert!(line.contains("cut"), "{line}");
            if json {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["message"], "Illegal SNI hostname received");
            }
        }
    }

    #[test]
    fn floods_are_rate_limited_with_a_summary() {
        let sink = Sink::default();
        let dispatch = subscriber(&sink, false);
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..100 {
                tracing::warn!(target: "h2::proto", i, "locally-reset streams reached limit");
            }
            tracing::warn!(target: "ward_gate", "another target has its own budget");
        });
        let out = text(&sink);
        assert_eq!(out.matches("locally-reset").count(), 5, "{out}");
        assert!(out.contains("another target"));
        // The next window: one summary line, then the line itself.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::warn!(target: "h2::proto", "locally-reset streams reached limit");
        });
        let out = text(&sink);
        assert!(
            out.contains("suppressed 95 log line(s) from h2::proto"),
            "{out}"
        );
        assert_eq!(out.matches("locally-reset").count(), 6, "{out}");
    }

    #[test]
    fn short_lines_pass_unchanged() {
        assert_eq!(&*bound(b"hello\n"), b"hello\n");
        let cut = bound("é".repeat(3000).as_bytes()).into_owned();
        assert!(String::from_utf8(cut).is_ok());
    }
}
