//! The one error type of the telemetry crate.

use std::path::PathBuf;

/// What can go wrong while registering metrics, opening an audit sink or
/// installing the tracing subscriber.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A metric name does not match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name {name:?}")]
    InvalidMetricName {
        /// The rejected name.
        name: String,
    },
    /// A label name does not match `[a-zA-Z_][a-zA-Z0-9_]*`, starts with the
    /// reserved `__`, is repeated, or is `le` on a histogram.
    #[error("invalid label name {label:?} on metric {metric:?}: {reason}")]
    InvalidLabelName {
        /// The metric being registered.
        metric: String,
        /// The rejected label name.
        label: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// Histogram bucket bounds are not finite and strictly increasing.
    #[error("invalid buckets for histogram {name:?}: {reason}")]
    InvalidBuckets {
        /// The histogram being registered.
        name: String,
        /// Which rule the bounds broke.
        reason: &'static str,
    },
    /// The name is already registered with another type, label set or buckets.
    #[error("metric {name:?} is already registered as {existing}, not {requested}")]
    Conflict {
        /// The metric name.
        name: String,
        /// The registered family, e.g. `counter{route,status}`.
        existing: String,
        /// The family asked for.
        requested: String,
    },
    /// Two families would expose the same sample name (e.g. histogram `x`
    /// and counter `x_count`).
    #[error("metric {name:?} would expose the same sample names as {other:?}")]
    NameClash {
        /// The metric being registered.
        name: String,
        /// The registered family it clashes with.
        other: String,
    },
    /// The number of label values does not match the family's label names.
    #[error("metric {name:?} has {expected} label(s), got {got} value(s)")]
    LabelCount {
        /// The metric name.
        name: String,
        /// How many label names the family has.
        expected: usize,
        /// How many values were given.
        got: usize,
    },
    /// The audit log file could not be opened.
    #[error("cannot open audit log {path}: {source}")]
    AuditSink {
        /// The file path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A log filter (the default one or `RUST_LOG`) could not be parsed.
    #[error("invalid log filter {filter:?} (from {origin}): {source}")]
    LogFilter {
        /// The filter text.
        filter: String,
        /// Where it came from: `RUST_LOG` or `default`.
        origin: &'static str,
        /// The parser's complaint.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `RUST_LOG` is set but is not valid UTF-8.
    #[error("RUST_LOG is not valid UTF-8")]
    LogFilterNotUnicode,
    /// The global tracing subscriber (or `log` bridge) is already installed.
    #[error("cannot install the tracing subscriber (one is already set): {source}")]
    TracingInit {
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
