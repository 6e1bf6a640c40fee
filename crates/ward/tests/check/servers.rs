//! Endpoints for `ward check` to judge: a rustls server presenting any
//! chain, `openssl s_server` for configurations rustls refuses to serve
//! (RSA-1024, TLS 1.0, CBC suites), and a one-file HTTP server for CRLs.
//! Every server binds 127.0.0.1:0 and is ready when its port is known; each
//! is stopped when its handle is dropped (the openssl child is killed and
//! reaped by its own id).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Certificates from a PEM file.
pub(crate) fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A background rustls server; aborted on drop.
pub(crate) struct RustlsServer {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RustlsServer {
    /// Serves `chain` with `key` (PEM files), TLS 1.3 only like Ward.
    pub(crate) async fn start(chain: &Path, key: &Path) -> Self {
        Self::start_with(certs(chain), PrivateKeyDer::from_pem_file(key).unwrap()).await
    }

    /// Serves the given chain and key.
    pub(crate) async fn start_with(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        let config = ServerConfig::builder_with_provider(ward_tls::provider())
            .with_protocol_versions(ward_tls::TLS13_ONLY)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        RustlsServer { addr, task }
    }

    /// Serves `chain`/`key` and requires a client certificate under
    /// `client_root`; the SPIFFE ID of every accepted client is sent on the
    /// returned channel.
    pub(crate) async fn start_mtls(
        chain: &Path,
        key: &Path,
        client_root: &Path,
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(client_root) {
            roots.add(c).unwrap();
        }
        let provider = ward_tls::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(ward_tls::TLS13_ONLY)
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(chain), PrivateKeyDer::from_pem_file(key).unwrap())
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await
                        && let Some(peer) = tls.get_ref().1.peer_certificates()
                        && let Ok(Some(id)) = ward_pki::inspect::spiffe_id_of(&peer[0])
                    {
                        let _ = tx.send(id.to_string());
                    }
                });
            }
        });
        (RustlsServer { addr, task }, rx)
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for RustlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `openssl s_server -www` on an ephemeral port; killed on drop.
pub(crate) struct OpensslServer {
    pub(crate) port: u16,
    child: Child,
}

impl OpensslServer {
    /// Starts s_server with `cert`/`key` (a fixture leaf: the fixture
    /// intermediate is sent after it) and extra flags, and waits for its
    /// `ACCEPT` line (the port it bound).
    pub(crate) fn start(cert: &Path, key: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(cert)
            .arg("-key")
            .arg(key)
            .arg("-cert_chain")
            .arg(ward_testkit::fixture("intermediate.crt"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("s_server ended before ACCEPT: {other:?}");
                }
            };
            if let Some(addr) = line.strip_prefix("ACCEPT ") {
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stdout so s_server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        OpensslServer { port, child }
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves one body (set after start, once the URL is known) to every
/// HTTP request; aborted on drop.
pub(crate) struct HttpFile {
    pub(crate) addr: SocketAddr,
    body: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl HttpFile {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(Vec::new()));
        let shared = body.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let body = shared.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = tcp.write_all(head.as_bytes()).await;
                    let _ = tcp.write_all(&body).await;
                });
            }
        });
        HttpFile { addr, body, task }
    }

    /// What every later request gets.
    pub(crate) fn set_body(&self, bytes: Vec<u8>) {
        *self.body.lock().unwrap() = bytes;
    }
}

impl Drop for HttpFile {
    fn drop(&mut self) {
        self.task.abort();
    }
}
