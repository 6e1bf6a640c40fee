//! Prometheus text exposition format 0.0.4.
//!
//! Output is deterministic (families by name, children by label values) so
//! tests can compare it exactly. Values are read without locks; a scrape
//! racing with updates sees each value at some recent moment, not one global
//! instant.

use std::fmt::Write as _;

use crate::family::{Family, Metric};
use crate::metrics::Histogram;
use crate::registry::Entry;

/// Renders the families, already sorted by name.
pub(crate) fn render(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(256 * entries.len());
    for entry in entries {
        match entry {
            Entry::Counter(f) => render_family(&mut out, &f.0, "counter", |out, labels, c| {
                sample(out, &f.0.name, "", labels, None, c.get());
            }),
            Entry::Gauge(f) => render_family(&mut out, &f.0, "gauge", |out, labels, g| {
                sample(out, &f.0.name, "", labels, None, Float(g.get()));
            }),
            Entry::Histogram(f) => render_family(&mut out, &f.0, "histogram", |out, labels, h| {
                render_histogram(out, &f.0.name, labels, h);
            }),
        }
    }
    out
}

/// `# HELP`, `# TYPE`, then each child's samples; nothing for a family
/// without children.
fn render_family<M: Metric>(
    out: &mut String,
    family: &Family<M>,
    type_name: &str,
    mut render_child: impl FnMut(&mut String, &str, &M),
) {
    let children = family.sorted_children();
    if children.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {} {}", family.name, EscapeHelp(&family.help));
    let _ = writeln!(out, "# TYPE {} {type_name}", family.name);
    for (values, metric) in &children {
        let mut labels = String::new();
        for (i, (name, value)) in family.label_names.iter().zip(values.iter()).enumerate() {
            if i > 0 {
                labels.push(',');
            }
            let _ = write!(labels, "{name}=\"{}\"", EscapeLabel(value));
        }
        render_child(out, &labels, metric);
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let (cumulative, sum) = histogram.snapshot();
    let bounds = histogram.bounds();
    for (i, count) in cumulative.iter().enumerate() {
        let le = match bounds.get(i) {
            Some(bound) => Float(*bound).to_string(),
            None => "+Inf".to_owned(),
        };
        sample(out, name, "_bucket", labels, Some(("le", &le)), count);
    }
    sample(out, name, "_sum", labels, None, Float(sum));
    let count = cumulative.last().copied().unwrap_or(0);
    sample(out, name, "_count", labels, None, count);
}

/// One line: `name_suffix{labels,extra} value`. `labels` is pre-escaped;
/// `extra` (`le`) needs no escaping.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some((key, val)) = extra {
            if !labels.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{val}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// An `f64` as the format spells it: `+Inf`, `-Inf`, `NaN`, else decimal.
struct Float(f64);

impl std::fmt::Display for Float {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v.is_infinite() {
            f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{v}")
        }
    }
}

/// Help text: `\` and newline escaped.
struct EscapeHelp<'a>(&'a str);

impl std::fmt::Display for EscapeHelp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        escape(f, self.0, false)
    }
}

/// Label values: `\`, `"` and newline escaped.
struct EscapeLabel<'a>(&'a str);

impl std::fmt::Display for EscapeLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        escape(f, self.0, true)
    }
}

fn escape(f: &mut std::fmt::Formatter<'_>, s: &str, quote: bool) -> std::fmt::Result {
    let mut rest = s;
    while let Some(pos) = rest.find(|c| c == '\\' || c == '\n' || (quote && c == '"')) {
        let (head, tail) = rest.split_at(pos);
        f.write_str(head)?;
        let mut chars = tail.chars();
        match chars.next() {
            Some('\\') => f.write_str("\\\\")?,
            Some('\n') => f.write_str("\\n")?,
            Some('"') => f.write_str("\\\"")?,
            _ => {}
        }
        rest = chars.as_str();
    }
    f.write_str(rest)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
