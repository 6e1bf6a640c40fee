//! A minimal HTTP/1.0 client for CRL distribution points and OCSP
//! responders, which are plain-HTTP URLs by convention (their answers are
//! signed, so TLS adds nothing). One request per connection, a size cap and
//! a timeout; no redirects, no TLS.
//!
//! Everything the engine fetches goes through [`get`] and [`post`], so this
//! module can give way to a shared HTTP client without touching the rest.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a fetch failed, as one readable line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FetchError(String);

type Result<T> = std::result::Result<T, FetchError>;

fn fail(msg: impl Into<String>) -> FetchError {
    FetchError(msg.into())
}

/// Prefixes an error with what was being done.
fn context<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> FetchError {
    move |e| FetchError(format!("{what}: {e}"))
}

/// Largest answer read (CRLs of big CAs run to megabytes).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// Fetches `url` with GET.
pub(crate) async fn get(url: &str, timeout: Duration) -> Result<Vec<u8>> {
    request(url, "GET", None, timeout).await
}

/// POSTs `body` to `url` with the given content type.
pub(crate) async fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    request(url, "POST", Some((content_type, body)), timeout).await
}

/// `http://host[:port]/path` → (host header, connect address, path).
fn split_url(url: &str) -> Result<(String, String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(fail(format!("{url}: only http:// URLs are fetched")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(fail(format!("{url}: bad host")));
    }
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    let addr = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority.to_owned(), addr, path.to_owned()))
}

async fn request(
    url: &str,
    method: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let (host, addr, path) = split_url(url)?;
    let work = async {
        let mut tcp = TcpStream::connect(&addr)
            .await
            .map_err(context(format!("connecting to {addr}")))?;
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ward-check\r\nAccept: */*\r\nConnection: close\r\n"
        );
        if let Some((content_type, bytes)) = body {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes())
            .await
            .map_err(context("sending the request"))?;
        if let Some((_, bytes)) = body {
            tcp.write_all(bytes)
                .await
                .map_err(context("sending the request"))?;
        }
        let mut raw = Vec::new();
        tcp.take(MAX_BODY + 64 * 1024)
            .read_to_end(&mut raw)
            .await
            .map_err(context("reading the answer"))?;
        Ok::<_, FetchError>(raw)
    };
    let raw = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| fail(format!("{url}: timed out")))?
        .map_err(context(format!("fetching {url}")))?;
    parse_response(&raw).map_err(context(format!("fetching {url}")))
}

/// Status line, headers, body (identity or chunked).
fn parse_response(raw: &[u8]) -> Result<Vec<u8>> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail("no end of the HTTP header"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if code != "200" {
        return Err(fail(format!("HTTP status {status:?}")));
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if u64::try_from(body.len()).unwrap_or(u64::MAX) > MAX_BODY {
        return Err(fail(format!("answer larger than {MAX_BODY} bytes")));
    }
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| fail("bad chunk header"))?;
        let size_text = String::from_utf8_lossy(&rest[..end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(context("bad chunk size"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| fail("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size + 2..)
            .ok_or_else(|| fail("truncated chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        let (host, addr, path) = split_url("http://ca.example:8080/v1/crl").unwrap();
        assert_eq!(
            (host.as_str(), addr.as_str(), path.as_str()),
            ("ca.example:8080", "ca.example:8080", "/v1/crl")
        );
        let (_, addr, path) = split_url("http://[::1]/x").unwrap();
        assert_eq!((addr.as_str(), path.as_str()), ("[::1]:80", "/x"));
        assert!(split_url("https://ca.example/crl").is_err());
        assert!(split_url("http://user@ca.example/crl").is_err());
    }

    #[test]
    fn responses_parse() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parse_response(plain).unwrap(), b"abc");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"abc");
        assert!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
