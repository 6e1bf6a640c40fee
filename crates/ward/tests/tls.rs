//! Ward's certificates in real TLS: a rustls server and client complete an
//! mTLS handshake over TCP with certificates from `ward cert create`, the
//! `spiffe` crate accepts the client certificate as an X509-SVID, and
//! `ward cert inspect HOST:PORT` reports the chain a live server presents.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{OutputText, Pki, ward};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

fn roots(pki: &Pki) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    for c in certs(&pki.root()) {
        store.add(c).unwrap();
    }
    Arc::new(store)
}

fn server_config(pki: &Pki, prefix: &Path) -> Arc<ServerConfig> {
    let provider = ward_tls::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(pki), provider.clone())
        .build()
        .unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(ward_tls::TLS13_ONLY)
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certs(&prefix.with_extension("crt")),
                key(&prefix.with_extension("key")),
            )
            .unwrap(),
    )
}

/// Serves one connection: checks the client's SPIFFE ID, answers "pong".
async fn serve_once(listener: TcpListener, config: Arc<ServerConfig>) -> Result<String, String> {
    let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let mut tls = TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map_err(|e| e.to_string())?;
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let id = ward_pki::inspect::spiffe_id_of(&peer)
        .map_err(|e| e.to_string())?
        .map(|id| id.to_string())
        .unwrap_or_default();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
    tls.shutdown().await.map_err(|e| e.to_string())?;
    Ok(id)
}

#[tokio::test]
async fn mtls_handshake_with_ward_certificates() {
    for key_type in ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"] {
        let pki = Pki::init(&[]);
        let kt = ["--key-type", key_type];
        let server = pki.issue(
            "server",
            "spiffe://example.org/srv",
            &["--dns", "localhost", kt[0], kt[1]],
        );
        let client = pki.issue("client", "spiffe://example.org/cli", &kt);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = tokio::spawn(serve_once(listener, server_config(&pki, &server)));

        let client_config = ClientConfig::builder_with_provider(ward_tls::provider())
            .with_protocol_versions(ward_tls::TLS13_ONLY)
            .unwrap()
            .with_root_certificates(roots(&pki))
            .with_client_auth_cert(
                certs(&client.with_extension("crt")),
                key(&client.with_extension("key")),
            )
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(client_config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{key_type}: handshake failed: {e}"));
        let (_, conn) = tls.get_ref();
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        tls.write_all(b"ping").await.unwrap();
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"pong");
        let seen = server_task.await.unwrap().unwrap();
        assert_eq!(seen, "spiffe://example.org/cli", "{key_type}");
    }
}

#[tokio::test]
async fn a_server_certificate_is_refused_as_a_client_certificate() {
    let pki = Pki::init(&[]);
    let server = pki.issue(
        "server",
        "spiffe://example.org/srv",
        &["--dns", "localhost"],
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(serve_once(listener, server_config(&pki, &server)));
    let client_config = ClientConfig::builder_with_provider(ward_tls::provider())
        .with_protocol_versions(ward_tls::TLS13_ONLY)
        .unwrap()
        .with_root_certificates(roots(&pki))
        .with_client_auth_cert(
            certs(&server.with_extension("crt")),
            key(&server.with_extension("key")),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // In TLS 1.3 the client may finish before the server judges it; the
    // refusal then arrives on first read.
    if let Ok(mut tls) = TlsConnector::from(Arc::new(client_config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let _ = tls.write_all(b"ping").await;
        let mut reply = Vec::new();
        assert!(tls.read_to_end(&mut reply).await.is_err() || reply.is_empty());
    }
    let err = server_task.await.unwrap().unwrap_err();
    assert!(
        err.contains("extended key usage for client authentication"),
        "{err}"
    );
}

#[test]
fn client_certificate_is_a_valid_x509_svid_for_the_spiffe_crate() {
    let pki = Pki::init(&[]);
    for key_type in ["ecdsa-p256", "ecdsa-p384"] {
        let client = pki.issue(
            "client",
            &format!("spiffe://example.org/ns/{key_type}"),
            &["--key-type", key_type],
        );
        let chain: Vec<u8> = certs(&client.with_extension("crt"))
            .iter()
            .flat_map(|c| c.as_ref().to_vec())
            .collect();
        let key_der = match key(&client.with_extension("key")) {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("not PKCS#8: {other:?}"),
        };
        let svid = spiffe::X509Svid::parse_from_der(&chain, &key_der)
            .unwrap_or_else(|e| panic!("{key_type}: {e}"));
        assert_eq!(
            svid.spiffe_id().to_string(),
            format!("spiffe://example.org/ns/{key_type}")
        );
        assert_eq!(svid.cert_chain().len(), 2);
    }
}

#[tokio::test]
async fn inspect_reports_the_chain_a_live_endpoint_presents() {
    let pki = Pki::init(&[]);
    let server = pki.issue(
        "server",
        "spiffe://example.org/web",
        &["--dns", "localhost"],
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_config(&pki, &server);
    // The server wants a client certificate that `inspect` does not have:
    // the chain must be reported all the same.
    let server_task = tokio::spawn(async move {
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = TlsAcceptor::from(config.clone()).accept(tcp).await;
        }
    });
    for target in [
        format!("127.0.0.1:{}", addr.port()),
        format!("https://localhost:{}/some/path", addr.port()),
    ] {
        let out = tokio::task::spawn_blocking(move || {
            ward(&[
                "cert",
                "inspect",
                &target,
                "--sni",
                "localhost",
                "--format",
                "json",
            ])
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", out.stderr_text());
        let json: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
        let chain = json["certificates"].as_array().unwrap();
        assert_eq!(chain.len(), 2, "{json}");
        assert_eq!(chain[0]["spiffe_id"], "spiffe://example.org/web");
        assert_eq!(chain[0]["sans"]["dns"][0], "localhost");
        assert_eq!(chain[1]["is_ca"], true);
        assert_eq!(json["tls"]["version"], "TLSv1_3", "{json}");
    }
    server_task.await.unwrap();
    // Nothing listening: a clear error and exit 2.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = tokio::task::spawn_blocking(move || {
        ward(&["cert", "inspect", &format!("127.0.0.1:{port}")])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr_text().contains("connecting to"),
        "{}",
        out.stderr_text()
    );
}
