//! HTTP/1.1 message heads for the fast path: parse, check, and rewrite.
//!
//! Pure functions over byte buffers, so that every rule here is unit
//! tested without a socket. Parsing is httparse's; the rules on top are
//! RFC 9110/9112's for a proxy: hop-by-hop fields (and those `Connection`
//! names) are not forwarded, one message body length or none, one `Host`.

use bytes::BufMut;

use crate::pipeline::Refusal;

/// Largest request or response head accepted (the request line or status
/// line and all header fields).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head.
pub(crate) const MAX_HEADERS: usize = 100;

/// A request head the fast path can serve, borrowed from the buffer.
pub(crate) struct Request<'b, 'h> {
    /// Bytes of the head.
    pub len: usize,
    /// The method as sent.
    pub method: &'b str,
    /// The method, parsed.
    pub method_value: hyper::Method,
    /// The origin-form request target.
    pub target: &'b str,
    /// The header fields.
    pub headers: &'h [httparse::Header<'b>],
    /// The one body length the fields announce, if any.
    pub content_length: Option<u64>,
    /// The `Host` name, lowercase, without port.
    pub host: Option<String>,
}

impl Request<'_, '_> {
    /// The path of the target, without the query.
    pub(crate) fn path(&self) -> &str {
        path_of(self.target)
    }
}

/// The first bytes an HTTP/2 client sends (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the bytes at the start of a client buffer are.
pub(crate) enum ReadRequest<'b, 'h> {
    /// The head is not complete yet.
    Partial,
    /// The general path must serve this request (HTTP/1.0, `Upgrade`,
    /// `Expect`, a body with a transfer coding, a target that is not
    /// origin-form).
    Handoff,
    /// The head itself is unusable: answered, then the connection closes.
    Refuse(Refusal),
    /// A head to route.
    Head(Request<'b, 'h>),
}

/// Parses the request head at the start of `buf` (into `fields`) and
/// checks what the fast path needs of it; routing is the pipeline's.
pub(crate) fn read_request<'b, 'h>(
    buf: &'b [u8],
    fields: &'h mut [httparse::Header<'b>],
) -> ReadRequest<'b, 'h> {
    // HTTP/2 with prior knowledge over TLS without ALPN (a TCP tunnel such
    // as `ward gate client` in front of h2load): the general path speaks it.
    let preface_part = &H2_PREFACE[..buf.len().min(H2_PREFACE.len())];
    if buf.starts_with(preface_part) {
        return if buf.len() >= H2_PREFACE.len() {
            ReadRequest::Handoff
        } else {
            ReadRequest::Partial
        };
    }
    let mut req = httparse::Request::new(fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return ReadRequest::Refuse(Refusal::head_too_large());
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return ReadRequest::Refuse(Refusal::head_too_large());
        }
        Ok(httparse::Status::Partial) => return ReadRequest::Partial,
        Err(_) => return ReadRequest::Refuse(Refusal::bad_request("the request is malformed")),
    };
    let httparse::Request {
        method,
        path,
        version,
        headers,
    } = req;
    let (Some(method), Some(target), Some(1)) = (method, path, version) else {
        // HTTP/1.0 (or a missing part): the general path knows its rules.
        return ReadRequest::Handoff;
    };
    let headers: &'h [httparse::Header<'b>] = headers;
    if !target.starts_with('/')
        || has(headers, "transfer-encoding")
        || has(headers, "upgrade")
        || has(headers, "expect")
        || connection_has(headers, "upgrade")
    {
        return ReadRequest::Handoff;
    }
    let Ok(content_length) = content_length(headers) else {
        return ReadRequest::Refuse(Refusal::bad_request("invalid content-length"));
    };
    let Ok(host) = host(headers) else {
        return ReadRequest::Refuse(Refusal::bad_request("more than one host"));
    };
    let Ok(method_value) = hyper::Method::from_bytes(method.as_bytes()) else {
        return ReadRequest::Refuse(Refusal::bad_request("the request is malformed"));
    };
    ReadRequest::Head(Request {
        len,
        method,
        method_value,
        target,
        headers,
        content_length,
        host,
    })
}

