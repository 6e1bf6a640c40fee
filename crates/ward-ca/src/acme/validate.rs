//! Challenge validation (RFC 8555 §8.3, §8.4; RFC 8737; RFC 8738): the CA
//! connects out to the identifier and checks the key authorization.
//!
//! Addresses of DNS identifiers come from `[acme] dns_resolver` when set,
//! else from the system resolver. http-01 follows up to
//! [`MAX_REDIRECTS`] redirects to `http://` or `https://` on the ports
//! standing for 80 and 443 (`http01_port`, `tlsalpn01_port`), as Let's
//! Encrypt does (RFC 8555 §8.3); the certificate of an `https://` hop is not
//! judged. Every read is size- and time-limited: a validation target is
//! untrusted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::dns;
use super::jws::b64e;

/// How long one validation may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest http-01 response read (every hop).
const MAX_HTTP_RESPONSE: usize = 16 * 1024;
/// Most redirects one http-01 validation follows (Let's Encrypt: 10).
pub(crate) const MAX_REDIRECTS: usize = 10;
/// OID of the acmeIdentifier extension (RFC 8737 §3).
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

/// Where and how validations connect.
#[derive(Clone, Debug)]
pub struct Validator {
    /// http-01 port.
    pub http01_port: u16,
    /// tls-alpn-01 port.
    pub tlsalpn01_port: u16,
    /// The DNS server asked for A, AAAA and TXT, if configured.
    pub dns_resolver: Option<SocketAddr>,
}

/// What was validated.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// A DNS name (without any `*.`).
    Dns(&'a str),
    /// An IP address.
    Ip(IpAddr),
}

impl Validator {
    /// Runs one challenge; `Err` carries the problem type and detail.
    pub(crate) async fn validate(
        &self,
        kind: &str,
        target: Target<'_>,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), (&'static str, String)> {
        let work = async {
            match kind {
                "http-01" => self.http01(target, token, key_authorization).await,
                "tls-alpn-01" => self.tls_alpn01(target, key_authorization).await,
                "dns-01" => self.dns01(target, key_authorization).await,
                other => Err(("malformed", format!("unknown challenge type {other}"))),
            }
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(("connection", "validation timed out".into())))
    }

