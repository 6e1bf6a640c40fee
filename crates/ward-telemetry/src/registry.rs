//! The registry: the set of metric families one CA or gate instance exposes.
//!
//! It is deliberately not process-global: each instance (and each test that
//! builds one in-process) owns its registry and renders it on its own
//! `/metrics` route. Registration validates names against the Prometheus
//! rules and is idempotent for identical definitions, so two components may
//! both ask for the same family and share it.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::family::Family;
use crate::metrics::{Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec};
use crate::{Error, render};

/// Latency buckets in seconds, from 0.5 ms to 10 s.
pub const DEFAULT_LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A set of metric families, rendered together. Cloning is cheap and shares
/// the families.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    families: Arc<RwLock<BTreeMap<String, Entry>>>,
}

/// One registered family, of any type.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

/// The type of family being registered (with its buckets).
enum Kind {
    Counter,
    Gauge,
    Histogram(Arc<[f64]>),
}

impl Registry {
    /// The HTTP `Content-Type` of [`Registry::render`]'s output.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The HTTP `Content-Type` of [`Registry::render`]'s output.
    pub const fn content_type() -> &'static str {
        Self::CONTENT_TYPE
    }

    /// Registers (or returns the identical, already registered) counter family.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Result<CounterVec, Error> {
        match self.register(name, help, labels, &Kind::Counter)? {
            Entry::Counter(family) => Ok(family),
            other => Err(conflict(name, &other, &Kind::Counter, labels)),
        }
    }

    /// Registers (or returns the identical, already registered) gauge family.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, Error> {
        match self.register(name, help, labels, &Kind::Gauge)? {
            Entry::Gauge(family) => Ok(family),
            other => Err(conflict(name, &other, &Kind::Gauge, labels)),
        }
    }

    /// Registers (or returns the identical, already registered) histogram
    /// family. `buckets` are upper bounds, finite and strictly increasing
    /// (a trailing `+Inf` is accepted and implied anyway).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, Error> {
        let kind = Kind::Histogram(validate_buckets(name, buckets)?);
        match self.register(name, help, labels, &kind)? {
            Entry::Histogram(family) => Ok(family),
            other => Err(conflict(name, &other, &kind, labels)),
        }
    }

    /// All families in Prometheus text exposition format 0.0.4, sorted by
    /// name, children sorted by label values.
    pub fn render(&self) -> String {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let entries: Vec<Entry> = families.values().cloned().collect();
        drop(families);
        render::render(&entries)
    }

    fn register(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        kind: &Kind,
    ) -> Result<Entry, Error> {
        validate_metric_name(name)?;
        validate_label_names(name, labels, matches!(kind, Kind::Histogram(_)))?;
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = families.get(name) {
            return if existing.matches(kind, labels) {
                Ok(existing.clone())
            } else {
                Err(conflict(name, existing, kind, labels))
            };
        }
        let new_samples = sample_names(name, kind);
        for (other_name, other) in families.iter() {
            let other_samples = sample_names(other_name, &other.kind());
            if new_samples.iter().any(|s| other_samples.contains(s)) {
                return Err(Error::NameClash {
                    name: name.to_owned(),
                    other: other_name.clone(),
                });
            }
        }
        let label_names: Box<[String]> = labels.iter().map(|l| (*l).to_owned()).collect();
        let entry = match kind {
            Kind::Counter => Entry::Counter(CounterVec(Arc::new(Family::new(
                name,
                help,
                label_names,
                Counter::default(),
            )))),
            Kind::Gauge => Entry::Gauge(GaugeVec(Arc::new(Family::new(
                name,
                help,
                label_names,
                Gauge::default(),
            )))),
            Kind::Histogram(bounds) => Entry::Histogram(HistogramVec(Arc::new(Family::new(
                name,
                help,
                label_names,
                Histogram::new(Arc::clone(bounds)),
            )))),
        };
        families.insert(name.to_owned(), entry.clone());
        Ok(entry)
    }
}

impl Entry {
    fn label_names(&self) -> &[String] {
        match self {
            Self::Counter(f) => &f.0.label_names,
            Self::Gauge(f) => &f.0.label_names,
            Self::Histogram(f) => &f.0.label_names,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Self::Counter(_) => Kind::Counter,
            Self::Gauge(_) => Kind::Gauge,
            Self::Histogram(f) => Kind::Histogram(Arc::clone(f.0.proto().bounds())),
        }
    }

    fn matches(&self, kind: &Kind, labels: &[&str]) -> bool {
        let same_labels = self
            .label_names()
            .iter()
            .map(String::as_str)
            .eq(labels.iter().copied());
        let same_kind = match (self, kind) {
            (Self::Counter(_), Kind::Counter) | (Self::Gauge(_), Kind::Gauge) => true,
            (Self::Histogram(f), Kind::Histogram(bounds)) => f.0.proto().bounds()[..] == bounds[..],
            _ => false,
        };
        same_labels && same_kind
    }

    fn describe(&self) -> String {
        let labels: Vec<&str> = self.label_names().iter().map(String::as_str).collect();
        describe(&self.kind(), &labels)
    }
}

impl Kind {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram(_) => "histogram",
        }
    }
}

/// E.g. `counter{route,status}` or `histogram{route} buckets [0.1, 1]`.
fn describe(kind: &Kind, labels: &[&str]) -> String {
    let labels = labels.join(",");
    match kind {
        Kind::Histogram(bounds) => format!("histogram{{{labels}}} buckets {bounds:?}"),
        other => format!("{}{{{labels}}}", other.type_name()),
    }
}

fn conflict(name: &str, existing: &Entry, requested: &Kind, labels: &[&str]) -> Error {
    Error::Conflict {
        name: name.to_owned(),
        existing: existing.describe(),
        requested: describe(requested, labels),
    }
}

/// The sample names a family exposes, which must not overlap another's.
fn sample_names(name: &str, kind: &Kind) -> Vec<String> {
    match kind {
        Kind::Counter | Kind::Gauge => vec![name.to_owned()],
        Kind::Histogram(_) => ["", "_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .collect(),
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn validate_metric_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidMetricName {
            name: name.to_owned(),
        })
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed, unique, and not `le` on a
/// histogram.
fn validate_label_names(metric: &str, labels: &[&str], histogram: bool) -> Result<(), Error> {
    for (i, label) in labels.iter().enumerate() {
        let mut chars = label.chars();
        let well_formed = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        let reason = if !well_formed {
            Some("must match [a-zA-Z_][a-zA-Z0-9_]*")
        } else if label.starts_with("__") {
            Some("names starting with __ are reserved")
        } else if histogram && *label == "le" {
            Some("le is reserved on histograms")
        } else if labels[..i].contains(label) {
            Some("repeated")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::InvalidLabelName {
                metric: metric.to_owned(),
                label: (*label).to_owned(),
                reason,
            });
        }
    }
    Ok(())
}

/// Finite, strictly increasing bounds; a trailing `+Inf` is dropped.
fn validate_buckets(name: &str, buckets: &[f64]) -> Result<Arc<[f64]>, Error> {
    let bounds = match buckets.split_last() {
        Some((last, rest)) if last.is_infinite() && last.is_sign_positive() => rest,
        _ => buckets,
    };
    let reason = if bounds.iter().any(|b| !b.is_finite()) {
        Some("bounds must be finite numbers")
    } else if bounds.windows(2).any(|w| w[0] >= w[1]) {
        Some("bounds must be strictly increasing")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidBuckets {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(Arc::from(bounds)),
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
