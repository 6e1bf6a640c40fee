//! What the gate's integration tests share: an in-process gate on
//! 127.0.0.1:0 with the testkit's PKI, and an mTLS client configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use ward_testkit::{fixture, read_certs, read_key};

/// Starts a gate with one default tenant (the testkit's server
/// certificate, client CA `root.crt`, audit off) and `routes` (TOML
/// `[[tenants.routes]]` tables); returns its listener and admin addresses.
pub(crate) async fn start_gate(routes: &str, dir: &tempfile::TempDir) -> (SocketAddr, SocketAddr) {
    start_gate_with("", "", routes, dir).await
}

/// [`start_gate`] with `top` (TOML tables such as `[timeouts]`) before
/// `[listen]` and `listen` (keys) inside it.
pub(crate) async fn start_gate_with(
    top: &str,
    listen: &str,
    routes: &str,
    dir: &tempfile::TempDir,
) -> (SocketAddr, SocketAddr) {
    ward_tls::install_default_provider();
    // The committed key is 0644 in a git checkout: serve a private copy.
    let key = dir.path().join("server.key");
    std::fs::copy(fixture("server.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let toml = format!(
        r#"audit_log = "off"
{top}
[listen]
address = "127.0.0.1:0"
admin = "127.0.0.1:0"
{listen}
[[tenants]]
name = "t"
default = true
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}
{routes}"#,
        cert = fixture("server.crt"),
        key = key,
        ca = fixture("root.crt"),
    );
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, toml).unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let _keep = reload_tx;
        ward_gate::run(
            ward_gate::Source::File(path),
            move |bound| {
                let _ = ready_tx.send((bound.listen, bound.admin.unwrap()));
            },
            reload_rx,
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    tokio::time::timeout(Duration::from_secs(20), ready_rx)
        .await
        .expect("the gate gets ready")
        .unwrap()
}

/// An mTLS connection to the gate as the testkit's client, offering
/// HTTP/1.1.
pub(crate) async fn connect(gate: SocketAddr) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    for c in read_certs("root.crt") {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(ward_tls::provider())
        .with_protocol_versions(ward_tls::TLS13_ONLY)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(read_certs("client.crt"), read_key("client.key"))
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(gate).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}
