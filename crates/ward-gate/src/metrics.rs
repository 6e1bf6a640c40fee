//! The gate's metric families (SPEC §6).

use ward_telemetry::{CounterVec, DEFAULT_LATENCY_BUCKETS, GaugeVec, HistogramVec, Registry};

/// Handles to every gate metric.
#[derive(Debug, Clone)]
pub struct GateMetrics {
    /// `ward_gate_handshakes_total{result,reason,tls_version,cipher,group,alpn}`.
    pub handshakes: CounterVec,
    /// `ward_gate_handshake_seconds`.
    pub handshake_seconds: HistogramVec,
    /// `ward_gate_requests_total{route,status}`.
    pub requests: CounterVec,
    /// `ward_gate_upstream_seconds{route}`.
    pub upstream_seconds: HistogramVec,
    /// `ward_gate_connections_active`.
    pub connections_active: GaugeVec,
    /// `ward_gate_cert_expiry_seconds{tenant}`.
    pub cert_expiry: GaugeVec,
    /// `ward_gate_reloads_total{result}`.
    pub reloads: CounterVec,
    /// `ward_gate_denied_total{tenant,route}`: authorization refusals.
    pub denied: CounterVec,
}

impl GateMetrics {
    /// Registers the families.
    pub fn register(r: &Registry) -> Result<Self, ward_telemetry::Error> {
        Ok(GateMetrics {
            handshakes: r.counter(
                "ward_gate_handshakes_total",
                "TLS handshakes by result and reason, with the negotiated parameters.",
                &["result", "reason", "tls_version", "cipher", "group", "alpn"],
            )?,
            handshake_seconds: r.histogram(
                "ward_gate_handshake_seconds",
                "Time from accepting a connection to the end of its TLS handshake.",
                &[],
                DEFAULT_LATENCY_BUCKETS,
            )?,
            requests: r.counter(
                "ward_gate_requests_total",
                "HTTP requests by route and status.",
                &["route", "status"],
            )?,
            upstream_seconds: r.histogram(
                "ward_gate_upstream_seconds",
                "Time until the upstream's response headers, by route.",
                &["route"],
                DEFAULT_LATENCY_BUCKETS,
            )?,
            connections_active: r.gauge(
                "ward_gate_connections_active",
                "Client connections open now.",
                &[],
            )?,
            cert_expiry: r.gauge(
                "ward_gate_cert_expiry_seconds",
                "Seconds until each tenant's server certificate expires.",
                &["tenant"],
            )?,
            reloads: r.counter(
                "ward_gate_reloads_total",
                "Configuration reloads by result.",
                &["result"],
            )?,
            denied: r.counter(
                "ward_gate_denied_total",
                "Requests and connections refused by authorization.",
                &["tenant", "route"],
            )?,
        })
    }
}
