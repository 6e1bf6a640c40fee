//! The bare-rustls reference for gate benchmarks: a minimal mTLS responder
//! (rustls with aws-lc-rs, TLS 1.3, client certificate required and
//! verified by webpki against one root bundle) that answers every request
//! with the same fixed `200 OK` itself, proxying nothing.
//!
//! It does the TLS work any mTLS server must do and as little else as it
//! can: no HTTP library, no routing, no policy, no upstream. The gate does
//! all of that on top of the same TLS; `bench/gate.sh` runs this as server
//! `bare` beside it. Requests are read up to the end of their header block
//! (at most [`MAX_HEAD`] bytes); a request with a body, a header block that
//! is too long or not HTTP/1.x gets `400` and the connection closes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Longest request header block read; longer ones are refused.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// How long a connection may stay silent before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The answer to every well-formed request (keep-alive).
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 31\r\n\r\n\
hello from ward-bench upstream\n";

/// The answer to every well-formed request that asked to close.
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 31\r\n\
connection: close\r\n\r\nhello from ward-bench upstream\n";

/// The answer to anything else; the connection closes after it.
const BAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The TLS server configuration: the server chain and key from PEM files,
/// client certificates required and verified against the roots in
/// `client_ca`, TLS 1.3 only, ALPN `http/1.1`, rustls' default session
/// cache and TLS 1.3 tickets (as the gate, nginx and HAProxy have).
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the key {}", key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for root in CertificateDer::pem_file_iter(client_ca)
        .with_context(|| format!("reading {}", client_ca.display()))?
    {
        let root = root.with_context(|| format!("parsing {}", client_ca.display()))?;
        roots.add(root).context("adding a client CA root")?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", client_ca.display());
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the client verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the server certificate and key")?;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().context("session tickets")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Listens on `listen`, prints `ward-bench bare: listening on ADDR` on
/// stderr once bound, and serves until killed.
pub(crate) async fn serve(listen: SocketAddr, config: ServerConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("local address")?;
    eprintln!("ward-bench bare: listening on {addr}");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: wait, keep serving.
                eprintln!("ward-bench bare: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // Handshake failures and clients going away are normal under load.
            if let Ok(Ok(tls)) = tokio::time::timeout(IDLE_TIMEOUT, acceptor.accept(tcp)).await {
                let _ = respond(tls).await;
            }
        });
    }
}

/// What one request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// A well-formed bodiless request; `true` if it asked to close.
    Ok { close: bool },
    /// Anything else (the connection closes after a `400`).
    Bad,
}

/// Parses one request header block (without its final blank line): an
/// HTTP/1.x request line, headers, no body. HTTP/1.0 closes unless it asks
/// for keep-alive.
pub(crate) fn parse_head(head: &[u8]) -> Head {
    let Ok(text) = std::str::from_utf8(head) else {
        return Head::Bad;
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Bad;
    };
    if method.is_empty() || !target.starts_with('/') {
        return Head::Bad;
    }
    let mut close = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Head::Bad,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Head::Bad;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    close = false;
                }
            }
        } else if (name.eq_ignore_ascii_case("content-length") && value != "0")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return Head::Bad;
        }
    }
    Head::Ok { close }
}

/// Answers the requests of one connection until it closes, asks to close,
/// sends something else, or stays silent for [`IDLE_TIMEOUT`].
async fn respond<S>(mut stream: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        // Answer every complete header block already buffered (hyper
        // does not pipeline, but a client may).
        while let Some(end) = find_end(&buf[..filled]) {
            let head = parse_head(&buf[..end]);
            buf.copy_within(end + 4..filled, 0);
            filled -= end + 4;
            match head {
                Head::Ok { close: false } => stream.write_all(OK).await?,
                Head::Ok { close: true } => {
                    stream.write_all(OK_CLOSE).await?;
                    return stream.shutdown().await;
                }
                Head::Bad => {
                    stream.write_all(BAD).await?;
                    return stream.shutdown().await;
                }
            }
        }
        if filled == buf.len() {
            stream.write_all(BAD).await?;
            return stream.shutdown().await;
        }
        let n = match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf[filled..])).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

/// Where the first `\r\n\r\n` starts.
fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nhost: a"),
            Head::Ok { close: false }
        );
        assert_eq!(
            parse_head(b"GET /x HTTP/1.1\r\nConnection: Close"),
            Head::Ok { close: true }
        );
        assert_eq!(parse_head(b"GET / HTTP/1.0"), Head::Ok { close: true });
        assert_eq!(
            parse_head(b"GET / HTTP/1.0\r\nconnection: keep-alive"),
            Head::Ok { close: false }
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\ncontent-length: 0"),
            Head::Ok { close: false }
        );
        for bad in [
            &b"POST / HTTP/1.1\r\ncontent-length: 5"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked",
            b"GET / HTTP/2",
            b"GET /",
            b"GET x HTTP/1.1",
            b"GET / HTTP/1.1 extra",
            b"GET / HTTP/1.1\r\nno colon",
            b"\xff / HTTP/1.1",
        ] {
            assert_eq!(
                parse_head(bad),
                Head::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Pipelined requests each get an answer; an over-long head gets 400.
    #[tokio::test]
    async fn answers_and_limits() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(respond(server));
        client
            .write_all(
                b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap().unwrap();
        let mut expected = OK.to_vec();
        expected.extend_from_slice(OK_CLOSE);
        assert_eq!(out, expected);

        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(respond(server));
        client.write_all(&vec![b'a'; MAX_HEAD + 10]).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(out, BAD);
    }
}
