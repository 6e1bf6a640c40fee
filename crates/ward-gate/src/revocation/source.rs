//! Fetching a CRL from its source: HTTP(S) with conditional GET (ETag /
//! If-None-Match, Last-Modified / If-Modified-Since), or a file. Both are
//! size-limited and time-limited; redirects are not followed.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncReadExt;
use ward_tls::http::{FetchError, Pooling};

use crate::config::CrlSource;

/// The HTTP(S) client CRL sources share.
pub(crate) type HttpClient = ward_tls::http::HttpClient;

/// Builds the client; `https://` sources are verified against `roots` (the
/// client CA bundles, which Ward's CA server certificate chains to).
pub(crate) fn http_client(roots: &[Vec<u8>]) -> Option<HttpClient> {
    let mut store = RootCertStore::empty();
    for der in roots {
        let _ = store.add(CertificateDer::from(der.clone()));
    }
    HttpClient::new(store, Pooling::Pooled).ok()
}

/// What conditional GET remembers from the last answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Validators {
    /// `ETag`.
    pub(crate) etag: Option<String>,
    /// `Last-Modified`.
    pub(crate) last_modified: Option<String>,
}

/// The outcome of one fetch.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// A body (DER or PEM), with the validators to send next time.
    Body {
        /// The bytes.
        bytes: Vec<u8>,
        /// `ETag`.
        etag: Option<String>,
        /// `Last-Modified`.
        last_modified: Option<String>,
    },
    /// 304: the CRL in force is still the newest.
    NotModified,
    /// Nothing usable; the reason.
    Failed(String),
}

/// Fetches one source.
#[derive(Debug)]
pub(crate) struct Fetcher {
    source: CrlSource,
    client: Option<HttpClient>,
    max: u64,
    timeout: Duration,
}

impl Fetcher {
    /// A fetcher for `source`, reading at most `max` bytes within `timeout`.
    pub(crate) fn new(
        source: CrlSource,
        client: Option<HttpClient>,
        max: u64,
        timeout: Duration,
    ) -> Self {
        Fetcher {
            source,
            client,
            max,
            timeout,
        }
    }

    /// One fetch.
    pub(crate) async fn fetch(&self, validators: &Validators) -> Fetched {
        let work = async {
            match &self.source {
                CrlSource::File(path) => self.read_file(path).await,
                CrlSource::Url(url) => self.get(url, validators).await,
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(f) => f,
            Err(_) => Fetched::Failed(format!(
                "no answer within {}",
                ward_pki::issue::humanize(self.timeout)
            )),
        }
    }

    async fn read_file(&self, path: &std::path::Path) -> Fetched {
        let file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) => return Fetched::Failed(format!("opening {}: {e}", path.display())),
        };
        let mut bytes = Vec::new();
        // One byte more than allowed tells "too large" from "exactly the limit".
        if let Err(e) = file.take(self.max + 1).read_to_end(&mut bytes).await {
            return Fetched::Failed(format!("reading {}: {e}", path.display()));
        }
        if bytes.len() as u64 > self.max {
            return Fetched::Failed(format!(
                "{} is larger than crl_max_bytes ({})",
                path.display(),
                self.max
            ));
        }
        Fetched::Body {
            bytes,
            etag: None,
            last_modified: None,
        }
    }

    async fn get(&self, url: &str, validators: &Validators) -> Fetched {
        let Some(client) = &self.client else {
            return Fetched::Failed("no HTTP client (TLS setup failed)".into());
        };
        let mut req = Request::get(url).header(header::ACCEPT, "application/pkix-crl");
        if let Some(v) = validators
            .etag
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            req = req.header(header::IF_NONE_MATCH, v);
        }
        if let Some(v) = validators
            .last_modified
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            req = req.header(header::IF_MODIFIED_SINCE, v);
        }
        let req = match req.body(Full::new(Bytes::new())) {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(format!("building the request: {e}")),
        };
        let resp = match client.fetch(req, self.max, None).await {
            Ok(r) => r,
            Err(FetchError::TooLarge { len, max }) => {
                return Fetched::Failed(format!(
                    "GET {url}: {len} bytes is more than crl_max_bytes ({max})"
                ));
            }
            Err(e @ FetchError::Body(_)) => {
                return Fetched::Failed(format!("GET {url}: reading the body: {e}"));
            }
            Err(e) => return Fetched::Failed(format!("GET {url}: {e}")),
        };
        match resp.status {
            StatusCode::NOT_MODIFIED => return Fetched::NotModified,
            StatusCode::OK => {}
            other => return Fetched::Failed(format!("GET {url}: HTTP {other}")),
        }
        let text = |name: header::HeaderName| {
            resp.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Fetched::Body {
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
            bytes: resp.body.to_vec(),
        }
    }
}
