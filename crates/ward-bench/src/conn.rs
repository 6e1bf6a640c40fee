//! One HTTP(S) target: where to connect, how to verify it, and how to open a
//! keep-alive HTTP/1.1 connection to it.
//!
//! TLS is rustls with Ward's own provider (`ward_tls::provider()`, aws-lc-rs),
//! TLS 1.3 only, trusting only the given CA bundle, offering ALPN
//! `http/1.1`; optionally presenting a client certificate chain (mTLS),
//! restricted to one key-exchange group, and with session resumption off
//! (every connection a full handshake) or on (TLS 1.3 tickets kept in
//! rustls' in-memory cache; [`Connected`] says whether a handshake
//! resumed). An `http://` URL means plain TCP,
//! no TLS (the baseline straight to an upstream). HTTP is hyper's low-level
//! client connection: no pool, no retries, so each worker owns exactly one
//! connection and sees every error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::HandshakeKind;
use rustls::RootCertStore;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use ward_tls::config::{ClientCert, ClientOptions, ServerAuth, client_config_with};

/// The request-sending half of one HTTP/1.1 connection.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// Key-exchange group offered by the client (`--kx-group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KxGroup {
    /// Ward's default order: X25519MLKEM768, X25519, P-256.
    Default,
    /// X25519 only (what OpenSSL 3.0 peers such as Debian's nginx pick).
    X25519,
    /// The hybrid post-quantum group only.
    X25519mlkem768,
    /// NIST P-256 only.
    P256,
}

/// How to reach and authenticate to a target, beyond its URL.
#[derive(Debug, Default)]
pub(crate) struct TlsOptions<'a> {
    /// PEM roots the server's certificate must chain to (required for https).
    pub(crate) ca_bundle: Option<&'a Path>,
    /// Name verified in the server's certificate (default: the URL's host).
    pub(crate) server_name: Option<&'a str>,
    /// PEM client certificate chain (leaf first, then intermediates) and its
    /// key, presented when the server asks: mTLS.
    pub(crate) client_cert: Option<(&'a Path, &'a Path)>,
    /// Keep rustls' session cache (resumption); off = every handshake full.
    pub(crate) resumption: bool,
    /// Key-exchange groups offered; `None` = Ward's default.
    pub(crate) kx_group: Option<KxGroup>,
    /// Do not verify the server's certificate chain (its handshake
    /// signature is still checked): two ECDSA verifies fewer per handshake
    /// on the client, so one core of load can outrun one core of server.
    pub(crate) skip_chain_verify: bool,
}

