//! The agent's metrics, in its own registry.

use std::time::SystemTime;

use ward_telemetry::{CounterVec, Error, GaugeVec, Registry};

/// Every metric the agent exports.
#[derive(Clone)]
pub struct Metrics {
    /// The registry rendered on `/metrics`.
    pub registry: Registry,
    /// `ward_agent_svid_expiry_seconds`: seconds until the current
    /// certificate expires (set when rendered).
    pub expiry: GaugeVec,
    /// `ward_agent_renewals_total{result}`: ok, error, revoked, refused.
    pub renewals: CounterVec,
    /// `ward_agent_on_rotate_total{result}`: ok, failed, timeout.
    pub on_rotate: CounterVec,
    /// `ward_agent_file_writes_total{result}`: ok, error.
    pub writes: CounterVec,
}

impl Metrics {
    /// Registers the metrics in a fresh registry.
    pub fn new() -> Result<Self, Error> {
        let r = Registry::new();
        Ok(Metrics {
            expiry: r.gauge(
                "ward_agent_svid_expiry_seconds",
                "Seconds until the current X.509-SVID expires (negative once expired).",
                &[],
            )?,
            renewals: r.counter(
                "ward_agent_renewals_total",
                "Renewal attempts by result (ok, error, revoked, refused).",
                &["result"],
            )?,
            on_rotate: r.counter(
                "ward_agent_on_rotate_total",
                "Runs of the --on-rotate command by result (ok, failed, timeout).",
                &["result"],
            )?,
            writes: r.counter(
                "ward_agent_file_writes_total",
                "Writes of the identity files by result (ok, error).",
                &["result"],
            )?,
            registry: r,
        })
    }

    /// Prometheus text, with the expiry gauge computed for `now`.
    pub fn render(&self, not_after: Option<SystemTime>, now: SystemTime) -> String {
        if let Some(not_after) = not_after {
            let seconds = match not_after.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            self.expiry.with(&[]).set_f64(seconds);
        }
        self.registry.render()
    }
}
