//! Fetching a CRL from its source: HTTP(S) with conditional GET (ETag /
//! If-None-Match, Last-Modified / If-Modified-Since), or a file. Both are
//! size-limited and time-limited; redirects are not followed.
//!
//! An HTTP answer may name the CRLs of the issuer's siblings (a Ward CA
//! during an intermediate rotation) in `Link: <URL>; rel="related";
//! type="application/pkix-crl"` headers: [`crl_links`] keeps those on the
//! source's own origin, which the gate then polls too.

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
        /// The sibling CRLs the answer names (see [`crl_links`]).
        links: Vec<String>,
        /// Where the CRL issuer's certificate is (see [`issuer_link`]).
        issuer: Option<String>,
    },
    /// 304: the CRL in force is still the newest.
    NotModified {
        /// The sibling CRLs the answer names (see [`crl_links`]).
        links: Vec<String>,
        /// Where the CRL issuer's certificate is (see [`issuer_link`]).
        issuer: Option<String>,
    },
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
            links: Vec::new(),
            issuer: None,
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
        let links = crl_links(url, &resp.headers);
        let issuer = issuer_link(url, &resp.headers);
        match resp.status {
            StatusCode::NOT_MODIFIED => return Fetched::NotModified { links, issuer },
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
            links,
            issuer,
        }
    }

    /// Fetches the certificate at `url` (a CRL issuer a `Link: rel="up"`
    /// named): DER, or the first certificate of a PEM file; at most
    /// [`MAX_CERT`] bytes, within the source's timeout.
    pub(crate) async fn fetch_cert(&self, url: &str) -> Result<Vec<u8>, String> {
        let Some(client) = &self.client else {
            return Err("no HTTP client (TLS setup failed)".into());
        };
        let req = Request::get(url)
            .header(header::ACCEPT, "application/pkix-cert")
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("building the request: {e}"))?;
        let resp = tokio::time::timeout(self.timeout, client.fetch(req, MAX_CERT, None))
            .await
            .map_err(|_| format!("GET {url}: no answer in time"))?
            .map_err(|e| format!("GET {url}: {e}"))?;
        if resp.status != StatusCode::OK {
            return Err(format!("GET {url}: HTTP {}", resp.status));
        }
        let body = resp.body.to_vec();
        if body.starts_with(b"-----BEGIN") {
            return ward_pki::pem::parse_certs(&body)
                .ok()
                .and_then(|c| c.into_iter().next())
                .map(|c| c.to_vec())
                .ok_or_else(|| format!("GET {url}: no certificate in the PEM answer"));
        }
        Ok(body)
    }
}

/// Largest CRL issuer certificate fetched.
pub(crate) const MAX_CERT: u64 = 64 * 1024;

/// Most sibling CRLs taken from one answer.
pub(crate) const MAX_LINKS: usize = 16;
/// Longest link target considered.
const MAX_LINK_LEN: usize = 2048;

/// The sibling CRL URLs an answer from `source` names in its `Link`
/// headers (RFC 8288): targets with `rel="related"` and
/// `type="application/pkix-crl"`. At most [`MAX_LINKS`], in order, no
/// duplicates, never `source` itself; see [`same_origin_links`].
pub(crate) fn crl_links(source: &str, headers: &hyper::HeaderMap) -> Vec<String> {
    same_origin_links(source, headers, "related", "application/pkix-crl")
}

/// The certificate of the CRL's issuer, if the answer names it: the first
/// `Link` with `rel="up"` and `type="application/pkix-cert"`.
pub(crate) fn issuer_link(source: &str, headers: &hyper::HeaderMap) -> Option<String> {
    same_origin_links(source, headers, "up", "application/pkix-cert")
        .into_iter()
        .next()
}

/// `Link` targets with relation `rel` and media type `ty`, resolved against
/// `source` and kept only on its own scheme, host and port (an answer must
/// not make the gate fetch from elsewhere).
fn same_origin_links(source: &str, headers: &hyper::HeaderMap, rel: &str, ty: &str) -> Vec<String> {
    let Some(origin) = origin(source) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for value in headers.get_all(header::LINK) {
        let Ok(text) = value.to_str() else { continue };
        for (target, params) in link_values(text) {
            if out.len() == MAX_LINKS {
                return out;
            }
            if target.len() > MAX_LINK_LEN || !has_params(params, rel, ty) {
                continue;
            }
            let url = if target.starts_with('/') && !target.starts_with("//") {
                format!("{origin}{target}")
            } else if origin_matches(target, origin) {
                target.to_owned()
            } else {
                continue;
            };
            if url != source && !out.contains(&url) {
                out.push(url);
            }
        }
    }
    out
}

/// `scheme://authority` of an `http(s)://` URL, without user info.
fn origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(&url[..url.len() - rest.len() + end])
}

