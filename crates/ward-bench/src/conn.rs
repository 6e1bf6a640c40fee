//! One HTTPS target: where to connect, how to verify it, and how to open a
//! keep-alive HTTP/1.1 connection to it.
//!
//! TLS is rustls with Ward's own provider (`ward_tls::provider()`, aws-lc-rs),
//! TLS 1.3 only, trusting only the given CA bundle, offering ALPN
//! `http/1.1`. HTTP is hyper's low-level client connection: no pool, no
//! retries, so each worker owns exactly one connection and sees every error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The request-sending half of one HTTP/1.1 connection.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// A parsed `https://host:port[/base]` URL with a TLS client configuration.
pub(crate) struct Target {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    /// `host:port`, sent as the `Host` header.
    pub(crate) authority: String,
    /// Path prefix from the URL, without a trailing `/`.
    pub(crate) base_path: String,
    connector: TlsConnector,
}

impl Target {
    /// Parses `url`, resolves its host once, and loads the trust anchors from
    /// the PEM file `ca_bundle`. `server_name` overrides the name verified in
    /// the server's certificate (default: the URL's host).
    pub(crate) async fn new(
        url: &str,
        ca_bundle: &Path,
        server_name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("URL must start with https:// (got {url:?})");
        }
        let host = uri
            .host()
            .context("URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host.clone());
        let base_path = uri.path().trim_end_matches('/').to_owned();

        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let name = server_name.unwrap_or(&host).to_owned();
        let server_name =
            ServerName::try_from(name).context("server name is neither a DNS name nor an IP")?;

        let mut roots = RootCertStore::empty();
        let mut n = 0usize;
        for cert in CertificateDer::pem_file_iter(ca_bundle)
            .with_context(|| format!("reading {}", ca_bundle.display()))?
        {
            let cert = cert.with_context(|| format!("parsing {}", ca_bundle.display()))?;
            roots.add(cert).context("adding a trust anchor")?;
            n += 1;
        }
        if n == 0 {
            bail!("{} holds no certificate", ca_bundle.display());
        }
        let mut config = rustls::ClientConfig::builder_with_provider(ward_tls::provider())
            .with_protocol_versions(ward_tls::TLS13_ONLY)
            .context("TLS 1.3 with Ward's provider")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        Ok(Self {
            addr,
            server_name,
            authority,
            base_path,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Opens a fresh TCP + TLS connection (full handshake) and an HTTP/1.1
    /// client on it. The connection's driver runs as its own task and ends
    /// when the returned sender is dropped or the peer closes.
    pub(crate) async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // Errors surface on the sender side; nothing to do here.
            let _ = connection.await;
        });
        Ok(sender)
    }
}
