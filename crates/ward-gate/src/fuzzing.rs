//! Entry points for the fuzz targets in `fuzz/` at the repository root.
//!
//! Not an API: hidden from the documentation and used by nothing but the
//! fuzz targets. Each function runs the parsing the gate does on bytes a
//! client or an upstream sends, without sockets: the ClientHello reader,
//! the passthrough path's server-name reader, the HTTP/1 fast path's
//! request and response heads, and its chunked body scanner. Parsers that are public anyway
//! ([`crate::revocation::crl`], [`crate::config::GateConfig::from_toml`])
//! are called by the targets directly.

use crate::server::h1::{chunked, head};

/// The passthrough path's own server-name reader, and its answer.
pub use crate::sni::{Sni, read as sni};

/// What the gate reads from a ClientHello before choosing a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The server name (SNI), as rustls accepted it.
    pub sni: Option<String>,
    /// Whether any TLS 1.3 cipher suite is offered.
    pub tls13: bool,
}

/// Reads a ClientHello from the bytes a client sent first, as the gate's
/// accept loop does (rustls' `Acceptor`, then the SNI and the TLS 1.3
/// check). `Ok(None)` when more bytes are needed; `Err` when rustls refuses.
pub fn client_hello(mut bytes: &[u8]) -> Result<Option<Hello>, String> {
    let mut acceptor = rustls::server::Acceptor::default();
    while !bytes.is_empty() {
        let n = acceptor.read_tls(&mut bytes).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return Ok(Some(Hello {
                    sni: hello.server_name().map(str::to_owned),
                    tls13: crate::server::offers_tls13(hello.cipher_suites()),
                }));
            }
            Ok(None) => {}
            Err((e, _alert)) => return Err(e.to_string()),
        }
    }
    Ok(None)
}

/// A request head the HTTP/1 fast path accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head in the buffer.
    pub len: usize,
    /// The body length announced.
    pub body: u64,
    /// The `Host` name, lowercase, without port.
    pub host: Option<String>,
    /// The head written for the upstream.
    pub upstream: Vec<u8>,
}

/// What the fast path makes of the bytes at the start of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// More bytes are needed.
    Partial,
    /// Refused with this status.
    Refused(u16),
    /// Left to the general (hyper) path.
    Handoff,
    /// Forwarded.
    Forward(RequestHead),
}

/// Reads a request head with the HTTP/1 fast path's own reader
/// (`server::h1::head::read_request`, what the fast path routes on), then
/// writes the upstream head as it does for a forwarded request, with fixed
/// connection values.
pub fn request_head(buf: &[u8]) -> RequestOutcome {
    let mut fields = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
    let req = match head::read_request(buf, &mut fields) {
        head::ReadRequest::Partial => return RequestOutcome::Partial,
        head::ReadRequest::Handoff => return RequestOutcome::Handoff,
        head::ReadRequest::Refuse(refusal) => return RequestOutcome::Refused(refusal.status),
        head::ReadRequest::Head(req) => req,
    };
    let mut upstream = Vec::new();
    head::write_request_head(
        &mut upstream,
        req.method,
        req.target,
        req.headers,
        &head::Added {
            client_ip: "192.0.2.1",
            fields: &[
                ("x-forwarded-client-cert", b"Hash=00"),
                ("x-ward-spiffe-id", b"spiffe://example.org/fuzz"),
            ],
            default_host: "upstream.invalid",
            trusted: false,
            content_length: req.content_length,
        },
    );
    RequestOutcome::Forward(RequestHead {
        len: req.len,
        body: req.content_length.unwrap_or(0),
        host: req.host,
        upstream,
    })
}

/// A parsed upstream response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Bytes of the head in the buffer.
    pub len: usize,
    /// A 1xx interim response.
    pub interim: bool,
    /// Whether the body is chunked.
    pub chunked: bool,
    /// The head written for the client (empty for an interim response).
    pub client: Vec<u8>,
}

/// Parses an upstream response head as the fast path does; `Ok(None)` when
/// more bytes are needed.
pub fn response_head(
    buf: &[u8],
    head_request: bool,
    close: bool,
) -> Result<Option<ResponseHead>, String> {
    let mut out = Vec::new();
    let parsed =
        head::parse_response(buf, head_request, close, &mut out).map_err(|e| e.to_string())?;
    Ok(parsed.map(|r| ResponseHead {
        status: r.status,
        len: r.len,
        interim: r.interim,
        chunked: r.framing == head::Framing::Chunked,
        client: out,
    }))
}

/// The fast path's chunked body scanner.
#[derive(Debug, Clone, Default)]
pub struct ChunkScanner(chunked::Scanner);

impl ChunkScanner {
    /// Consumes body bytes; returns how many belong to the body.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, String> {
        self.0.feed(buf).map_err(|e| e.to_string())
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

#[cfg(test)]
mod tests {
    //! The entry points must keep doing what the server does: these pin
    //! their answers on ordinary inputs, so a drift shows here first.

    use std::sync::Arc;

    use super::*;

