//! Identity from the CA: bootstrap with a token, renew over mTLS.

use std::time::{Instant, SystemTime};

use hyper::Method;
use rustls_pki_types::CertificateDer;
use ward_api::{Issued, RenewRequest, SignRequest, paths};
use ward_pki::{KeyType, PrivateKey, SpiffeId};

use super::{Publisher, Refusal, RotationState, sleep_until};
use crate::ca::Endpoint;
use crate::csr::{key_and_csr, pkcs8};
use crate::schedule::{Backoff, backoff_delay, random_jitter, renew_at, retry_after};
use crate::{BootstrapConfig, CaClient, ClientError, Identity, REQUEST_TIMEOUT, Svid, trust};

/// What the renewal task needs after bootstrap.
pub(super) struct Renewer {
    ca_url: String,
    anchors: Vec<CertificateDer<'static>>,
    key_type: KeyType,
    backoff: Backoff,
}

/// Whether a failure is worth retrying at bootstrap (the CA may come up).
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::Timeout => true,
        ClientError::Api { status, .. } => {
            status.is_server_error() || *status == hyper::StatusCode::TOO_MANY_REQUESTS
        }
        _ => false,
    }
}

fn svid_from(issued: Issued, key: &PrivateKey) -> Result<Svid, ClientError> {
    let chain = ward_pki::pem::parse_certs(issued.chain.as_bytes())
        .map_err(|e| ClientError::Protocol(format!("chain: {e}")))?;
    let bundle = ward_pki::pem::parse_certs(issued.ca_bundle.as_bytes())
        .map_err(|e| ClientError::Protocol(format!("ca_bundle: {e}")))?;
    Svid::new(chain, pkcs8(key)?, bundle, SystemTime::now())
}

async fn sign_once(
    config: &BootstrapConfig,
) -> Result<(Svid, Vec<CertificateDer<'static>>), ClientError> {
    let endpoint = Endpoint::parse(&config.ca_url)?;
    let (key, csr) = key_and_csr(config.key_type)?;
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let (mut conn, anchors) = trust::open(&endpoint, &config.trust).await?;
        let body = SignRequest {
            token: Some(config.token.expose()),
            csr: Some(csr.as_str()),
        };
        let issued: Issued = conn.json(Method::POST, paths::SIGN, Some(&body)).await?;
        Ok((svid_from(issued, &key)?, anchors))
    })
    .await
    .map_err(|_| ClientError::Timeout)?
}

/// The first identity, with retries of transient failures.
pub(super) async fn bootstrap(config: BootstrapConfig) -> Result<(Svid, Renewer), ClientError> {
    let deadline = Instant::now() + config.bootstrap_timeout;
    let mut failures = 0u32;
    let (svid, anchors) = loop {
        match sign_once(&config).await {
            Ok(done) => break done,
            Err(e) if transient(&e) => {
                failures += 1;
                let delay = backoff_delay(failures, config.backoff, random_jitter());
                if Instant::now() + delay > deadline {
                    return Err(e);
                }
                tracing::warn!(error = %e, failures, retry_in = ?delay, "bootstrap failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(
        spiffe_id = %svid.spiffe_id(),
        serial = %svid.serial(),
        "identity obtained from the CA"
    );
    Ok((
        svid,
        Renewer {
            ca_url: config.ca_url,
            anchors,
            key_type: config.key_type,
            backoff: config.backoff,
        },
    ))
}

impl Renewer {
    /// The CA URL and the anchors its server certificate is checked against.
    pub(super) fn endpoint(&self) -> (String, Vec<CertificateDer<'static>>) {
        (self.ca_url.clone(), self.anchors.clone())
    }

    /// One renewal: fresh key and CSR, current certificate as client identity.
    async fn renew(&self, current: &Svid) -> Result<Svid, ClientError> {
        if current.is_expired(SystemTime::now()) {
            return Err(ClientError::Expired);
        }
        let identity = Identity {
            chain: current.chain().to_vec(),
            key: current.private_key(),
        };
        // The CA is verified against the anchors and the bundle the current
        // identity came with: a root rotation's next root arrives there.
        let anchors = trust::followed_anchors(&self.anchors, current.bundle());
        let client = CaClient::new(&self.ca_url, &anchors, Some(identity))?;
        let (key, csr) = key_and_csr(self.key_type)?;
        let issued: Issued = client
            .json(
                Method::POST,
                paths::RENEW,
                Some(&RenewRequest { csr: Some(csr) }),
            )
            .await?;
        let next = svid_from(issued, &key)?;
        same_identity(current.spiffe_id(), next.spiffe_id())?;
        Ok(next)
    }

    /// Renews at two thirds of each lifetime until refused, expired or
    /// dropped.
    pub(super) async fn run(self, publisher: Publisher) {
        loop {
            let current = publisher.current();
            let at = renew_at(
                current.not_before(),
                current.not_after(),
                current.received_at(),
                random_jitter(),
            );
            publisher.status(|s| s.next_attempt = Some(at));
            sleep_until(at).await;
            let mut failures = 0u32;
            loop {
                match self.renew(&current).await {
                    Ok(next) => {
                        tracing::info!(
                            spiffe_id = %next.spiffe_id(),
                            serial = %next.serial(),
                            previous = %current.serial(),
                            "certificate renewed"
                        );
                        publisher.publish(next);
                        publisher.status(|s| {
                            s.state = RotationState::Healthy;
                            s.renewals += 1;
                        });
                        break;
                    }
                    Err(ClientError::Expired) => {
                        tracing::error!(
                            spiffe_id = %current.spiffe_id(),
                            "the certificate expired before it could be renewed; rotation stopped"
                        );
                        publisher.status(|s| {
                            s.state = RotationState::Expired;
                            s.next_attempt = None;
                        });
                        return;
                    }
                    Err(e) if e.is_definitive_refusal() => {
                        let refusal = refusal_of(&e);
                        tracing::error!(
                            error = %e,
                            spiffe_id = %current.spiffe_id(),
                            serial = %current.serial(),
                            revoked = refusal.is_revocation(),
                            "the CA refused renewal; rotation stopped, the current certificate stays until it expires"
                        );
                        publisher.status(|s| {
                            s.state = RotationState::Refused(refusal);
                            s.last_error = Some(e.to_string());
                            s.next_attempt = None;
                        });
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        let now = SystemTime::now();
                        let Some(delay) = retry_after(
                            failures,
                            self.backoff,
                            now,
                            current.not_after(),
                            random_jitter(),
                        ) else {
                            continue; // expired meanwhile: the next attempt says so
                        };
                        tracing::warn!(
                            error = %e,
                            failures,
                            retry_in = ?delay,
                            "renewal failed; keeping the current certificate and retrying"
                        );
                        publisher.status(|s| {
                            s.state = RotationState::Retrying { failures };
                            s.failures += 1;
                            s.last_error = Some(e.to_string());
                            s.next_attempt = Some(now + delay);
                        });
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }
}

fn refusal_of(e: &ClientError) -> Refusal {
    match e {
        ClientError::Api { code, message, .. } => Refusal {
            code: code.clone(),
            message: message.clone(),
        },
        other => Refusal {
            code: "refused".into(),
            message: other.to_string(),
        },
    }
}

fn same_identity(current: &SpiffeId, next: &SpiffeId) -> Result<(), ClientError> {
    if current == next {
        Ok(())
    } else {
        Err(ClientError::Identity(format!(
            "renewal returned {next}, expected {current}"
        )))
    }
}