    async fn addresses(
        &self,
        target: Target<'_>,
        port: u16,
    ) -> Result<Vec<SocketAddr>, (&'static str, String)> {
        let name = match target {
            Target::Ip(ip) => return Ok(vec![SocketAddr::new(ip, port)]),
            Target::Dns(name) => name,
        };
        let mut out = Vec::new();
        match self.dns_resolver {
            Some(server) => {
                for qtype in [dns::A, dns::AAAA] {
                    let records = dns::query(server, name, qtype)
                        .await
                        .map_err(|e| ("dns", format!("resolving {name}: {e}")))?;
                    out.extend(records.into_iter().filter_map(|r| match r {
                        dns::Record::Addr(ip) => Some(SocketAddr::new(ip, port)),
                        dns::Record::Txt(_) => None,
                    }));
                }
            }
            None => {
                let found = tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|e| ("dns", format!("resolving {name}: {e}")))?;
                out.extend(found);
            }
        }
        if out.is_empty() {
            return Err(("dns", format!("{name} has no A or AAAA record")));
        }
        Ok(out)
    }

    async fn connect(
        &self,
        target: Target<'_>,
        port: u16,
    ) -> Result<TcpStream, (&'static str, String)> {
        let mut last = String::from("no address");
        for addr in self.addresses(target, port).await? {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        Err(("connection", last))
    }

    async fn http01(
        &self,
        target: Target<'_>,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), (&'static str, String)> {
        let mut hop = Hop {
            https: false,
            host: match target {
                Target::Dns(name) => Host::Dns(name.to_owned()),
                Target::Ip(ip) => Host::Ip(ip),
            },
            port: self.http01_port,
            path: format!("/.well-known/acme-challenge/{token}"),
        };
        for redirects in 0..=MAX_REDIRECTS {
            let response = self.fetch(&hop).await?;
            let body = match http_response(&response)
                .map_err(|e| ("unauthorized", format!("http-01 from {}: {e}", hop.host)))?
            {
                HttpOutcome::Body(body) => body,
                HttpOutcome::Redirect(location) => {
                    if redirects == MAX_REDIRECTS {
                        return Err((
                            "unauthorized",
                            format!("http-01: more than {MAX_REDIRECTS} redirects"),
                        ));
                    }
                    hop = self
                        .follow(&hop, &location)
                        .map_err(|e| ("unauthorized", format!("http-01 redirect: {e}")))?;
                    continue;
                }
            };
            let got = String::from_utf8_lossy(&body);
            return if got.trim_end() == key_authorization {
                Ok(())
            } else {
                Err((
                    "unauthorized",
                    format!(
                        "http-01: the response from {} is not the key authorization",
                        hop.host
                    ),
                ))
            };
        }
        Err(("unauthorized", "http-01: too many redirects".into()))
    }

    /// One http-01 request: the raw response, at most
    /// [`MAX_HTTP_RESPONSE`] bytes.
    async fn fetch(&self, hop: &Hop) -> Result<Vec<u8>, (&'static str, String)> {
        let target = match &hop.host {
            Host::Dns(name) => Target::Dns(name),
            Host::Ip(ip) => Target::Ip(*ip),
        };
        let host = hop.host.to_string();
        let stream = self.connect(target, hop.port).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\n\
             User-Agent: ward-acme-validator\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            hop.path
        );
        if hop.https {
            let capture = ward_tls::danger::CapturingVerifier::new();
            let config = ward_tls::danger::acme_http01_redirect_client(&capture)
                .map_err(|e| ("serverInternal", format!("TLS configuration: {e}")))?;
            let name = match &hop.host {
                Host::Dns(n) => rustls_pki_types::ServerName::try_from(n.clone())
                    .map_err(|_| ("malformed", format!("{n} is not a valid server name")))?,
                Host::Ip(ip) => rustls_pki_types::ServerName::IpAddress((*ip).into()),
            };
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, stream)
                .await
                .map_err(|e| ("tls", format!("http-01 TLS handshake with {host}: {e}")))?;
            exchange(tls, &request, &host).await
        } else {
            exchange(stream, &request, &host).await
        }
    }

    /// The next hop of a redirect from `from` to `location`.
    fn follow(&self, from: &Hop, location: &str) -> Result<Hop, String> {
        if location.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
            return Err("the Location has spaces or control characters".into());
        }
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(Hop {
                path: location.to_owned(),
                ..from.clone()
            });
        }
        let (https, rest) = if let Some(r) = location.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = location.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "{location:?}: only http:// and https:// redirects are followed"
            ));
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('/') => p.to_owned(),
            p => format!("/{p}"),
        };
        let path = path.split('#').next().unwrap_or("/").to_owned();
        if authority.contains('@') {
            return Err("a redirect with user information is not followed".into());
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (ip, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("bad host in {location:?}"))?;
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| format!("bad host in {location:?}"))?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').unwrap_or(p)),
                };
                (Host::Ip(ip), port)
            }
            None => {
                let (h, port) = match authority.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (authority, None),
                };
                match h.parse::<IpAddr>() {
                    Ok(ip) => (Host::Ip(ip), port),
                    Err(_) => (
                        Host::Dns(
                            ward_pki::issue::check_dns_name(h)
                                .map_err(|e| format!("bad host in {location:?}: {e}"))?,
                        ),
                        port,
                    ),
                }
            }
        };
        let (standard, configured) = if https {
            (443, self.tlsalpn01_port)
        } else {
            (80, self.http01_port)
        };
        match port.map(str::parse::<u16>) {
            None => {}
            Some(Ok(p)) if p == standard || p == configured => {}
            Some(_) => {
                return Err(format!(
                    "{location:?}: redirects are followed to port {standard} \
                     ({configured} here) only"
                ));
            }
        }
        Ok(Hop {
            https,
            host,
            port: configured,
            path,
        })
    }

    async fn tls_alpn01(
        &self,
        target: Target<'_>,
        key_authorization: &str,
    ) -> Result<(), (&'static str, String)> {
        let sni = match target {
            Target::Dns(name) => name.to_owned(),
            Target::Ip(ip) => reverse_name(ip),
        };
        let stream = self.connect(target, self.tlsalpn01_port).await?;
        let capture = ward_tls::danger::CapturingVerifier::new();
        let config = ward_tls::danger::acme_tls_alpn01_client(&capture)
            .map_err(|e| ("serverInternal", format!("TLS configuration: {e}")))?;
        let name = rustls_pki_types::ServerName::try_from(sni.clone())
            .map_err(|_| ("malformed", format!("{sni} is not a valid server name")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| ("tls", format!("tls-alpn-01 handshake with {sni}: {e}")))?;
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() != Some(b"acme-tls/1".as_slice()) {
            return Err((
                "unauthorized",
                "tls-alpn-01: acme-tls/1 was not negotiated".into(),
            ));
        }
        let chain = capture.captured();
        let leaf = chain
            .first()
            .ok_or(("unauthorized", "tls-alpn-01: no certificate".to_owned()))?;
        check_alpn_certificate(leaf, target, key_authorization)
            .map_err(|e| ("unauthorized", format!("tls-alpn-01: {e}")))
    }

    async fn dns01(
        &self,
        target: Target<'_>,
        key_authorization: &str,
    ) -> Result<(), (&'static str, String)> {
        let Target::Dns(name) = target else {
            return Err((
                "malformed",
                "dns-01 is not offered for IP identifiers".into(),
            ));
        };
        let server = self
            .dns_resolver
            .or_else(dns::system_resolver)
            .ok_or(("dns", "no DNS resolver configured".to_owned()))?;
        let record = format!("_acme-challenge.{name}");
        let expected = b64e(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes())
                .as_ref(),
        );
        let records = dns::query(server, &record, dns::TXT)
            .await
            .map_err(|e| ("dns", format!("TXT {record}: {e}")))?;
        if records
            .iter()
            .any(|r| *r == dns::Record::Txt(expected.clone()))
        {
            Ok(())
        } else {
            Err((
                "unauthorized",
                format!("no TXT record at {record} matches the key authorization"),
            ))
        }
    }
}