    /// The first flight of a rustls client.
    fn hello_from_rustls(sni: &str, tls13: bool) -> Vec<u8> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if !tls13 {
            // rustls offers the suites of every version it was given.
            provider
                .cipher_suites
                .retain(|s| s.version() == &rustls::version::TLS12);
        }
        let provider = Arc::new(provider);
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS12]
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn client_hello_yields_sni_and_version() {
        let hello = hello_from_rustls("gate.example.org", true);
        let read = client_hello(&hello).unwrap().unwrap();
        assert_eq!(read.sni.as_deref(), Some("gate.example.org"));
        assert!(read.tls13);
        let tls12 = client_hello(&hello_from_rustls("a.example", false))
            .unwrap()
            .unwrap();
        assert!(!tls12.tls13);
        assert_eq!(client_hello(&hello[..hello.len() / 2]), Ok(None));
        assert!(client_hello(b"GET / HTTP/1.1\r\n\r\n").is_err());
    }

    /// What the `sni` fuzz target asserts, for one input.
    fn sni_agrees_with_rustls(data: &[u8]) {
        let fast = sni(data);
        match (&fast, client_hello(data)) {
            (Sni::Found(name), Ok(Some(hello))) => assert_eq!(name, &hello.sni, "{data:?}"),
            (Sni::Found(_), Ok(None)) | (Sni::Incomplete, Ok(Some(_))) => {
                panic!("{fast:?} on {data:?}")
            }
            _ => {}
        }
    }

    #[test]
    fn the_passthrough_sni_reader_agrees_with_rustls_on_real_and_mutated_hellos() {
        // First flights of rustls and of Python's OpenSSL client (fuzz seeds).
        let seeds = [
            hello_from_rustls("gate.example.org", true),
            hello_from_rustls("a.example", false),
            include_bytes!("../../../fuzz/corpus/sni/seed-tls13-sni-h2").to_vec(),
            include_bytes!("../../../fuzz/corpus/sni/seed-tls12-only").to_vec(),
            include_bytes!("../../../fuzz/corpus/sni/seed-no-sni").to_vec(),
        ];
        let want = [
            Some("gate.example.org"),
            Some("a.example"),
            Some("gate.example.org"),
            Some("api.example.org"),
            None,
        ];
        for (seed, want) in seeds.iter().zip(want) {
            assert_eq!(sni(seed), Sni::Found(want.map(str::to_owned)));
            for cut in 0..seed.len() {
                assert_eq!(sni(&seed[..cut]), Sni::Incomplete);
                sni_agrees_with_rustls(&seed[..cut]);
            }
        }
        // Deterministic mutations: overwrite, insert or delete bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % below as u64).unwrap()
        };
        let mut found = 0;
        for round in 0..20_000 {
            let mut data = seeds[round % seeds.len()].clone();
            for _ in 0..=next(3) {
                let at = next(data.len());
                match next(4) {
                    0 => data[at] = u8::try_from(next(256)).unwrap(),
                    1 => data[at] ^= 1 << next(8),
                    2 => data.insert(at, u8::try_from(next(256)).unwrap()),
                    _ => {
                        data.remove(at);
                    }
                }
            }
            if matches!(sni(&data), Sni::Found(_)) {
                found += 1;
            }
            sni_agrees_with_rustls(&data);
        }
        // Most mutations land in opaque bytes (random, key shares): the
        // reader still answers for those, and agrees.
        assert!(found > 1_000, "{found}");
    }

    #[test]
    fn request_heads_are_refused_handed_off_or_rewritten() {
        assert_eq!(
            request_head(b"GET / HTTP/1.1\r\nHost: a"),
            RequestOutcome::Partial
        );
        assert_eq!(
            request_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            RequestOutcome::Refused(400)
        );
        assert_eq!(
            request_head(b"GET / HTTP/1.0\r\n\r\n"),
            RequestOutcome::Handoff
        );
        let RequestOutcome::Forward(head) = request_head(
            b"GET /x HTTP/1.1\r\nHost: A.example:8443\r\nX-Ward-Spiffe-Id: spoof\r\ncontent-length: 2\r\n\r\nhi",
        ) else {
            panic!("not forwarded");
        };
        assert_eq!((head.body, head.host.as_deref()), (2, Some("a.example")));
        let text = String::from_utf8(head.upstream).unwrap();
        assert!(!text.contains("spoof"), "{text}");
        assert!(text.contains("x-forwarded-for: 192.0.2.1\r\n"), "{text}");
    }

    #[test]
    fn response_heads_and_chunked_bodies() {
        let head = response_head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nkeep-alive: 1\r\n\r\n",
            false,
            false,
        )
        .unwrap()
        .unwrap();
        assert!(head.chunked && !head.interim);
        assert!(
            !String::from_utf8(head.client)
                .unwrap()
                .contains("keep-alive")
        );
        assert_eq!(response_head(b"HTTP/1.1 200", false, false), Ok(None));
        assert!(response_head(b"HTTP/1.1 101 Switching\r\n\r\n", false, false).is_err());
        let mut scanner = ChunkScanner::default();
        assert_eq!(scanner.feed(b"2\r\nhi\r\n0\r\n\r\nNEXT"), Ok(12));
        assert!(scanner.is_done());
        assert!(ChunkScanner::default().feed(b"x\r\n").is_err());
    }
}
