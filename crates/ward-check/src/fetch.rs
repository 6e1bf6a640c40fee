//! Fetches for CRL distribution points and OCSP responders, which are
//! plain-HTTP URLs by convention (their answers are signed, so TLS adds
//! nothing), over Ward's one outbound HTTP client ([`ward_tls::http`]):
//! one request per connection, a size cap and a timeout, no redirects.
//!
//! Everything the engine fetches goes through [`get`] and [`post`].

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use ward_tls::http::{HttpClient, Pooling};

/// Why a fetch failed, as one readable line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FetchError(String);

type Result<T> = std::result::Result<T, FetchError>;

/// Largest answer read (CRLs of big CAs run to megabytes).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// Fetches `url` with GET.
pub(crate) async fn get(url: &str, timeout: Duration) -> Result<Vec<u8>> {
    request(url, Method::GET, None, timeout).await
}

/// POSTs `body` to `url` with the given content type.
pub(crate) async fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    request(url, Method::POST, Some((content_type, body)), timeout).await
}

/// Accepts `http://host[:port]/path` only: no TLS, no credentials in the URL.
fn check_url(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(FetchError(format!("{url}: only http:// URLs are fetched")));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(FetchError(format!("{url}: bad host")));
    }
    Ok(())
}

async fn request(
    url: &str,
    method: Method,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    check_url(url)?;
    let fail = |e: &dyn std::fmt::Display| FetchError(format!("fetching {url}: {e}"));
    let mut builder = Request::builder()
        .method(method)
        .uri(url)
        .header(header::USER_AGENT, "ward-check")
        .header(header::ACCEPT, "*/*");
    let payload = match body {
        Some((content_type, bytes)) => {
            builder = builder.header(header::CONTENT_TYPE, content_type);
            Bytes::copy_from_slice(bytes)
        }
        None => Bytes::new(),
    };
    let req = builder.body(Full::new(payload)).map_err(|e| fail(&e))?;
    // Plain HTTP only (checked above): the client needs no trust anchors.
    let client =
        HttpClient::new(rustls::RootCertStore::empty(), Pooling::Unpooled).map_err(|e| fail(&e))?;
    let answer = client
        .fetch(req, MAX_BODY, Some(timeout))
        .await
        .map_err(|e| fail(&e))?;
    if answer.status != StatusCode::OK {
        return Err(fail(&format_args!("HTTP status {}", answer.status)));
    }
    Ok(answer.body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host() {
        assert!(check_url("http://ca.example:8080/v1/crl").is_ok());
        assert!(check_url("http://[::1]/x").is_ok());
        assert!(check_url("https://ca.example/crl").is_err());
        assert!(check_url("http://user@ca.example/crl").is_err());
        assert!(check_url("http:///crl").is_err());
    }
}
