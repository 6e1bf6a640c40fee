//! Challenge validation (RFC 8555 §8.3, §8.4; RFC 8737; RFC 8738): the CA
//! connects out to the identifier and checks the key authorization.
//!
//! Addresses of DNS identifiers come from `[acme] dns_resolver` when set,
//! else from the system resolver. http-01 does not follow redirects (a
//! documented difference from Let's Encrypt). Every read is size- and
//! time-limited: a validation target is untrusted.

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
/// Largest http-01 response read.
const MAX_HTTP_RESPONSE: usize = 16 * 1024;
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
        let host = match target {
            Target::Dns(name) => name.to_owned(),
            Target::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            Target::Ip(ip) => ip.to_string(),
        };
        let mut stream = self.connect(target, self.http01_port).await?;
        let request = format!(
            "GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {host}\r\n\
             User-Agent: ward-acme-validator\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let conn = |e: std::io::Error| ("connection", format!("http-01 to {host}: {e}"));
        stream.write_all(request.as_bytes()).await.map_err(conn)?;
        let mut response = Vec::new();
        let mut limited = (&mut stream).take(MAX_HTTP_RESPONSE as u64 + 1);
        limited.read_to_end(&mut response).await.map_err(conn)?;
        if response.len() > MAX_HTTP_RESPONSE {
            return Err(("unauthorized", "http-01 response is too large".into()));
        }
        let body = http_body(&response).map_err(|e| ("unauthorized", format!("http-01: {e}")))?;
        let got = String::from_utf8_lossy(&body);
        if got.trim_end() == key_authorization {
            Ok(())
        } else {
            Err((
                "unauthorized",
                format!("http-01: the response from {host} is not the key authorization"),
            ))
        }
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

/// The body of an HTTP/1.x response with status 200 (Content-Length,
/// chunked or read-to-close).
fn http_body(response: &[u8]) -> Result<Vec<u8>, String> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete response header")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("status {code} (redirects are not followed)"));
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            }
        }
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
                return Ok(out);
            }
            out.extend_from_slice(rest.get(..size).ok_or("truncated chunk")?);
            rest = rest.get(size + 2..).ok_or("truncated chunk")?;
        }
    }
    match length {
        Some(n) => Ok(body.get(..n).ok_or("truncated body")?.to_vec()),
        None => Ok(body.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies_are_read_in_every_framing() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(http_body(plain).unwrap(), b"abc");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        assert_eq!(http_body(chunked).unwrap(), b"abc");
        let redirect = b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n";
        assert!(http_body(redirect).unwrap_err().contains("302"));
        assert!(http_body(b"HTTP/1.1 200 OK\r\n").is_err());
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
