//! The HTTP(S) clients Ward talks to servers it does not proxy with:
//! [`HttpClient`] fetches CRLs and OCSP responses, [`Connection`] carries
//! the CA API (one TLS connection on which several requests can be made:
//! the pinned bootstrap sends its token on the connection it authenticated).
//! Both cap what they read with [`read_capped`].
//!
//! `https://` URLs are verified against the roots it was built with
//! (through [`crate::config::client_config`]), `http://` URLs are allowed
//! (OCSP and CRL responders are usually plain HTTP: what they serve is
//! signed), redirects are not followed, and every answer is size-capped and
//! optionally time-limited. Only a `200 OK` body is read.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::config::{ClientCert, ServerAuth, client_config};

/// Time allowed to open the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether connections are kept for the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// hyper's default idle pool.
    Pooled,
    /// A new connection every time (for rare requests: a pooled connection
    /// would only pin a responder behind a load balancer).
    Unpooled,
}

/// An answer: its status and headers, and its body when the status was
/// `200 OK` (empty otherwise).
#[derive(Debug)]
pub struct Fetched {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body of a `200 OK`, at most the cap given.
    pub body: Bytes,
}

/// Why a fetch failed; each variant's text is the cause alone, for the
/// caller to prefix with the method and URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The request was not sent or no answer arrived.
    #[error("{0}")]
    Request(String),
    /// The server announced a body larger than the cap.
    #[error("{len} bytes is more than {max}")]
    TooLarge {
        /// The announced `Content-Length`.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The body could not be read whole within the cap.
    #[error("{0}")]
    Body(String),
    /// The whole exchange took longer than allowed.
    #[error("no answer in time")]
    Timeout,
}

/// Ward's client for fetching small documents.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client verifying `https://` servers against `roots`.
    pub fn new(roots: RootCertStore, pooling: Pooling) -> Result<Self, rustls::Error> {
        Self::with_server_auth(ServerAuth::Roots(roots), pooling)
    }

    /// A client verifying `https://` servers as `server` says (a custom
    /// verifier: a SPIFFE bundle endpoint's SVID).
    pub fn with_server_auth(server: ServerAuth, pooling: Pooling) -> Result<Self, rustls::Error> {
        let tls = client_config(server, ClientCert::None)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let mut builder = Client::builder(TokioExecutor::new());
        if pooling == Pooling::Unpooled {
            builder.pool_max_idle_per_host(0);
        }
        Ok(HttpClient {
            inner: builder.build(connector),
        })
    }

    /// Sends `req` and reads a `200 OK` body of at most `max` bytes, all
    /// within `timeout` when one is given.
    pub async fn fetch(
        &self,
        req: Request<Full<Bytes>>,
        max: u64,
        timeout: Option<Duration>,
    ) -> Result<Fetched, FetchError> {
        let work = self.exchange(req, max);
        match timeout {
            Some(t) => tokio::time::timeout(t, work)
                .await
                .map_err(|_| FetchError::Timeout)?,
            None => work.await,
        }
    }

    async fn exchange(&self, req: Request<Full<Bytes>>, max: u64) -> Result<Fetched, FetchError> {
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| FetchError::Request(with_causes(&e)))?;
        let (parts, body) = resp.into_parts();
        if parts.status != StatusCode::OK {
            return Ok(Fetched {
                status: parts.status,
                headers: parts.headers,
                body: Bytes::new(),
            });
        }
        if let Some(len) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > max
        {
            return Err(FetchError::TooLarge { len, max });
        }
        let body = read_capped(body, max).await?;
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// An error and its causes, `outer: inner: …` (hyper's client errors say
/// only "client error (Connect)" on their own).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

/// Reads a whole body of at most `max` bytes: the one size cap of every
/// answer Ward reads from a server it does not proxy (this client's, the
/// CA client's).
pub async fn read_capped<B>(body: B, max: u64) -> Result<Bytes, FetchError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    Limited::new(body, limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| FetchError::Body(e.to_string()))
}

/// Why a [`Connection`] could not be opened or used; each variant's text
/// is the cause alone, for the caller to put in context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The TCP connection failed.
    #[error("{0}")]
    Tcp(std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// The HTTP/1.1 session could not start.
    #[error("{0}")]
    Http(hyper::Error),
    /// The connection closed before the request could be sent.
    #[error("connection closed: {0}")]
    Closed(hyper::Error),
    /// The request was sent but no answer came.
    #[error("request failed: {0}")]
    Request(hyper::Error),
    /// The answer's body was unreadable or over the cap.
    #[error("{0}")]
    Body(FetchError),
}

/// One HTTP/1.1-over-TLS connection; requests on it run one at a time.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<Result<(), hyper::Error>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Connects to `addr`, shakes hands with `tls` for `server_name`, and
    /// starts an HTTP/1.1 session.
    pub async fn open(
        addr: &str,
        server_name: ServerName<'static>,
        tls: Arc<ClientConfig>,
    ) -> Result<Self, ConnectionError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(ConnectionError::Tcp)?;
        let _ = tcp.set_nodelay(true);
        let stream = TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(ConnectionError::Tls)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectionError::Http)?;
        Ok(Connection {
            sender,
            driver: tokio::spawn(conn),
        })
    }

    /// Sends `req` and returns the status and a body of at most `max`
    /// bytes, whatever the status.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
        max: u64,
    ) -> Result<(StatusCode, Bytes), ConnectionError> {
        self.sender.ready().await.map_err(ConnectionError::Closed)?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(ConnectionError::Request)?;
        let status = resp.status();
        let bytes = read_capped(resp.into_body(), max)
            .await
            .map_err(ConnectionError::Body)?;
        Ok((status, bytes))
    }
}
