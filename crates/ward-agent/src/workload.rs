//! The SPIFFE Workload API server on a Unix socket.
//!
//! `FetchX509SVID` and `FetchX509Bundles` send the current identity at once
//! and again after every rotation, on the same stream. As the Workload
//! Endpoint specification requires: a request without the
//! `workload.spiffe.io: true` metadata gets `InvalidArgument`; before the
//! first identity exists the answer is `Unavailable` (retry with backoff);
//! once the CA refused renewal for good (a revoked identity) streams end
//! with `PermissionDenied`. The JWT-SVID profile is in [`crate::jwt`].
//!
//! Connections pass through [`crate::authority`] first, so clients that
//! send a socket path as `:authority` (grpcio, py-spiffe, grpc-java) are
//! served like grpc-go.
//!
//! Anyone who can connect to the socket receives the private key: the
//! socket is created with mode 0600 (owner only) before it gets its final
//! name, so it is never reachable with a looser mode.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use ward_client::Svid;
use ward_client::workload_api::SECURITY_HEADER;
use ward_client::workload_api::proto::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use ward_client::workload_api::proto::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};

use crate::attest::{Attestation, Caller};
use crate::authority::AnyAuthority;
use crate::federation::Federated;
use crate::jwt::{self, Bundle, JwtContext};

/// What the Workload API can hand out now.
#[derive(Clone, Debug)]
pub enum Published {
    /// No identity yet (bootstrapping).
    Pending,
    /// The identity in force.
    Ready(Arc<Svid>),
    /// Renewal was refused for good; no identity is handed out any more.
    Refused(String),
}

/// Socket mode: owner only (the key is handed to whoever connects).
const SOCKET_MODE: u32 = 0o600;

/// Streams waiting to be written to before a slow client is dropped.
const STREAM_BUFFER: usize = 4;

/// A socket problem at start-up.
#[derive(Debug, thiserror::Error)]
#[error("workload API socket {path}: {detail}")]
pub struct SocketError {
    path: PathBuf,
    detail: String,
}

/// Binds the socket at `path`: a stale socket there is removed, anything
/// else there is refused; the socket gets [`SOCKET_MODE`] before it is
/// renamed into place.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    bind_with_mode(path, SOCKET_MODE)
}

/// Socket mode when callers are attested ([`crate::attest`]): anyone may
/// connect, and gets only what its registration entries say.
pub const ATTESTED_SOCKET_MODE: u32 = 0o666;

/// [`bind`] with another mode (attested sockets are open to every user).
pub fn bind_with_mode(path: &Path, mode: u32) -> Result<UnixListener, SocketError> {
    let fail = |detail: String| SocketError {
        path: path.to_owned(),
        detail,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(fail(
                "exists and is not a socket; refusing to replace it".into(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| fail("not a file path".into()))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{:08x}", fastrand::u32(..)));
    let listener = UnixListener::bind(&tmp).map_err(|e| fail(format!("cannot bind: {e}")))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(format!("cannot put the socket in place: {e}")));
    }
    Ok(listener)
}

/// Serves the Workload API on `listener` until `stop` resolves.
pub async fn serve(
    listener: UnixListener,
    published: watch::Receiver<Published>,
    jwt: JwtContext,
    attest: Option<Attestation>,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(attest) = attest {
        // Callers are identified as they connect (crate::attest).
        let incoming = crate::attest::incoming(listener, attest.clone())
            .map(|conn| conn.map(AnyAuthority::new));
        let service = Service {
            published,
            jwt,
            attest: Some(attest),
        };
        return builder
            .add_service(SpiffeWorkloadApiServer::new(service))
            .serve_with_incoming_shutdown(incoming, stop)
            .await;
    }
    // Every client's `:authority` is made acceptable to h2 first (trap 15).
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AnyAuthority::new));
    let service = Service {
        published,
        jwt,
        attest: None,
    };
    builder
        .add_service(SpiffeWorkloadApiServer::new(service))
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}

struct Service {
    published: watch::Receiver<Published>,
    jwt: JwtContext,
    /// Set when callers are attested: each gets its entries' SVIDs only.
    attest: Option<Attestation>,
}

impl Service {
    /// With attestation, the caller's SPIFFE IDs (`PermissionDenied` when
    /// it matches no entry); `None` without attestation.
    fn attested<T>(&self, request: &Request<T>) -> Result<Option<Vec<ward_pki::SpiffeId>>, Status> {
        match &self.attest {
            None => Ok(None),
            Some(a) => a
                .ids_for(request.extensions().get::<Arc<Caller>>())
                .map(Some),
        }
    }

    fn own_id(&self) -> Option<ward_pki::SpiffeId> {
        match &*self.published.borrow() {
            Published::Ready(svid) => Some(svid.spiffe_id().clone()),
            _ => None,
        }
    }
}

