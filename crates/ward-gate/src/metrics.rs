//! The gate's metric families (SPEC §6).

use ward_telemetry::{
    CounterVec, DEFAULT_LATENCY_BUCKETS, Gauge, GaugeVec, HistogramVec, Registry,
};

/// Handles to every gate metric.
#[derive(Debug, Clone)]
pub struct GateMetrics {
    /// `ward_gate_handshakes_total{result,reason,tenant,tls_version,cipher,group,alpn}`
    /// (`tenant` is the one the SNI chose; empty before that).
    pub handshakes: CounterVec,
    /// `ward_gate_handshake_seconds{tenant,result}`.
    pub handshake_seconds: HistogramVec,
    /// `ward_gate_requests_total{route,status,grpc_status}` (`grpc_status`
    /// empty for a request that is not gRPC, `-` for a call without one).
    pub requests: CounterVec,
    /// `ward_gate_upstream_seconds{route}`.
    pub upstream_seconds: HistogramVec,
    /// `ward_gate_connections_active`.
    pub connections_active: GaugeVec,
    /// Its one series, resolved once (it has no labels).
    pub connections_active_all: Gauge,
    /// `ward_gate_passthrough_total{route,result}`: passthrough connections
    /// (`forwarded`, `refused`, `closed`).
    pub passthrough: CounterVec,
    /// `ward_gate_passthrough_bytes_total{route,direction}` (`in`: from
    /// the client), counted when a connection closes.
    pub passthrough_bytes: CounterVec,
    /// `ward_gate_proxy_protocol_total{version,result}`: PROXY headers.
    pub proxy_protocol: CounterVec,
    /// `ward_gate_would_refuse_total{reason}`: what audit-mode tenants let
    /// through that strict mode would have refused.
    pub would_refuse: CounterVec,
    /// `ward_gate_cert_expiry_seconds{tenant}`.
    pub cert_expiry: GaugeVec,
    /// `ward_gate_cert_lifetime_seconds{tenant}`: notAfter − notBefore of
    /// each tenant's server certificate (alerts compare the expiry to it).
    pub cert_lifetime: GaugeVec,
    /// `ward_gate_reloads_total{result}`.
    pub reloads: CounterVec,
    /// `ward_gate_denied_total{tenant,route}`: authorization refusals.
    pub denied: CounterVec,
    /// `ward_gate_crl_refresh_total{source,result}`.
    pub crl_refresh: CounterVec,
    /// `ward_gate_crl_next_update_seconds{source}`: negative once past.
    pub crl_next_update: GaugeVec,
    /// `ward_gate_crl_age_seconds{source}`: since the CRL's thisUpdate.
    pub crl_age: GaugeVec,
    /// `ward_gate_crl_stale{source}`: 1 while no current CRL is in force.
    pub crl_stale: GaugeVec,
    /// `ward_gate_crl_entries{source}`: revoked serials listed.
    pub crl_entries: GaugeVec,
    /// `ward_gate_crl_stale_accepts_total`: certificates accepted on a
    /// stale CRL (fail-open).
    pub crl_stale_accepts: CounterVec,
    /// `ward_gate_revocation_closed_total{reason}`: open connections closed
    /// because a CRL update refused their certificate.
    pub revocation_closed: CounterVec,
    /// `ward_gate_ocsp_staple_total{tenant,result}`: OCSP fetches for the
    /// gate's own certificates.
    pub ocsp_staple: CounterVec,
    /// `ward_gate_ocsp_stapled{tenant}`: 1 while a response is stapled.
    pub ocsp_stapled: GaugeVec,
    /// `ward_gate_ocsp_next_update_seconds{tenant}`: of the stapled response.
    pub ocsp_next_update: GaugeVec,
    /// `ward_gate_verify_cache_total{result}`: client chains found in the
    /// chain cache (`hit`) or validated in full (`miss`).
    pub verify_cache: CounterVec,
    /// `ward_gate_endpoint_requests_total{route,endpoint,result}`: requests
    /// (TCP: connections) sent to each endpoint of a balanced route, by
    /// result (`success`, `server_error`, `connect_failure`, `failure`,
    /// `overflow`).
    pub endpoint_requests: CounterVec,
    /// `ward_gate_endpoint_healthy{route,endpoint}`: 1 while the endpoint
    /// passes its health checks (always 1 without checks).
    pub endpoint_healthy: GaugeVec,
    /// `ward_gate_endpoint_ejected{route,endpoint}`: 1 while ejected.
    pub endpoint_ejected: GaugeVec,
    /// `ward_gate_endpoint_ejections_total{route,endpoint}`.
    pub endpoint_ejections: CounterVec,
    /// `ward_gate_endpoint_active_requests{route,endpoint}`: in flight now.
    pub endpoint_active: GaugeVec,
    /// `ward_gate_endpoint_retries_total{route}`: requests sent again to
    /// another endpoint.
    pub endpoint_retries: CounterVec,
}

