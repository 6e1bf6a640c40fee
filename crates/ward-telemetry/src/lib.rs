//! Telemetry for Ward: metrics, audit lines and logs.
//!
//! - [`Registry`] is a small Prometheus registry owned by one CA or gate
//!   instance (never process-global, so parallel in-process tests do not see
//!   each other's numbers) and rendered by [`Registry::render`] on that
//!   instance's own `/metrics` route.
//! - [`AuditLog`] writes one JSON object per line (SPEC §6 audit lines).
//! - [`init_tracing`] installs the process's tracing subscriber.
//!
//! Nothing here may ever record key material, tokens or passwords: callers
//! choose what goes into labels and audit events, and must keep it that way.

#![forbid(unsafe_code)]

mod audit;
pub mod bounded;
mod error;
mod family;
mod metrics;
mod registry;
mod render;
mod subscriber;

pub use audit::{AuditLog, MemorySink};
pub use error::Error;
pub use metrics::{Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec};
pub use registry::{DEFAULT_LATENCY_BUCKETS, Registry};
pub use subscriber::{LogFormat, init_tracing};