/// Whether `name` is a hop-by-hop field.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    crate::forwarding::HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// The comma-separated tokens of every field called `name`, trimmed.
pub(crate) fn tokens<'h>(
    headers: &'h [httparse::Header<'h>],
    name: &'static str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn trim(mut t: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = t {
        t = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = t {
        t = rest;
    }
    t
}

/// Whether `Connection` lists `token` (an option such as `close`, or the
/// name of a field that is then hop-by-hop).
pub(crate) fn connection_has(headers: &[httparse::Header<'_>], token: &str) -> bool {
    tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether a field is present.
pub(crate) fn has(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case(name))
}

/// The message's `Content-Length`: `Ok(None)` without one; an error when
/// a value is not a decimal number or two values disagree (RFC 9112 §6.3).
pub(crate) fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, ()> {
    let mut found: Option<u64> = None;
    for t in tokens(headers, "content-length") {
        if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = t.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        match found {
            Some(prev) if prev != n => return Err(()),
            _ => found = Some(n),
        }
    }
    // A field present with an empty value is malformed too.
    if found.is_none() && has(headers, "content-length") {
        return Err(());
    }
    Ok(found)
}

/// The request's host: the one `Host` field, lowercase, without a port.
/// `Ok(None)` without one; an error for two or a value that is not text.
pub(crate) fn host(headers: &[httparse::Header<'_>]) -> Result<Option<String>, ()> {
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let Some(first) = hosts.next() else {
        return Ok(None);
    };
    if hosts.next().is_some() {
        return Err(());
    }
    let value = std::str::from_utf8(first.value).map_err(|_| ())?.trim();
    let name = match value.rsplit_once(':') {
        // Not an IPv6 literal's colon: a port follows.
        Some((name, port)) if port.parse::<u16>().is_ok() && !port.is_empty() => name,
        _ => value,
    };
    Ok(Some(name.to_ascii_lowercase()))
}

/// The path of a request target (no query).
pub(crate) fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(p, _)| p)
}

/// The connection-level identity values the gate adds to requests.
pub(crate) struct Added<'a> {
    /// The client's IP address (appended to `x-forwarded-for`).
    pub client_ip: &'a str,
    /// `(name, value)` fields to add after the client's own.
    pub fields: &'a [(&'static str, &'a [u8])],
    /// `host` to add when the client sent none.
    pub default_host: &'a str,
    /// The client is a trusted proxy: its forwarding fields are kept
    /// (see [`crate::forwarding`]).
    pub trusted: bool,
    /// The request's one body length, written once for however many
    /// (equal) `content-length` values the client sent.
    pub content_length: Option<u64>,
}

