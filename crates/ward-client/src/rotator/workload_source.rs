//! Identity from a SPIFFE Workload API socket (`ward agent run --socket`,
//! SPIRE, …): follow the `FetchX509SVID` stream, reconnect when it breaks.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tonic::Streaming;
use zeroize::Zeroizing;

use super::{Publisher, Refusal, RotationState};
use crate::schedule::{Backoff, backoff_delay, random_jitter};
use crate::svid::split_der_certs;
use crate::workload_api::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use crate::workload_api::proto::{X509svidRequest, X509svidResponse};
use crate::workload_api::{self, endpoint_from_env, with_security_header};
use crate::{ClientError, Svid, WorkloadApiConfig};

/// What the follow-up task needs.
pub(super) struct Follower {
    socket: PathBuf,
    backoff: Backoff,
    stream: Streaming<X509svidResponse>,
}

/// The default (first) SVID of a response.
fn svid_of(response: X509svidResponse) -> Result<Svid, ClientError> {
    let first = response
        .svids
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::WorkloadApi("the response holds no SVID".into()))?;
    let chain = split_der_certs(&first.x509_svid)?;
    let bundle = split_der_certs(&first.bundle)?;
    let svid = Svid::new(
        chain,
        Zeroizing::new(first.x509_svid_key),
        bundle,
        SystemTime::now(),
    )?;
    if svid.spiffe_id().as_str() != first.spiffe_id {
        return Err(ClientError::WorkloadApi(format!(
            "the response names {} but the certificate is {}",
            first.spiffe_id,
            svid.spiffe_id()
        )));
    }
    Ok(svid)
}

async fn open(socket: &Path) -> Result<Streaming<X509svidResponse>, ClientError> {
    let channel = workload_api::connect(socket.to_path_buf()).await?;
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let response = client
        .fetch_x509svid(with_security_header(X509svidRequest {}))
        .await
        .map_err(|s| ClientError::WorkloadApi(format!("{}: {}", s.code(), s.message())))?;
    Ok(response.into_inner())
}

async fn next_svid(stream: &mut Streaming<X509svidResponse>) -> Result<Svid, ClientError> {
    match stream.message().await {
        Ok(Some(response)) => svid_of(response),
        Ok(None) => Err(ClientError::WorkloadApi("the stream ended".into())),
        Err(s) => Err(ClientError::WorkloadApi(format!(
            "{}: {}",
            s.code(),
            s.message()
        ))),
    }
}

/// Connects and waits for the first identity.
pub(super) async fn connect(config: WorkloadApiConfig) -> Result<(Svid, Follower), ClientError> {
    let socket = match config.socket {
        Some(path) => path,
        None => endpoint_from_env()?,
    };
    let first = tokio::time::timeout(config.first_timeout, async {
        let mut stream = open(&socket).await?;
        let svid = next_svid(&mut stream).await?;
        Ok::<_, ClientError>((svid, stream))
    })
    .await
    .map_err(|_| ClientError::WorkloadApi("no identity arrived in time".into()))??;
    let (svid, stream) = first;
    tracing::info!(spiffe_id = %svid.spiffe_id(), socket = %socket.display(), "identity obtained from the Workload API");
    Ok((
        svid,
        Follower {
            socket,
            backoff: config.backoff,
            stream,
        },
    ))
}

impl Follower {
    /// Publishes every identity the stream sends; reconnects with backoff
    /// when it breaks, until the current identity expires.
    pub(super) async fn run(mut self, publisher: Publisher) {
        let mut failures = 0u32;
        loop {
            match next_svid(&mut self.stream).await {
                Ok(next) => {
                    failures = 0;
                    tracing::info!(spiffe_id = %next.spiffe_id(), serial = %next.serial(), "identity updated by the Workload API");
                    publisher.publish(next);
                    publisher.status(|s| {
                        s.state = RotationState::Healthy;
                        s.renewals += 1;
                    });
                    continue;
                }
                Err(e) => {
                    if publisher.current().is_expired(SystemTime::now()) {
                        tracing::error!(error = %e, "the identity expired and the Workload API has no new one");
                        publisher.status(|s| s.state = RotationState::Expired);
                        return;
                    }
                    failures += 1;
                    let delay = backoff_delay(failures, self.backoff, random_jitter());
                    tracing::warn!(error = %e, failures, retry_in = ?delay, "Workload API stream broke; reconnecting");
                    let denied = e.to_string().contains("permission");
                    publisher.status(|s| {
                        s.state = if denied {
                            RotationState::Refused(Refusal {
                                code: "permission_denied".into(),
                                message: e.to_string(),
                            })
                        } else {
                            RotationState::Retrying { failures }
                        };
                        s.failures += 1;
                        s.last_error = Some(e.to_string());
                    });
                    tokio::time::sleep(delay).await;
                    match open(&self.socket).await {
                        Ok(stream) => self.stream = stream,
                        Err(e) => tracing::warn!(error = %e, "Workload API reconnection failed"),
                    }
                }
            }
        }
    }
}