/// The `in-addr.arpa` / `ip6.arpa` name RFC 8738 §6 sends as SNI.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xF, byte >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

/// RFC 8737 §3: exactly the identifier as SAN, and a critical
/// acmeIdentifier extension holding SHA-256 of the key authorization.
fn check_alpn_certificate(
    der: &[u8],
    target: Target<'_>,
    key_authorization: &str,
) -> Result<(), String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| "unreadable certificate".to_owned())?;
    let sans: Vec<GeneralName<'_>> = cert
        .subject_alternative_name()
        .map_err(|_| "bad subjectAltName".to_owned())?
        .map(|e| e.value.general_names.clone())
        .unwrap_or_default();
    let names_ok = match (target, sans.as_slice()) {
        (Target::Dns(name), [GeneralName::DNSName(san)]) => san.eq_ignore_ascii_case(name),
        (Target::Ip(ip), [GeneralName::IPAddress(raw)]) => match ip {
            IpAddr::V4(v4) => *raw == v4.octets().as_slice(),
            IpAddr::V6(v6) => *raw == v6.octets().as_slice(),
        },
        _ => false,
    };
    if !names_ok {
        return Err("the certificate must name exactly the identifier".into());
    }
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let mut expected = vec![0x04, 0x20];
    expected.extend_from_slice(digest.as_ref());
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == ACME_IDENTIFIER_OID)
        .ok_or_else(|| "no acmeIdentifier extension".to_owned())?;
    if !ext.critical {
        return Err("the acmeIdentifier extension is not critical".into());
    }
    if ext.value != expected.as_slice() {
        return Err("the acmeIdentifier does not match the key authorization".into());
    }
    Ok(())
}

/// Where one http-01 request goes.
#[derive(Clone, Debug)]
struct Hop {
    /// `https://` (after a redirect) rather than `http://`.
    https: bool,
    /// The host asked.
    host: Host,
    /// The port dialled (the configured stand-in for 80 or 443).
    port: u16,
    /// Path and query.
    path: String,
}