/// Writes the head to send upstream: the request line (HTTP/1.1, origin
/// form), the client's fields minus hop-by-hop, spoofable identity and
/// forwarding fields ([`crate::forwarding::drop_from_client`]), one
/// `content-length`, then the gate's own.
pub(crate) fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[httparse::Header<'_>],
    add: &Added<'_>,
) {
    out.put_slice(method.as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    let listed = has(headers, "connection");
    let mut host = false;
    let mut xff: Option<Vec<u8>> = None;
    let mut length_written = false;
    for h in headers {
        let name = h.name;
        if crate::forwarding::drop_from_client(name, add.trusted)
            || listed && connection_has(headers, name)
        {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            // `5, 5` or two equal fields: one value (the caller checked
            // they agree).
            if let Some(n) = add.content_length.filter(|_| !length_written) {
                put_field(out, name.as_bytes(), n.to_string().as_bytes());
                length_written = true;
            }
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            let v = xff.get_or_insert_with(Vec::new);
            if !v.is_empty() {
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(trim(h.value));
            continue;
        }
        host |= name.eq_ignore_ascii_case("host");
        put_field(out, name.as_bytes(), h.value);
    }
    if !host {
        put_field(out, b"host", add.default_host.as_bytes());
    }
    out.put_slice(b"x-forwarded-for: ");
    if let Some(prev) = xff.filter(|v| !v.is_empty()) {
        out.put_slice(&prev);
        out.put_slice(b", ");
    }
    out.put_slice(add.client_ip.as_bytes());
    out.put_slice(b"\r\nx-forwarded-proto: https\r\n");
    for (name, value) in add.fields {
        put_field(out, name.as_bytes(), value);
    }
    out.put_slice(b"\r\n");
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked, passed through as is.
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

/// A parsed upstream response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Bytes of the head in the buffer.
    pub len: usize,
    /// A 1xx interim response: discarded, the final one follows.
    pub interim: bool,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the upstream connection can carry another request after it.
    pub reusable: bool,
    /// Whether the client connection must close after it.
    pub close_client: bool,
}

/// Why an upstream response cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadResponse {
    /// The head is larger than [`MAX_HEAD`] or has too many fields.
    #[error("the upstream's response head is too large")]
    TooLarge,
    /// It does not parse, or its framing is contradictory.
    #[error("the upstream's response is malformed: {0}")]
    Malformed(&'static str),
}

/// Parses an upstream response head in `buf`; `Ok(None)` when more bytes
/// are needed. For a final response, writes the head to send the client
/// into `out` (`close`: the client connection closes after it).
pub(crate) fn parse_response(
    buf: &[u8],
    head_request: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(BadResponse::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Malformed("unparsable head")),
    };
    if len > MAX_HEAD {
        return Err(BadResponse::TooLarge);
    }
    let status = resp.code.unwrap_or(0);
    let headers: &[httparse::Header<'_>] = resp.headers;
    if status == 101 {
        return Err(BadResponse::Malformed("101 without an upgrade request"));
    }
    if (100..200).contains(&status) {
        return Ok(Some(ResponseHead {
            status,
            len,
            interim: true,
            framing: Framing::Empty,
            reusable: true,
            close_client: false,
        }));
    }
    let chunked_last = tokens(headers, "transfer-encoding")
        .last()
        .map(|t| t.eq_ignore_ascii_case(b"chunked"));
    let te = has(headers, "transfer-encoding");
    let length = if te {
        None
    } else {
        content_length(headers).map_err(|()| BadResponse::Malformed("invalid content-length"))?
    };
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if te {
        if chunked_last == Some(true) {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let http11 = resp.version == Some(1);
    let reusable = http11
        && !connection_has(headers, "close")
        && framing != Framing::UntilClose
        // With both, the length is ignored, and so is the connection.
        && !(te && has(headers, "content-length"));
    let close_client = close || framing == Framing::UntilClose;

    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(&itoa_3(status));
    out.put_u8(b' ');
    out.put_slice(resp.reason.unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    let listed = has(headers, "connection");
    for h in headers {
        let name = h.name;
        let framing_field = name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("content-length");
        if framing_field {
            // Forwarded as the framing the client will see: the
            // transfer coding when there is one, else the length.
            if te == name.eq_ignore_ascii_case("content-length") {
                continue;
            }
        } else if is_hop_by_hop(name) || listed && connection_has(headers, name) {
            continue;
        }
        put_field(out, name.as_bytes(), h.value);
    }
    if close_client {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    Ok(Some(ResponseHead {
        status,
        len,
        interim: false,
        framing,
        reusable,
        close_client,
    }))
}

/// A status code (100–999) as three ASCII digits.
fn itoa_3(status: u16) -> [u8; 3] {
    let s = status.min(999);
    // Each digit is < 10, so the casts cannot truncate.
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

/// A complete response the gate makes itself: a small JSON error.
pub(crate) fn error_response(out: &mut Vec<u8>, refusal: &Refusal, close: bool) {
    let status = refusal.status;
    let body = refusal.body();
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(&itoa_3(status));
    out.put_u8(b' ');
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.put_slice(body.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body.as_bytes());
}

#[cfg(test)]
mod tests;
