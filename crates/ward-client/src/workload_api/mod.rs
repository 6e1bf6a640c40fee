//! The SPIFFE Workload API: generated gRPC code (client and server) and
//! the client side Ward uses to take an identity from a Workload API socket.
//!
//! The protocol buffer definitions are in `proto/workload.proto`; the Rust
//! code generated from them is committed in `proto.rs` (no `protoc` needed
//! to build), and a test fails if regenerating it would change it
//! (`WARD_REGENERATE_PROTO=1 cargo test -p ward-client workload_api` rewrites it).
//!
//! Every request carries the `workload.spiffe.io: true` metadata the
//! specification requires ([`SECURITY_HEADER`]).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::ClientError;

/// Generated messages, client (`spiffe_workload_api_client`) and server
/// (`spiffe_workload_api_server`).
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)] // generated code: its shape is the generator's, not ours
pub mod proto {
    include!("proto.rs");
}

/// The gRPC crate the generated code is built on, so callers need not
/// depend on a matching version themselves.
pub use tonic;

/// The metadata key every Workload API request must carry, with value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The environment variable naming the Workload API endpoint.
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// A Unix socket path from a Workload Endpoint address: `unix:///abs/path`
/// or `unix:/abs/path` (the forms the specification allows). TCP endpoints
/// are not supported by Ward.
pub fn parse_endpoint(address: &str) -> Result<PathBuf, ClientError> {
    let err = |why: &str| ClientError::Config(format!("workload endpoint {address:?}: {why}"));
    let path = address
        .strip_prefix("unix://")
        .or_else(|| address.strip_prefix("unix:"))
        .ok_or_else(|| {
            if address.starts_with("tcp:") {
                err("tcp endpoints are not supported; use unix:///path")
            } else {
                err("expected unix:///absolute/path")
            }
        })?;
    if !path.starts_with('/') {
        return Err(err("the socket path must be absolute"));
    }
    if path.contains(['?', '#']) {
        return Err(err("no query or fragment allowed"));
    }
    Ok(PathBuf::from(path))
}

/// The socket named by `SPIFFE_ENDPOINT_SOCKET`.
pub fn endpoint_from_env() -> Result<PathBuf, ClientError> {
    let value = std::env::var(ENDPOINT_ENV)
        .map_err(|_| ClientError::Config(format!("{ENDPOINT_ENV} is not set")))?;
    parse_endpoint(&value)
}

/// A gRPC channel to the Workload API on the Unix socket `path`.
pub async fn connect(path: PathBuf) -> Result<Channel, ClientError> {
    // The URI is required by tonic but unused: the connector dials the socket.
    let endpoint = Endpoint::from_static("http://localhost");
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| ClientError::WorkloadApi(format!("cannot connect: {e}")))
}

/// Adds the security header to a request.
pub fn with_security_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("unix:///run/ward.sock").unwrap(),
            PathBuf::from("/run/ward.sock")
        );
        assert_eq!(
            parse_endpoint("unix:/run/ward.sock").unwrap(),
            PathBuf::from("/run/ward.sock")
        );
        for bad in [
            "/run/ward.sock",
            "unix:relative",
            "tcp://127.0.0.1:1",
            "unix:///a?b",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    /// Regenerates the gRPC code from `proto/workload.proto` and compares it
    /// with the committed `proto.rs`.
    #[test]
    fn generated_code_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let fds = protox::compile([root.join("proto/workload.proto")], [root.join("proto")])
            .expect("the proto compiles");
        let out = tempfile::tempdir().unwrap();
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .build_transport(false)
            .out_dir(out.path())
            .compile_fds(fds)
            .expect("code generation");
        let generated = std::fs::read_to_string(out.path().join("_.rs")).unwrap();
        let committed_path = root.join("src/workload_api/proto.rs");
        if std::env::var_os("WARD_REGENERATE_PROTO").is_some() {
            std::fs::write(&committed_path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        assert!(
            committed == generated,
            "src/workload_api/proto.rs is stale: run WARD_REGENERATE_PROTO=1 cargo test -p ward-client workload_api"
        );
    }
}