/// A parsed `https://host:port[/base]` (or `http://`) URL with a TLS client
/// configuration.
pub(crate) struct Target {
    addr: SocketAddr,
    /// `host:port`, sent as the `Host` header.
    pub(crate) authority: String,
    /// Path prefix from the URL, without a trailing `/`.
    pub(crate) base_path: String,
    /// `None` for `http://` (plain TCP).
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The TLS client configuration behind the connector, kept to make
    /// per-worker copies with their own session cache.
    config: Option<Arc<rustls::ClientConfig>>,
    /// Whether connections resume TLS sessions.
    resumption: bool,
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
        Self::with_options(
            url,
            &TlsOptions {
                ca_bundle: Some(ca_bundle),
                server_name,
                resumption: true,
                ..TlsOptions::default()
            },
        )
        .await
    }

    /// Like [`Target::new`], for `https://` or plain `http://` URLs, with a
    /// client certificate, resumption and key-exchange group as asked.
    pub(crate) async fn with_options(url: &str, opts: &TlsOptions<'_>) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("URL must start with https:// or http:// (got {url:?})"),
        };
        let host = uri
            .host()
            .context("URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
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
        if !https {
            if opts.client_cert.is_some() {
                bail!("a client certificate needs an https:// URL");
            }
            return Ok(Self {
                addr,
                authority,
                base_path,
                tls: None,
                config: None,
                resumption: false,
            });
        }
        let name = opts.server_name.unwrap_or(&host).to_owned();
        let server_name =
            ServerName::try_from(name).context("server name is neither a DNS name nor an IP")?;

        let server = if opts.skip_chain_verify {
            ServerAuth::Verifier(ward_tls::danger::CapturingVerifier::new().verifier())
        } else {
            ServerAuth::Roots(load_roots(opts.ca_bundle)?)
        };
        let cert = match opts.client_cert {
            None => ClientCert::None,
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("parsing {}", cert.display()))?;
                if chain.is_empty() {
                    bail!("{} holds no certificate", cert.display());
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("reading the key {}", key.display()))?;
                ClientCert::Fixed(chain, key)
            }
        };
        let kx_group = match opts.kx_group.unwrap_or(KxGroup::Default) {
            KxGroup::Default => None,
            KxGroup::X25519 => Some(ward_tls::config::KxGroup::X25519),
            KxGroup::X25519mlkem768 => Some(ward_tls::config::KxGroup::X25519Mlkem768),
            KxGroup::P256 => Some(ward_tls::config::KxGroup::P256),
        };
        let options = ClientOptions {
            kx_group,
            ..ClientOptions::default()
        };
        let mut config = client_config_with(server, cert, &options)
            .context("TLS 1.3 with Ward's provider, client certificate and key")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !opts.resumption {
            config.resumption = Resumption::disabled();
        }

        let config = Arc::new(config);
        Ok(Self {
            addr,
            authority,
            base_path,
            tls: Some((TlsConnector::from(Arc::clone(&config)), server_name)),
            config: Some(config),
            resumption: opts.resumption,
        })
    }

    /// A copy of this target for one worker. With resumption on, the copy
    /// has its own session cache, as separate clients would: with one cache
    /// shared by every worker (rustls keeps at most 8 TLS 1.3 tickets per
    /// server, and each is used once), concurrent workers would find it
    /// empty and fall back to full handshakes.
    pub(crate) fn for_worker(&self) -> Self {
        let tls = match (&self.tls, &self.config) {
            (Some((_, name)), Some(config)) if self.resumption => {
                let mut own = (**config).clone();
                own.resumption = Resumption::in_memory_sessions(64);
                Some((TlsConnector::from(Arc::new(own)), name.clone()))
            }
            (tls, _) => tls.clone(),
        };
        Self {
            addr: self.addr,
            authority: self.authority.clone(),
            base_path: self.base_path.clone(),
            tls,
            config: self.config.clone(),
            resumption: self.resumption,
        }
    }

    /// Opens a fresh TCP (+ TLS: a full handshake unless resumption is on
    /// and a ticket is cached) connection and an HTTP/1.1 client on it. The
    /// connection's driver runs as its own task and ends when the returned
    /// sender is dropped or the peer closes.
    pub(crate) async fn connect(&self) -> anyhow::Result<Connected> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        match &self.tls {
            None => Ok(Connected {
                sender: http1(tcp).await?,
                resumed: None,
            }),
            Some((connector, server_name)) => {
                let tls = connector
                    .connect(server_name.clone(), tcp)
                    .await
                    .context("TLS handshake")?;
                let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
                Ok(Connected {
                    sender: http1(tls).await?,
                    resumed: Some(resumed),
                })
            }
        }
    }
}

/// A new connection: its HTTP sender and how its TLS handshake went.
pub(crate) struct Connected {
    /// Sends requests on the connection.
    pub(crate) sender: Sender,
    /// `Some(true)` if the TLS handshake resumed a session, `Some(false)` if
    /// it was a full one, `None` for plain TCP.
    pub(crate) resumed: Option<bool>,
}

/// Loads the trust anchors from the PEM file `ca_bundle`.
fn load_roots(ca_bundle: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let ca_bundle = ca_bundle.context("an https:// URL needs --ca-bundle")?;
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
    Ok(roots)
}

/// Starts an HTTP/1.1 client on `io`, its driver on its own task.
async fn http1<T>(io: T) -> anyhow::Result<Sender>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // Errors surface on the sender side; nothing to do here.
        let _ = connection.await;
    });
    Ok(sender)
}
