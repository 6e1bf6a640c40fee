//! A small HTTPS client for the Ward CA API.
//!
//! One TLS 1.3 connection per request, the CA verified against the roots
//! the caller trusts, an optional client identity (the admin certificate,
//! or a workload's current certificate for renewal), bounded response size
//! and time. Errors carry the CA's JSON error code when it sent one.
//!
//! [`Conn`] is one open connection on which several requests can be made;
//! [`crate::trust`] uses it to fetch the roots over a not-yet-authenticated
//! connection, authenticate it by fingerprint, and then send the token on
//! the same connection.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use ward_tls::config::{ClientCert, ServerAuth, client_config};
use ward_tls::http::{Connection, ConnectionError};

use crate::{ClientError, MAX_RESPONSE, REQUEST_TIMEOUT};

/// A client identity presented to the CA.
pub struct Identity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
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

/// Where a CA (or any HTTPS server) is: parsed from `https://host[:port]`.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: String,
    pub(crate) authority: String,
    pub(crate) server_name: ServerName<'static>,
}

impl Endpoint {
    /// Parses `https://host[:port][/…]` (the path is ignored).
    pub(crate) fn parse(url: &str) -> Result<Self, ClientError> {
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            ClientError::Config(format!("{url:?}: the URL must start with https://"))
        })?;
        let authority = rest.split('/').next().unwrap_or(rest).to_owned();
        if authority.is_empty() {
            return Err(ClientError::Config(format!("{url:?}: missing host")));
        }
        let (host, addr) = split_authority(&authority)
            .ok_or_else(|| ClientError::Config(format!("{url:?}: expected https://HOST[:PORT]")))?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| ClientError::Config(format!("{host:?} is not a valid host name")))?;
        Ok(Endpoint {
            addr,
            authority,
            server_name,
        })
    }

    fn connect_error(&self, detail: String) -> ClientError {
        ClientError::Connect {
            addr: self.addr.clone(),
            detail,
        }
    }

    /// Opens a TLS connection with `tls` and an HTTP/1.1 session on it.
    pub(crate) async fn connect(&self, tls: Arc<ClientConfig>) -> Result<Conn, ClientError> {
        let connection = Connection::open(&self.addr, self.server_name.clone(), tls)
            .await
            .map_err(|e| self.connect_error(e.to_string()))?;
        Ok(Conn {
            connection,
            endpoint: self.clone(),
        })
    }
}

/// One open HTTP/1.1-over-TLS connection to the CA; requests on it run one
/// at a time.
pub(crate) struct Conn {
    connection: Connection,
    endpoint: Endpoint,
}

impl Conn {
    /// Sends one request and returns the status and (size-limited) body.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.endpoint.authority);
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        self.connection
            .send(req, MAX_RESPONSE as u64)
            .await
            .map_err(|e| match e {
                ConnectionError::Body(e) => {
                    ClientError::Protocol(format!("reading the answer: {e}"))
                }
                other => self.endpoint.connect_error(other.to_string()),
            })
    }

    /// Sends JSON (or nothing) and decodes a JSON answer like [`CaClient::json`].
    pub(crate) async fn json<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let body = encode(body)?;
        let (status, bytes) = self.send(method, path, body).await?;
        decode(status, &bytes)
    }
}

fn encode(body: Option<&(impl Serialize + ?Sized)>) -> Result<Option<Vec<u8>>, ClientError> {
    body.map(serde_json::to_vec)
        .transpose()
        .map_err(|e| ClientError::Config(e.to_string()))
}

/// A 2xx JSON body as `T`; anything else as [`ClientError::Api`] carrying
/// the CA's error code.
fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
    if !status.is_success() {
        let (code, message) = serde_json::from_slice::<ward_api::ErrorBody>(bytes)
            .map(|e| (e.error, e.message))
            .unwrap_or_else(|_| {
                (
                    "unknown".into(),
                    String::from_utf8_lossy(bytes).into_owned(),
                )
            });
        return Err(ClientError::Api {
            status,
            code,
            message,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Ward's TLS 1.3-only client configuration trusting `roots`, presenting
/// `identity` when given.
pub(crate) fn client_tls(
    roots: &[CertificateDer<'static>],
    identity: Option<Identity>,
) -> Result<ClientConfig, ClientError> {
    let server = ServerAuth::roots(roots)
        .map_err(|e| ClientError::Config(format!("unusable CA root: {e}")))?;
    let cert = match identity {
        Some(id) => ClientCert::Fixed(id.chain, id.key),
        None => ClientCert::None,
    };
    client_config(server, cert)
        .map_err(|e| ClientError::Config(format!("unusable client certificate: {e}")))
}

/// A CA endpoint and how to talk to it.
#[derive(Clone)]
pub struct CaClient {
    endpoint: Endpoint,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient")
            .field("addr", &self.endpoint.addr)
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
        let endpoint = Endpoint::parse(url)?;
        let tls = client_tls(roots, identity)?;
        Ok(CaClient {
            endpoint,
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
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut conn = self.endpoint.connect(self.tls.clone()).await?;
            conn.send(method, path, body).await
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// Sends JSON (or nothing) and parses a JSON answer; a non-2xx status
    /// becomes [`ClientError::Api`] with the CA's error code.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let body = encode(body)?;
        let (status, bytes) = self.send(method, path, body).await?;
        decode(status, &bytes)
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

    #[test]
    fn api_errors_keep_the_code() {
        let err = decode::<serde_json::Value>(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"certificate_revoked","message":"certificate revoked"}"#,
        )
        .unwrap_err();
        assert!(err.is_definitive_refusal());
        assert_eq!(err.api_code(), Some("certificate_revoked"));
        let err =
            decode::<serde_json::Value>(StatusCode::SERVICE_UNAVAILABLE, b"down").unwrap_err();
        assert!(!err.is_definitive_refusal());
    }
}
