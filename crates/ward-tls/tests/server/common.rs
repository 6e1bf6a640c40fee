//! The service under test, server start-up and HTTP clients shared by the
//! test modules.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::header::HOST;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use ward_pki::inspect::spiffe_id_of;
use ward_testkit::{read_certs, read_key};
use ward_tls::config::{ClientAuth, server_config};
use ward_tls::credentials::Credentials;
use ward_tls::server::{PeerInfo, ServeOptions, serve_http, serve_https, set_http_alpn};

/// Bounds every wait that should end on its own, so a bug fails the test
/// instead of hanging it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

// --- the service -------------------------------------------------------------

/// Lets a test hold `/slow` in flight: the handler reports that it started,
/// then waits until the test releases it.
#[derive(Clone, Default)]
pub(crate) struct SlowGate {
    started: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl SlowGate {
    /// Arms the gate: returns (started, release) for the test's side.
    pub(crate) fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.started.lock().unwrap() = Some(started_tx);
        *self.release.lock().unwrap() = Some(release_rx);
        (started_rx, release_tx)
    }
}

/// Reports what the server told the service about the peer, one `key=value`
/// per line.
async fn whoami(Extension(peer): Extension<PeerInfo>, version: Version) -> String {
    let id = match peer.leaf() {
        Some(leaf) => spiffe_id_of(leaf).unwrap().unwrap().to_string(),
        None => "-".to_owned(),
    };
    format!(
        "id={id}\nchain_len={}\nhttp={version:?}\ntls={:?}\ncipher_set={}\nsni={}\nalpn={}\nremote={}\n",
        peer.peer_chain.as_ref().map_or(0, |c| c.len()),
        peer.tls_version,
        peer.cipher.is_some(),
        peer.sni.as_deref().unwrap_or("-"),
        peer.alpn
            .as_deref()
            .map_or("-".into(), String::from_utf8_lossy),
        peer.remote_addr,
    )
}

async fn slow(gate: SlowGate) -> &'static str {
    let started = gate.started.lock().unwrap().take();
    let release = gate.release.lock().unwrap().take();
    if let Some(started) = started {
        let _ = started.send(());
    }
    if let Some(release) = release {
        let _ = release.await;
    }
    "done"
}

pub(crate) fn app(gate: SlowGate) -> Router {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/slow", get(move || slow(gate.clone())))
}

// --- servers -----------------------------------------------------------------

pub(crate) fn roots() -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("root.crt") {
        roots.add(cert).unwrap();
    }
    Arc::new(roots)
}

pub(crate) fn leaf(name: &str) -> CertificateDer<'static> {
    read_certs(name).remove(0)
}

/// The fixture server certificate in a rotating resolver, and an HTTP
/// server configuration around it.
pub(crate) fn tls_config(client_auth: ClientAuth) -> (Arc<Credentials>, Arc<ServerConfig>) {
    let cert =
        Arc::new(Credentials::new(read_certs("server.crt"), read_key("server.key")).unwrap());
    let mut config = server_config(cert.clone(), client_auth).unwrap();
    set_http_alpn(&mut config);
    (cert, Arc::new(config))
}

pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<Result<(), ward_tls::Error>>,
}

impl Running {
    pub(crate) fn stop(&mut self) {
        self.stop.take().unwrap().send(()).unwrap();
    }

    pub(crate) async fn finished(self) -> Result<(), ward_tls::Error> {
        timeout(PATIENCE, self.done).await.unwrap().unwrap()
    }
}

/// Binds 127.0.0.1:0 and serves `app` there; `tls: None` means plain HTTP.
pub(crate) async fn start(
    tls: Option<Arc<ServerConfig>>,
    opts: ServeOptions,
    app: Router,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let done = match tls {
        Some(config) => tokio::spawn(serve_https(listener, config, app, opts, shutdown)),
        None => tokio::spawn(serve_http(listener, app, opts, shutdown)),
    };
    Running {
        addr,
        stop: Some(stop),
        done,
    }
}

pub(crate) async fn start_tls(client_auth: ClientAuth) -> (Arc<Credentials>, Running) {
    let (cert, config) = tls_config(client_auth);
    let server = start(
        Some(config),
        ServeOptions::default(),
        app(SlowGate::default()),
    )
    .await;
    (cert, server)
}

// --- clients -----------------------------------------------------------------

/// A TLS 1.3 client trusting the fixture root, offering `alpn`, presenting
/// the fixture `identity` (such as "client") if given. Each call makes a new
/// session cache, so no connection resumes another's session.
pub(crate) fn client_config(alpn: &[&[u8]], identity: Option<&str>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(ward_tls::provider())
        .with_protocol_versions(ward_tls::TLS13_ONLY)
        .unwrap()
        .with_root_certificates(roots());
    let mut config = match identity {
        Some(name) => builder
            .with_client_auth_cert(
                read_certs(&format!("{name}.crt")),
                read_key(&format!("{name}.key")),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub(crate) async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

pub(crate) fn server_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

pub(crate) type H1 = http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 client connection; the handle ends when the connection does.
pub(crate) async fn h1<T>(io: T) -> (H1, JoinHandle<hyper::Result<()>>)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await.unwrap();
    (sender, tokio::spawn(conn))
}

pub(crate) async fn h2<T>(io: T) -> http2::SendRequest<Empty<Bytes>>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub(crate) fn request(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri)
        .header(HOST, "localhost")
        .body(Empty::new())
        .unwrap()
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) async fn read(response: Response<Incoming>) -> Reply {
        let status = response.status();
        let version = response.version();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            version,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// The `key=value` lines of a `/whoami` body.
    pub(crate) fn fields(&self) -> HashMap<&str, &str> {
        self.body
            .lines()
            .filter_map(|l| l.split_once('='))
            .collect()
    }
}

pub(crate) async fn get_h1(sender: &mut H1, path: &str) -> Reply {
    let response = timeout(PATIENCE, sender.send_request(request(path)))
        .await
        .unwrap()
        .unwrap();
    Reply::read(response).await
}
