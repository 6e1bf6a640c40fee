//! Verifiers that do not verify, for tools that must look at what a peer
//! presents before deciding anything (`ward cert inspect HOST:PORT`,
//! `ward check`, the pinned-fingerprint bootstrap). Nothing that
//! authenticates a peer may use this module.

use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::verifier::{ServerCheck, ServerVerifier};

/// Accepts any server certificate chain and keeps a copy of it.
///
/// Handshake signatures are still checked, so the peer proved it holds the
/// key of the certificate it showed; only the chain is not judged.
#[derive(Debug, Default)]
pub struct CapturingVerifier {
    captured: Mutex<Vec<CertificateDer<'static>>>,
}

impl CapturingVerifier {
    /// An empty capture.
    pub fn new() -> Arc<Self> {
        Arc::new(CapturingVerifier::default())
    }

    /// The server verifier that fills this capture and accepts any chain.
    pub fn verifier(self: &Arc<Self>) -> Arc<ServerVerifier> {
        Arc::new(ServerVerifier::unverified(self.clone()))
    }

    /// The chain the server presented (leaf first), empty before the
    /// handshake reached the Certificate message.
    pub fn captured(&self) -> Vec<CertificateDer<'static>> {
        self.captured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ServerCheck for CapturingVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.captured.lock().unwrap_or_else(PoisonError::into_inner) = chain;
        Ok(())
    }
}

/// The client configuration of an ACME tls-alpn-01 validator (RFC 8737):
/// offers only the `acme-tls/1` protocol, accepts TLS 1.2 and 1.3, and
/// captures whatever certificate the server presents into `capture`
/// instead of judging it; the validator then checks that certificate's
/// `acmeIdentifier` extension and name itself. Never for anything else.
pub fn acme_tls_alpn01_client(
    capture: &Arc<CapturingVerifier>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut config = crate::config::client_config_with(
        crate::config::ServerAuth::Verifier(capture.verifier()),
        crate::config::ClientCert::None,
        &crate::config::ClientOptions {
            examine_legacy: true,
            ..Default::default()
        },
    )?;
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    Ok(config)
}