/// A stream of the JWT bundles: now and after every change.
fn follow_bundles(
    mut bundle: watch::Receiver<Option<Bundle>>,
    mut federated: watch::Receiver<Federated>,
) -> Result<ResponseStream<JwtBundlesResponse>, Status> {
    let render = |b: &Bundle, fed: &Federated| {
        let mut r = jwt::bundles_response(b);
        for (k, set) in crate::federation::jwt_sets(fed) {
            r.bundles.entry(k).or_insert(set);
        }
        r
    };
    let first = match &*bundle.borrow_and_update() {
        Some(b) => render(b, &federated.borrow_and_update()),
        None => {
            return Err(Status::unavailable(
                "the agent has no trust bundle yet; retry with backoff",
            ));
        }
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        let mut federation_open = true;
        loop {
            tokio::select! {
                changed = bundle.changed() => {
                    if changed.is_err() {
                        let _ = tx.send(Err(Status::unavailable("the agent is shutting down"))).await;
                        return;
                    }
                }
                changed = federated.changed(), if federation_open => {
                    federation_open = changed.is_ok();
                    if !federation_open {
                        continue;
                    }
                }
                () = tx.closed() => return,
            }
            let fed = federated.borrow_and_update().clone();
            let next = bundle.borrow_and_update().as_ref().map(|b| render(b, &fed));
            if let Some(next) = next
                && tx.send(Ok(next)).await.is_err()
            {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(v) if v == "true" => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "security header missing from request: {SECURITY_HEADER}: true"
        ))),
    }
}

/// The trust domain key of the bundle maps: `spiffe://<trust domain>`.
fn trust_domain_key(svid: &Svid) -> String {
    format!("spiffe://{}", svid.spiffe_id().trust_domain().as_str())
}

fn svid_response(svid: &Svid, federated: &Federated) -> X509svidResponse {
    X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: svid.spiffe_id().to_string(),
            x509_svid: svid.chain_der_concat(),
            x509_svid_key: svid.key_pkcs8_der().to_vec(),
            bundle: svid.bundle_der_concat(),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: crate::federation::x509_roots(federated).collect(),
    }
}

fn bundles_response(svid: &Svid, federated: &Federated) -> X509BundlesResponse {
    let mut bundles: HashMap<String, Vec<u8>> = crate::federation::x509_roots(federated).collect();
    bundles.insert(trust_domain_key(svid), svid.bundle_der_concat());
    X509BundlesResponse {
        crl: Vec::new(),
        bundles,
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A stream that sends `render(identity)` now and after every change, and
/// ends with `PermissionDenied` on a refusal. The feeding task stops when
/// the client goes away.
fn follow<T: Send + 'static>(
    mut published: watch::Receiver<Published>,
    mut federated: watch::Receiver<Federated>,
    render: fn(&Svid, &Federated) -> T,
) -> Result<ResponseStream<T>, Status> {
    let first = match &*published.borrow_and_update() {
        Published::Pending => {
            return Err(Status::unavailable(
                "the agent has no identity yet; retry with backoff",
            ));
        }
        Published::Refused(why) => return Err(Status::permission_denied(why.clone())),
        Published::Ready(svid) => render(svid, &federated.borrow_and_update()),
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        let mut federation_open = true;
        loop {
            tokio::select! {
                changed = published.changed() => {
                    if changed.is_err() {
                        let _ = tx.send(Err(Status::unavailable("the agent is shutting down"))).await;
                        return;
                    }
                }
                changed = federated.changed(), if federation_open => {
                    federation_open = changed.is_ok();
                    if !federation_open {
                        continue;
                    }
                }
                () = tx.closed() => return,
            }
            let fed = federated.borrow_and_update().clone();
            let next = match &*published.borrow_and_update() {
                Published::Pending => continue,
                Published::Ready(svid) => Ok(render(svid, &fed)),
                Published::Refused(why) => Err(Status::permission_denied(why.clone())),
            };
            let end = next.is_err();
            if tx.send(next).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&request)?;
        if let (Some(ids), Some(a)) = (self.attested(&request)?, &self.attest) {
            return crate::attest::follow_svids(a.svids.clone(), ids).map(Response::new);
        }
        follow(
            self.published.clone(),
            self.jwt.federated.clone(),
            svid_response,
        )
        .map(Response::new)
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        self.attested(&request)?;
        follow(
            self.published.clone(),
            self.jwt.federated.clone(),
            bundles_response,
        )
        .map(Response::new)
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(&request)?;
        if let (Some(ids), Some(a)) = (self.attested(&request)?, &self.attest) {
            return a
                .fetch_jwt(&ids, request.get_ref())
                .await
                .map(Response::new);
        }
        jwt::fetch_svid(&self.jwt, self.own_id(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&request)?;
        self.attested(&request)?;
        follow_bundles(self.jwt.bundle.clone(), self.jwt.federated.clone()).map(Response::new)
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
        self.attested(&request)?;
        jwt::validate(&self.jwt, request.get_ref()).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sockets_are_replaced_and_other_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            drop(bind(&path).unwrap());
            // The socket file stays behind after the listener is gone: stale.
            assert!(path.exists());
            let listener = bind(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, SOCKET_MODE);
            drop(listener);
        });
        let file = dir.path().join("plain");
        std::fs::write(&file, b"keep me").unwrap();
        let err = rt.block_on(async { bind(&file).unwrap_err() }).to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }
}
