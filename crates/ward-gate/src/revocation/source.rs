//! Fetching a CRL from its source: HTTP(S) with conditional GET (ETag /
//! If-None-Match, Last-Modified / If-Modified-Since), or a file. Both are
//! size-limited and time-limited; redirects are not followed.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncReadExt;

use crate::config::CrlSource;

/// The HTTP(S) client CRL sources share.
pub(crate) type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Builds the client; `https://` sources are verified against `roots` (the
/// client CA bundles, which Ward's CA server certificate chains to).
pub(crate) fn http_client(roots: &[Vec<u8>]) -> Option<HttpClient> {
    let mut store = RootCertStore::empty();
    for der in roots {
        let _ = store.add(CertificateDer::from(der.clone()));
    }
    let tls = ClientConfig::builder_with_provider(ward_tls::provider())
        .with_protocol_versions(ward_tls::TLS13_ONLY)
        .ok()?
        .with_root_certificates(store)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Some(Client::builder(TokioExecutor::new()).build(connector))
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
        let req = match req.body(Empty::new()) {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(format!("building the request: {e}")),
        };
        let resp = match client.request(req).await {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(format!("GET {url}: {e}")),
        };
        match resp.status() {
            StatusCode::NOT_MODIFIED => return Fetched::NotModified,
            StatusCode::OK => {}
            other => return Fetched::Failed(format!("GET {url}: HTTP {other}")),
        }
        let text = |name: header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = text(header::ETAG);
        let last_modified = text(header::LAST_MODIFIED);
        if let Some(len) = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > self.max
        {
            return Fetched::Failed(format!(
                "GET {url}: {len} bytes is more than crl_max_bytes ({})",
                self.max
            ));
        }
        let limit = usize::try_from(self.max).unwrap_or(usize::MAX);
        match Limited::new(resp.into_body(), limit).collect().await {
            Ok(body) => Fetched::Body {
                bytes: body.to_bytes().to_vec(),
                etag,
                last_modified,
            },
            Err(e) => Fetched::Failed(format!("GET {url}: reading the body: {e}")),
        }
    }
}
