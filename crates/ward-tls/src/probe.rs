//! Connect to a TLS endpoint and report what it presents.
//!
//! The chain is captured even when the server then rejects us (for example
//! because it wants a client certificate we don't have): in TLS 1.3 the
//! server's Certificate message arrives before the client is judged.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::PrivateKeyDer;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Error;
use crate::config::{ClientCert, ClientOptions, ServerAuth, client_config_with};
use crate::danger::CapturingVerifier;

/// What a probe saw.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The server's chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Negotiated protocol version ("TLSv1.3"), when the handshake completed.
    pub version: Option<String>,
    /// Negotiated cipher suite, when the handshake completed.
    pub cipher: Option<String>,
    /// Negotiated key-exchange group, when the handshake completed.
    pub group: Option<String>,
    /// Why the handshake failed after the chain was seen, if it did.
    pub handshake_error: Option<String>,
}

/// A client identity to present while probing.
#[derive(Debug)]
pub struct ClientIdentity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The matching private key.
    pub key: PrivateKeyDer<'static>,
}

/// Connects to `addr` (host:port), sends `sni`, and captures the presented
/// chain. Accepts TLS 1.3 and 1.2 so that weak endpoints can be examined.
pub async fn fetch_chain(
    addr: &str,
    sni: &str,
    identity: Option<ClientIdentity>,
    timeout: Duration,
) -> Result<Presented, Error> {
    let capture = CapturingVerifier::new();
    let cert = match identity {
        Some(id) => ClientCert::Fixed(id.chain, id.key),
        None => ClientCert::None,
    };
    let options = ClientOptions {
        examine_legacy: true,
        ..ClientOptions::default()
    };
    let config = client_config_with(ServerAuth::Verifier(capture.verifier()), cert, &options)?;
    let server_name = ServerName::try_from(sni.to_owned())
        .map_err(|_| Error::Input(format!("{sni:?} is not a valid server name")))?;

    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|source| Error::Io {
            context: format!("connecting to {addr}"),
            source,
        })?;
        let result = TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await;
        Ok::<_, Error>(result)
    };
    let result = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::Timeout(format!("TLS handshake with {addr}")))??;
    let chain = capture.captured();
    match result {
        Ok(stream) => {
            let (_, conn) = stream.get_ref();
            Ok(Presented {
                chain,
                version: conn.protocol_version().map(|v| format!("{v:?}")),
                cipher: conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite())),
                group: conn
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name())),
                handshake_error: None,
            })
        }
        Err(err) if !chain.is_empty() => Ok(Presented {
            chain,
            version: None,
            cipher: None,
            group: None,
            handshake_error: Some(err.to_string()),
        }),
        Err(source) => Err(Error::Io {
            context: format!("TLS handshake with {addr}"),
            source,
        }),
    }
}
