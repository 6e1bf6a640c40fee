//! The one HTTP(S) client Ward fetches with: CRLs, OCSP responses, and any
//! other small document from a server that is not a proxied upstream.
//!
//! `https://` URLs are verified against the roots it was built with
//! (through [`crate::config::client_config`]), `http://` URLs are allowed
//! (OCSP and CRL responders are usually plain HTTP: what they serve is
//! signed), redirects are not followed, and every answer is size-capped and
//! optionally time-limited. Only a `200 OK` body is read.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

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
        let tls = client_config(ServerAuth::Roots(roots), ClientCert::None)?;
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
            .map_err(|e| FetchError::Request(e.to_string()))?;
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
