//! Audit mode (`mode = "audit"`, `--mode audit`): a tenant being moved to
//! strict mTLS lets through what strict mode would refuse, and says so:
//! one warning, one audit line and one count in
//! `ward_gate_would_refuse_total{reason}` per would-be refusal. Once that
//! counter stays at zero the tenant can switch to `strict`.
//!
//! A route can have its own mode. A tenant whose routes differ in mode
//! takes every handshake as an audit tenant does and leaves the
//! certificate to the route (`crate::pipeline`): a strict route refuses a
//! client let in unverified (403, the handshake's reason), an audit route
//! lets it through and counts it per request, naming the route.
//!
//! What audit mode never does: hand an unverified certificate's names to
//! an upstream or a policy as an identity (see `Identity::anonymous`).

use std::net::SocketAddr;

use crate::Shared;

/// Accounts for one would-be refusal: `reason` is a handshake reason
/// (`no_certificate`, `unknown_ca`, `expired`, `revoked`, …) or
/// `policy_denied`; `route` names the route and the denial message.
pub(crate) fn would_refuse(
    shared: &Shared,
    tenant: &str,
    remote: SocketAddr,
    reason: &'static str,
    route: Option<(&str, &str)>,
) {
    shared.metrics.would_refuse.with(&[reason]).inc();
    tracing::warn!(
        tenant,
        peer = %remote,
        reason,
        route = route.map_or("-", |r| r.0),
        "audit mode: let through what strict mode would refuse"
    );
    shared.audit.record(&serde_json::json!({
        "event": "would_refuse",
        "remote": remote.to_string(),
        "tenant": tenant,
        "route": route.map(|r| r.0),
        "reason": reason,
        "message": route.map(|r| r.1),
    }));
}
