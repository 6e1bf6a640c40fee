//! A small HTTPS client for the Ward CA API.
//!
//! One TLS 1.3 connection per request, the CA verified against the roots
//! the caller trusts, an optional client identity (the admin certificate,
//! or a workload's current certificate for renewal), bounded response size
//! and time. Errors carry the CA's JSON error code when it sent one.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest response body read from the CA.
pub const MAX_RESPONSE: usize = 1024 * 1024;
/// Time allowed for one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL or credentials are unusable.
    #[error("{0}")]
    Config(String),
    /// The CA could not be reached or the TLS handshake failed.
    #[error("cannot reach the CA at {addr}: {detail}")]
    Connect {
        /// host:port.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The CA answered with an error.
    #[error("the CA refused ({status}): {code}: {message}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The CA's error code.
        code: String,
        /// The CA's message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the CA: {0}")]
    Protocol(String),
    /// The request took longer than [`REQUEST_TIMEOUT`].
    #[error("the CA did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

/// A client identity presented to the CA.
#[derive(Debug)]
pub struct Identity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// `host[:port]` or `[v6][:port]` → (host for SNI, address to dial).
fn split_authority(authority: &str) -> Option<(String, String)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest {
            "" => 443,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, 443),
        }
    };
    if host.is_empty() {
        return None;
    }
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Some((host.to_owned(), addr))
}

/// A CA endpoint and how to talk to it.
#[derive(Clone)]
pub struct CaClient {
    addr: String,
    authority: String,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl CaClient {
    /// A client for `url` (`https://host[:port]`), trusting `roots`.
    pub fn new(
        url: &str,
        roots: &[CertificateDer<'static>],
        identity: Option<Identity>,
    ) -> Result<Self, ClientError> {
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            ClientError::Config(format!("{url:?}: the CA URL must start with https://"))
        })?;
        let authority = rest.split('/').next().unwrap_or(rest).to_owned();
        if authority.is_empty() {
            return Err(ClientError::Config(format!("{url:?}: missing host")));
        }
        let (host, addr) = split_authority(&authority)
            .ok_or_else(|| ClientError::Config(format!("{url:?}: expected https://HOST[:PORT]")))?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| ClientError::Config(format!("{host:?} is not a valid host name")))?;
        let mut store = RootCertStore::empty();
        for root in roots {
            store
                .add(root.clone())
                .map_err(|e| ClientError::Config(format!("unusable CA root: {e}")))?;
        }
        let builder = ClientConfig::builder_with_provider(ward_tls::provider())
            .with_protocol_versions(ward_tls::TLS13_ONLY)
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(store);
        let tls = match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain, id.key)
                .map_err(|e| ClientError::Config(format!("unusable client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(CaClient {
            addr,
            authority,
            server_name,
            tls: Arc::new(tls),
        })
    }

    /// Sends a request and returns the status and body, whatever the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn send_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let connect = |detail: String| ClientError::Connect {
            addr: self.addr.clone(),
            detail,
        };
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| connect(format!("TLS handshake: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| connect(format!("request failed: {e}")))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    /// Sends JSON (or nothing) and parses a JSON answer; a non-2xx status
    /// becomes [`ClientError::Api`] with the CA's error code.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let (status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            #[derive(serde::Deserialize)]
            struct ErrorBody {
                error: String,
                #[serde(default)]
                message: String,
            }
            let (code, message) = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| (e.error, e.message))
                .unwrap_or_else(|_| {
                    (
                        "unknown".into(),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    )
                });
            return Err(ClientError::Api {
                status,
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        let split = |a| split_authority(a);
        assert_eq!(
            split("ca.example:8443"),
            Some(("ca.example".into(), "ca.example:8443".into()))
        );
        assert_eq!(
            split("ca.example"),
            Some(("ca.example".into(), "ca.example:443".into()))
        );
        assert_eq!(split("[::1]:9"), Some(("::1".into(), "[::1]:9".into())));
        assert_eq!(split("[::1]"), Some(("::1".into(), "[::1]:443".into())));
        assert_eq!(split("127.0.0.1:x"), None);
        assert_eq!(split(":80"), None);
        assert!(CaClient::new("http://x", &[], None).is_err());
    }
}
