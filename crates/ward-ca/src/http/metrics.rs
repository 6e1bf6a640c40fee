//! The CA's metric families, registered once per instance.

use ward_telemetry::{CounterVec, DEFAULT_LATENCY_BUCKETS, HistogramVec, Registry};

/// Handles to every CA metric.
#[derive(Debug, Clone)]
pub struct CaMetrics {
    /// `ward_ca_issuance_total{route,result}`: issuance attempts by outcome
    /// (`issued`, or the refusal reason).
    pub issuance: CounterVec,
    /// `ward_ca_issuance_seconds{route}`: time to answer an issuance request.
    pub issuance_seconds: HistogramVec,
    /// `ward_ca_token_uses_total`: token uses consumed.
    pub token_uses: CounterVec,
    /// `ward_ca_rate_limited_total{scope}`: requests refused by a rate limit.
    pub rate_limited: CounterVec,
    /// `ward_ca_admin_requests_total{action,result}`.
    pub admin: CounterVec,
    /// `ward_ca_ocsp_responses_total{result}`: OCSP answers by what they
    /// said (`good`, `revoked`, `unknown`, `mixed`) or the refusal.
    pub ocsp: CounterVec,
}

impl CaMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, ward_telemetry::Error> {
        Ok(CaMetrics {
            issuance: registry.counter(
                "ward_ca_issuance_total",
                "Issuance attempts by route and result (issued or the refusal reason).",
                &["route", "result"],
            )?,
            issuance_seconds: registry.histogram(
                "ward_ca_issuance_seconds",
                "Time to answer an issuance request, by route.",
                &["route"],
                DEFAULT_LATENCY_BUCKETS,
            )?,
            token_uses: registry.counter(
                "ward_ca_token_uses_total",
                "Bootstrap token uses consumed by issued certificates.",
                &[],
            )?,
            rate_limited: registry.counter(
                "ward_ca_rate_limited_total",
                "Requests refused by a rate limit, by scope (address or token).",
                &["scope"],
            )?,
            admin: registry.counter(
                "ward_ca_admin_requests_total",
                "Admin API requests by action and result.",
                &["action", "result"],
            )?,
            ocsp: registry.counter(
                "ward_ca_ocsp_responses_total",
                "OCSP responses by result: the certificates' status or the refusal.",
                &["result"],
            )?,
        })
    }
}