/// Whether absolute `target` is on `origin`, followed by a path.
fn origin_matches(target: &str, origin: &str) -> bool {
    target
        .strip_prefix(origin)
        .is_some_and(|path| path.starts_with('/'))
}

/// Splits a `Link` field value into (target, parameters) pairs.
fn link_values(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let target = &after[..close];
        let tail = &after[close + 1..];
        // Parameters run to the next link value: a comma followed by `<`.
        let end = tail
            .match_indices(',')
            .find(|(i, _)| tail[i + 1..].trim_start().starts_with('<'))
            .map_or(tail.len(), |(i, _)| i);
        out.push((target.trim(), &tail[..end]));
        rest = &tail[end..];
    }
    out
}

/// Whether link parameters say `rel="REL"` (among others) and
/// `type="TY"`.
fn has_params(params: &str, rel: &str, ty: &str) -> bool {
    let (mut rel_ok, mut ty_ok) = (false, false);
    for param in params.split(';') {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "rel" => {
                rel_ok = value
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(rel));
            }
            "type" => ty_ok = value.eq_ignore_ascii_case(ty),
            _ => {}
        }
    }
    rel_ok && ty_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(source: &str, values: &[&str]) -> Vec<String> {
        let mut h = hyper::HeaderMap::new();
        for v in values {
            h.append(header::LINK, HeaderValue::from_str(v).unwrap());
        }
        crl_links(source, &h)
    }

    const CRL: &str = r#"rel="related"; type="application/pkix-crl""#;

    #[test]
    fn relative_and_same_origin_links_are_resolved() {
        let got = links(
            "https://ca.example:8443/v1/crl",
            &[&format!(
                "</v1/crl/aa>; {CRL}, <https://ca.example:8443/v1/crl/bb>; {CRL}"
            )],
        );
        assert_eq!(
            got,
            [
                "https://ca.example:8443/v1/crl/aa",
                "https://ca.example:8443/v1/crl/bb"
            ]
        );
    }

    #[test]
    fn other_origins_and_other_relations_are_ignored() {
        let got = links(
            "https://ca.example:8443/v1/crl",
            &[
                &format!("<https://evil.example/v1/crl/aa>; {CRL}"),
                &format!("<https://ca.example:8443.evil.example/x>; {CRL}"),
                &format!("<http://ca.example:8443/v1/crl/aa>; {CRL}"),
                &format!("<//evil.example/x>; {CRL}"),
                r#"</v1/crl/cc>; rel="alternate"; type="application/pkix-crl""#,
                r#"</v1/crl/dd>; rel="related""#,
                r#"</v1/crl/ee>; rel="related"; type="text/html""#,
                &format!("</v1/crl>; {CRL}"),
                "no brackets at all",
                "<unterminated",
            ],
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn links_are_bounded_and_deduplicated() {
        let many: Vec<String> = (0..100)
            .map(|i| format!("</v1/crl/{}>; {CRL}", i % 40))
            .collect();
        let got = links("http://127.0.0.1:1/v1/crl", &[&many.join(", ")]);
        assert_eq!(got.len(), MAX_LINKS);
        let long = format!("</{}>; {CRL}", "a".repeat(5000));
        assert!(links("http://127.0.0.1:1/v1/crl", &[&long]).is_empty());
    }

    #[test]
    fn rel_lists_and_case_are_understood() {
        let got = links(
            "http://h/v1/crl",
            &[r#"</v1/crl/x>; REL="alternate related"; Type=application/PKIX-CRL"#],
        );
        assert_eq!(got, ["http://h/v1/crl/x"]);
    }

    #[test]
    fn the_issuer_link_is_the_first_up_certificate_on_the_origin() {
        let mut h = hyper::HeaderMap::new();
        for v in [
            r#"<https://evil.example/i>; rel="up"; type="application/pkix-cert""#,
            r#"</v1/crl/x>; rel="related"; type="application/pkix-crl""#,
            r#"</v1/intermediates/ab>; rel="up"; type="application/pkix-cert""#,
            r#"</v1/intermediates/cd>; rel="up"; type="application/pkix-cert""#,
        ] {
            h.append(header::LINK, HeaderValue::from_str(v).unwrap());
        }
        assert_eq!(
            issuer_link("http://ca:1/v1/crl", &h).as_deref(),
            Some("http://ca:1/v1/intermediates/ab")
        );
        assert_eq!(
            crl_links("http://ca:1/v1/crl", &h),
            ["http://ca:1/v1/crl/x"]
        );
        assert_eq!(
            issuer_link("http://ca:1/v1/crl", &hyper::HeaderMap::new()),
            None
        );
    }

    #[test]
    fn a_source_with_user_info_follows_nothing() {
        assert!(links("https://u:p@h/v1/crl", &[&format!("</v1/crl/x>; {CRL}")]).is_empty());
    }
}
