//! The CA issuance workload: `POST /v1/sign` with one CSR made at startup,
//! `POST /v1/issue` with server-side key generation, or (for comparison)
//! cfssl's `POST /api/v1/cfssl/sign` with the same kind of CSR.
//!
//! `concurrency` workers each own one keep-alive HTTP/1.1 TLS connection
//! (reconnecting after any error) and send one request at a time, closed
//! loop or at a fixed rate: the loop is [`crate::load`]'s.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::conn::Target;
use crate::load::{Load, Workload};
use crate::stats::Summary;

/// Which issuance route to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// `POST /v1/sign` with a CSR (the key stays with the client).
    Sign,
    /// `POST /v1/issue` (the CA generates the key).
    Issue,
    /// cfssl's `POST /api/v1/cfssl/sign` with the same CSR and the profile
    /// `peer`, for comparison (no token).
    CfsslSign,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Sign => "sign",
            Mode::Issue => "issue",
            Mode::CfsslSign => "cfssl-sign",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Mode::Sign => "/v1/sign",
            Mode::Issue => "/v1/issue",
            Mode::CfsslSign => "/api/v1/cfssl/sign",
        }
    }

    /// Whether the route needs a bootstrap token.
    pub(crate) fn needs_token(self) -> bool {
        self != Mode::CfsslSign
    }
}

/// Everything a run needs, already validated.
pub(crate) struct Plan {
    /// The CA to load.
    pub(crate) target: Target,
    /// Route to drive.
    pub(crate) mode: Mode,
    /// Key type: of the CSR's key for `sign` and `cfssl-sign`, sent as
    /// `key_type` for `issue`.
    pub(crate) key_type: Option<String>,
    /// Bootstrap token (unlimited uses for a meaningful run); unused by
    /// `cfssl-sign`.
    pub(crate) token: String,
    /// Number of workers / connections.
    pub(crate) concurrency: usize,
    /// Measurement window.
    pub(crate) duration: Duration,
    /// Load before the window, not counted.
    pub(crate) warmup: Duration,
    /// Requests per second across all workers; `None` = closed loop.
    pub(crate) rate: Option<f64>,
    /// Longest wait for one answer (or one connection) before it counts as
    /// a `timeout` (or `connect`) error.
    pub(crate) request_timeout: Duration,
}

/// Builds the JSON request body sent by every request of the run.
pub(crate) fn request_body(
    mode: Mode,
    token: &str,
    key_type: Option<&str>,
) -> anyhow::Result<Bytes> {
    let mut body = serde_json::Map::new();
    if mode.needs_token() {
        body.insert("token".into(), token.into());
    }
    match mode {
        Mode::CfsslSign => {
            body.insert("certificate_request".into(), make_csr(key_type)?.into());
            body.insert("profile".into(), "peer".into());
        }
        Mode::Sign => {
            body.insert("csr".into(), make_csr(key_type)?.into());
        }
        Mode::Issue => {
            if let Some(kt) = key_type {
                body.insert("key_type".into(), kt.into());
            }
        }
    }
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

/// A PEM CSR with an empty subject and no extensions for a fresh key: the CA
/// takes the identity from the token, so the CSR only proves possession.
fn make_csr(key_type: Option<&str>) -> anyhow::Result<String> {
    let alg = match key_type.unwrap_or("ecdsa-p256") {
        "ecdsa-p256" => &rcgen::PKCS_ECDSA_P256_SHA256,
        "ecdsa-p384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        "ed25519" => &rcgen::PKCS_ED25519,
        "ml-dsa-44" => &rcgen::PKCS_ML_DSA_44,
        "ml-dsa-65" => &rcgen::PKCS_ML_DSA_65,
        "ml-dsa-87" => &rcgen::PKCS_ML_DSA_87,
        other => {
            bail!("no CSR key type {other:?} (ecdsa-p256, ecdsa-p384, ed25519, ml-dsa-44/65/87)")
        }
    };
    let key = rcgen::KeyPair::generate_for(alg).context("generating the CSR key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).context("building the CSR")?;
    csr.pem().context("encoding the CSR")
}

/// Runs the plan to completion and summarizes it.
pub(crate) async fn run(plan: Plan) -> anyhow::Result<Summary> {
    let body = request_body(plan.mode, &plan.token, plan.key_type.as_deref())?;
    let path = format!("{}{}", plan.target.base_path, plan.mode.path());
    crate::load::run(
        plan.target,
        Workload {
            mode: plan.mode.as_str(),
            method: http::Method::POST,
            path,
            body,
            content_type: Some("application/json"),
            fresh_connection: false,
        },
        Load {
            concurrency: plan.concurrency,
            duration: plan.duration,
            warmup: plan.warmup,
            rate: plan.rate,
            request_timeout: plan.request_timeout,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_body_carries_a_csr() {
        let body = request_body(Mode::Sign, "wdt_x", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["token"], "wdt_x");
        let csr = v["csr"].as_str().unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }

    #[test]
    fn issue_body_passes_key_type() {
        let body = request_body(Mode::Issue, "wdt_x", Some("ed25519")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["key_type"], "ed25519");
        let body = request_body(Mode::Issue, "wdt_x", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v.get("key_type").is_none());
    }

    #[test]
    fn cfssl_body_has_no_token() {
        let body = request_body(Mode::CfsslSign, "", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v.get("token").is_none());
        assert_eq!(v["profile"], "peer");
        assert!(
            v["certificate_request"]
                .as_str()
                .unwrap()
                .contains("REQUEST")
        );
    }

    #[test]
    fn unknown_csr_key_type_is_refused() {
        assert!(request_body(Mode::Sign, "wdt_x", Some("dsa")).is_err());
    }
}