impl GateMetrics {
    /// Registers the families.
    pub fn register(r: &Registry) -> Result<Self, ward_telemetry::Error> {
        let handshake_seconds = r.histogram(
            "ward_gate_handshake_seconds",
            "Time from accepting a connection to the end of its TLS handshake, by tenant and result.",
            &["tenant", "result"],
            DEFAULT_LATENCY_BUCKETS,
        )?;
        let connections_active = r.gauge(
            "ward_gate_connections_active",
            "Client connections open now.",
            &[],
        )?;
        Ok(GateMetrics {
            endpoint_requests: r.counter(
                "ward_gate_endpoint_requests_total",
                "Requests (TCP: connections) sent to each endpoint of a balanced route, by result (success, server_error, connect_failure, failure, overflow).",
                &["route", "endpoint", "result"],
            )?,
            endpoint_healthy: r.gauge(
                "ward_gate_endpoint_healthy",
                "1 while an endpoint passes its active health checks (1 without checks).",
                &["route", "endpoint"],
            )?,
            endpoint_ejected: r.gauge(
                "ward_gate_endpoint_ejected",
                "1 while an endpoint is ejected after consecutive failures.",
                &["route", "endpoint"],
            )?,
            endpoint_ejections: r.counter(
                "ward_gate_endpoint_ejections_total",
                "Times an endpoint was ejected after consecutive failures.",
                &["route", "endpoint"],
            )?,
            endpoint_active: r.gauge(
                "ward_gate_endpoint_active_requests",
                "Requests (TCP: connections) in flight to an endpoint.",
                &["route", "endpoint"],
            )?,
            endpoint_retries: r.counter(
                "ward_gate_endpoint_retries_total",
                "Requests sent again to another endpoint of a balanced route.",
                &["route"],
            )?,
            verify_cache: r.counter(
                "ward_gate_verify_cache_total",
                "Client certificate chains by chain-cache lookup result (hit: path validation skipped; miss: validated in full). Revocation and EKU checks run on both.",
                &["result"],
            )?,
            connections_active_all: connections_active.try_with(&[])?,
            passthrough: r.counter(
                "ward_gate_passthrough_total",
                "SNI passthrough connections by route and result (forwarded, refused, closed).",
                &["route", "result"],
            )?,
            passthrough_bytes: r.counter(
                "ward_gate_passthrough_bytes_total",
                "Bytes passed through by route and direction (in: from the client), counted at close.",
                &["route", "direction"],
            )?,
            proxy_protocol: r.counter(
                "ward_gate_proxy_protocol_total",
                "PROXY protocol headers by version and result (accepted, refused).",
                &["version", "result"],
            )?,
            would_refuse: r.counter(
                "ward_gate_would_refuse_total",
                "Connections and requests an audit-mode tenant let through that strict mode would refuse, by reason.",
                &["reason"],
            )?,
            handshake_seconds,
            connections_active,
            handshakes: r.counter(
                "ward_gate_handshakes_total",
                "TLS handshakes by result and reason, with the negotiated parameters.",
                &["result", "reason", "tenant", "tls_version", "cipher", "group", "alpn"],
            )?,
            requests: r.counter(
                "ward_gate_requests_total",
                "HTTP requests by route, status and (for gRPC calls) grpc-status.",
                &["route", "status", "grpc_status"],
            )?,
            upstream_seconds: r.histogram(
                "ward_gate_upstream_seconds",
                "Time until the upstream's response headers, by route.",
                &["route"],
                DEFAULT_LATENCY_BUCKETS,
            )?,
            cert_expiry: r.gauge(
                "ward_gate_cert_expiry_seconds",
                "Seconds until each tenant's server certificate expires.",
                &["tenant"],
            )?,
            cert_lifetime: r.gauge(
                "ward_gate_cert_lifetime_seconds",
                "Total lifetime (notAfter - notBefore) of each tenant's server certificate.",
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
            crl_refresh: r.counter(
                "ward_gate_crl_refresh_total",
                "CRL fetches by source and result (updated, not_modified, unchanged, fetch_failed, malformed, pending, untrusted, unsupported, rollback, not_yet_valid).",
                &["source", "result"],
            )?,
            crl_next_update: r.gauge(
                "ward_gate_crl_next_update_seconds",
                "Seconds until the nextUpdate of each source's CRL in force (negative once past).",
                &["source"],
            )?,
            crl_age: r.gauge(
                "ward_gate_crl_age_seconds",
                "Seconds since the thisUpdate of each source's CRL in force.",
                &["source"],
            )?,
            crl_stale: r.gauge(
                "ward_gate_crl_stale",
                "1 while a source has no CRL in force or its CRL is past nextUpdate.",
                &["source"],
            )?,
            crl_entries: r.gauge(
                "ward_gate_crl_entries",
                "Revoked serials listed in each source's CRL in force.",
                &["source"],
            )?,
            crl_stale_accepts: r.counter(
                "ward_gate_crl_stale_accepts_total",
                "Client certificates accepted although their issuer's CRL is past nextUpdate (fail-open).",
                &[],
            )?,
            revocation_closed: r.counter(
                "ward_gate_revocation_closed_total",
                "Open connections closed because a CRL update refused their certificate.",
                &["reason"],
            )?,
            ocsp_staple: r.counter(
                "ward_gate_ocsp_staple_total",
                "OCSP fetches for the gate's own certificates by tenant and result.",
                &["tenant", "result"],
            )?,
            ocsp_stapled: r.gauge(
                "ward_gate_ocsp_stapled",
                "1 while a tenant's certificate has an OCSP response stapled.",
                &["tenant"],
            )?,
            ocsp_next_update: r.gauge(
                "ward_gate_ocsp_next_update_seconds",
                "Seconds until the nextUpdate of the stapled OCSP response.",
                &["tenant"],
            )?,
        })
    }
}