/// A host of an http-01 request.
#[derive(Clone, Debug)]
enum Host {
    /// A DNS name.
    Dns(String),
    /// An address.
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Dns(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Sends `request` and reads the answer, at most [`MAX_HTTP_RESPONSE`]
/// bytes.
async fn exchange<S>(
    mut stream: S,
    request: &str,
    host: &str,
) -> Result<Vec<u8>, (&'static str, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let conn = |e: std::io::Error| ("connection", format!("http-01 to {host}: {e}"));
    stream.write_all(request.as_bytes()).await.map_err(conn)?;
    let mut response = Vec::new();
    let mut limited = (&mut stream).take(MAX_HTTP_RESPONSE as u64 + 1);
    match limited.read_to_end(&mut response).await {
        Ok(_) => {}
        // A TLS peer that closes without close_notify has still answered.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(conn(e)),
    }
    if response.len() > MAX_HTTP_RESPONSE {
        return Err(("unauthorized", "http-01 response is too large".into()));
    }
    Ok(response)
}

/// What an http-01 answer says.
#[derive(Debug, PartialEq, Eq)]
enum HttpOutcome {
    /// Status 200 and its body.
    Body(Vec<u8>),
    /// A redirect (301, 302, 303, 307, 308) and its Location.
    Redirect(String),
}

/// Reads an HTTP/1.x response: the body of a 200 (Content-Length, chunked
/// or read-to-close), or where a redirect points.
fn http_response(response: &[u8]) -> Result<HttpOutcome, String> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete response header")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    let mut chunked = false;
    let mut length = None;
    let mut location = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("location") {
                location = Some(v.to_owned());
            }
        }
    }
    match code {
        "200" => {}
        "301" | "302" | "303" | "307" | "308" => {
            return location
                .filter(|l| !l.is_empty())
                .map(HttpOutcome::Redirect)
                .ok_or_else(|| format!("status {code} without a Location"));
        }
        _ => return Err(format!("status {code}")),
    }
    if chunked {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("bad chunk")?;
            let size_text = String::from_utf8_lossy(&rest[..end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| "bad chunk size")?;
            rest = &rest[end + 2..];
            if size == 0 {
                return Ok(HttpOutcome::Body(out));
            }
            out.extend_from_slice(rest.get(..size).ok_or("truncated chunk")?);
            rest = rest.get(size + 2..).ok_or("truncated chunk")?;
        }
    }
    match length {
        Some(n) => Ok(HttpOutcome::Body(
            body.get(..n).ok_or("truncated body")?.to_vec(),
        )),
        None => Ok(HttpOutcome::Body(body.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies_are_read_in_every_framing() {
        let abc = HttpOutcome::Body(b"abc".to_vec());
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(http_response(plain).unwrap(), abc);
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        assert_eq!(http_response(chunked).unwrap(), abc);
        let redirect = b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n";
        assert_eq!(
            http_response(redirect).unwrap(),
            HttpOutcome::Redirect("/x".into())
        );
        let bare = b"HTTP/1.1 301 Moved\r\nContent-Length: 0\r\n\r\n";
        assert!(http_response(bare).unwrap_err().contains("Location"));
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert!(http_response(missing).unwrap_err().contains("404"));
        assert!(http_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn redirects_go_only_to_http_and_https_on_the_standard_ports() {
        let v = Validator {
            http01_port: 5002,
            tlsalpn01_port: 5001,
            dns_resolver: None,
        };
        let from = Hop {
            https: false,
            host: Host::Dns("a.test".into()),
            port: 5002,
            path: "/.well-known/acme-challenge/t".into(),
        };
        let rel = v.follow(&from, "/other?x=1").unwrap();
        assert_eq!((rel.port, rel.path.as_str()), (5002, "/other?x=1"));
        let https = v.follow(&from, "https://B.test/p#frag").unwrap();
        assert!(https.https);
        assert_eq!(https.port, 5001);
        assert_eq!(https.path, "/p");
        assert_eq!(https.host.to_string(), "b.test");
        let standard = v.follow(&from, "http://[::1]:80").unwrap();
        assert_eq!((standard.port, standard.path.as_str()), (5002, "/"));
        assert_eq!(standard.host.to_string(), "[::1]");
        assert_eq!(v.follow(&from, "https://c.test:5001/").unwrap().port, 5001);
        for bad in [
            "http://c.test:8080/",
            "https://c.test:5002/",
            "ftp://c.test/",
            "//c.test/x",
            "http://user@c.test/",
            "http://c.test/a b",
            "relative/path",
            "http://-bad-.test/",
        ] {
            assert!(v.follow(&from, bad).is_err(), "{bad} was followed");
        }
    }

    #[test]
    fn reverse_names_follow_rfc_8738() {
        assert_eq!(
            reverse_name("127.0.0.1".parse().unwrap()),
            "1.0.0.127.in-addr.arpa"
        );
        assert!(reverse_name("::1".parse().unwrap()).starts_with("1.0.0.0."));
    }
}
