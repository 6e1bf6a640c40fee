//! Per-tenant TLS: the server configuration (built by ward-tls), the gate's
//! own client-certificate check (clientAuth EKU, CRLs) plugged into
//! ward-tls' verifier, and the classification of handshake failures.

use std::sync::{Arc, Mutex};

use rustls::sign::CertifiedKey;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use ward_tls::chain_cache::ChainCache;
use ward_tls::config::{ClientAuth, ServerOptions, server_config_with};
use ward_tls::verifier::{ClientCheck, ClientVerifier};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::ocsp::Staple;
use crate::revocation::Revocation;
use crate::revocation::crl::LeafRef;

tokio::task_local! {
    /// Where the verifier leaves the leaf it refused, for the handshake the
    /// current task runs (see [`Presented`]).
    static PRESENTED: Arc<Mutex<Option<CertificateDer<'static>>>>;
    /// Where an audit-mode tenant's verifier leaves the reason it would
    /// have refused the client's certificate.
    static WOULD_REFUSE: Arc<Mutex<Option<&'static str>>>;
}

/// The leaf certificate a client presented in a handshake that was
/// refused: rustls keeps no peer certificate when verification fails, yet
/// the audit line should say who was refused (subject, serial,
/// fingerprint). The verifier runs inside the handshake future's poll, so
/// a task-local slot set up around that future receives it.
#[derive(Debug, Clone, Default)]
pub struct Presented(
    Arc<Mutex<Option<CertificateDer<'static>>>>,
    Arc<Mutex<Option<&'static str>>>,
);

impl Presented {
    /// Runs `handshake` so that a refused client certificate lands here.
    pub fn scope<F: Future>(&self, handshake: F) -> impl Future<Output = F::Output> {
        PRESENTED.scope(
            self.0.clone(),
            WOULD_REFUSE.scope(self.1.clone(), handshake),
        )
    }

    /// Why an audit-mode tenant let a certificate through that strict mode
    /// refuses; `None` when the certificate verified (or none was sent).
    pub fn would_refuse(&self) -> Option<&'static str> {
        *self.1.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The refused leaf, if a certificate was presented and refused.
    pub fn take(&self) -> Option<CertificateDer<'static>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Keeps a refused leaf for the audit line (only inside [`Presented::scope`]).
fn remember_refused(leaf: &CertificateDer<'_>) {
    let _ = PRESENTED.try_with(|slot| {
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(leaf.clone().into_owned());
    });
}

/// webpki's `client_auth()` accepts a leaf with no EKU at all
/// (ARCHITECTURE.md, trap 7); the gate also requires clientAuth to be
/// present, and checks the leaf against its current CRLs. Runs inside
/// ward-tls' client verifier, after path validation.
#[derive(Debug)]
struct ClientAuthAndRevocation {
    revocation: Option<Arc<Revocation>>,
    binding: Option<Arc<ward_client::federated::DomainBinding>>,
}

impl ClientCheck for ClientAuthAndRevocation {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let bad_purpose = || rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose);
        let Ok((_, leaf)) = X509Certificate::from_der(end_entity) else {
            return Err(bad_purpose());
        };
        let has_client_auth = leaf
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|e| e.value.client_auth);
        if !has_client_auth {
            return Err(bad_purpose());
        }
        if let Some(binding) = &self.binding {
            ClientCheck::check(binding.as_ref(), end_entity, intermediates, now)?;
        }
        if let Some(revocation) = &self.revocation
            && revocation.snapshot().enabled()
        {
            // The chain passed path validation: its intermediates may sign CRLs.
            revocation.learn(intermediates);
            let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            let status = revocation.check(&LeafRef::of(&leaf, end_entity), now);
            if let Some(e) = status.error() {
                return Err(e);
            }
        }
        Ok(())
    }

    fn refused(&self, end_entity: &CertificateDer<'_>) {
        remember_refused(end_entity);
    }
}

/// Loads a server chain and key as rustls' `CertifiedKey`, checking they match.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    ward_tls::credentials::certified_key(chain, key)
        .map_err(|e| Error::Config(format!("server certificate: {e}")))
}

/// A tenant's TLS choices.
#[derive(Debug, Clone, Default)]
pub struct TenantTls {
    /// Also accept TLS 1.2.
    pub allow_tls12: bool,
    /// No session tickets, no session cache.
    pub disable_resumption: bool,
    /// Audit mode, or a tenant whose routes differ in mode: certificates
    /// optional, failures let through (and reported to
    /// [`Presented::would_refuse`]) for the routes to decide on.
    pub audit: bool,
    /// Cipher suites, in order (empty: the defaults).
    pub cipher_suites: Vec<String>,
    /// Key-exchange groups, in order (empty: the defaults).
    pub groups: Vec<String>,
}

/// Builds a tenant's server configuration; handshakes are answered with
/// the staple's current credentials (and OCSP response). Client chains
/// that passed path validation are remembered in `verify_cache`; the
/// clientAuth and revocation check runs on every handshake.
pub fn server_config(
    staple: &Staple,
    client_roots: RootCertStore,
    tenant: &TenantTls,
    revocation: Option<Arc<Revocation>>,
    verify_cache: &ChainCache,
    binding: Option<Arc<ward_client::federated::DomainBinding>>,
) -> Result<ServerConfig, Error> {
    let audit = tenant.audit;
    let roots = Arc::new(client_roots);
    let chain = if audit {
        ClientVerifier::optional(roots)
    } else {
        ClientVerifier::required(roots)
    };
    let verifier = chain
        .map_err(|e| Error::Config(format!("client CA: {e}")))?
        .with_check(Arc::new(ClientAuthAndRevocation {
            revocation,
            binding,
        }))
        .with_cache(verify_cache.clone());
    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = if audit {
        Arc::new(ward_tls::danger::AuditingClientVerifier::new(
            Arc::new(verifier),
            Arc::new(|e: &rustls::Error| {
                let reason = classify_tls(e);
                let _ = WOULD_REFUSE.try_with(|slot| {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                });
            }),
        ))
    } else {
        Arc::new(verifier)
    };
    let options = ServerOptions {
        allow_tls12: tenant.allow_tls12,
        prefer_aes128: true,
        // A resumed session carries its chain without a verifier run: in
        // audit mode it could not tell a verified chain from one let
        // through.
        disable_resumption: tenant.disable_resumption || audit,
        cipher_suites: tenant.cipher_suites.clone(),
        groups: tenant.groups.clone(),
    };
    let mut config =
        server_config_with(staple.credentials(), ClientAuth::Custom(verifier), &options)
            .map_err(|e| Error::Config(e.to_string()))?;
    ward_tls::server::set_http_alpn(&mut config);
    Ok(config)
}

/// Why a handshake failed, as counted in metrics and audit lines.
pub fn classify(err: &std::io::Error) -> &'static str {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "client_closed"
            }
            _ => "other",
        };
    };
    classify_tls(tls)
}

/// Whether `reason` is one [`classify_tls`] gives for a client
/// certificate that is missing or failed verification (what a strict
/// route refuses with 403 and gRPC status 16).
pub fn is_certificate_reason(reason: &str) -> bool {
    matches!(
        reason,
        "no_certificate"
            | "unknown_ca"
            | "expired"
            | "not_yet_valid"
            | "bad_eku"
            | "revoked"
            | "crl_stale"
            | "revocation_unknown"
            | "bad_certificate"
    )
}

/// [`classify`] for a rustls error.
pub fn classify_tls(tls: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match tls {
        E::NoCertificatesPresented => "no_certificate",
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "bad_eku"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "crl_stale",
            CertificateError::UnknownRevocationStatus => "revocation_unknown",
            _ => "bad_certificate",
        },
        E::PeerIncompatible(_) => "protocol_version",
        _ => "other",
    }
}

#[cfg(test)]
mod certificate_reason_tests {
    use rustls::{CertificateError, Error};

    use super::{classify_tls, is_certificate_reason};

    #[test]
    fn every_certificate_failure_is_a_certificate_reason_and_nothing_else_is() {
        let certificate = [
            Error::NoCertificatesPresented,
            Error::InvalidCertificate(CertificateError::UnknownIssuer),
            Error::InvalidCertificate(CertificateError::BadSignature),
            Error::InvalidCertificate(CertificateError::Expired),
            Error::InvalidCertificate(CertificateError::NotValidYet),
            Error::InvalidCertificate(CertificateError::InvalidPurpose),
            Error::InvalidCertificate(CertificateError::Revoked),
            Error::InvalidCertificate(CertificateError::ExpiredRevocationList),
            Error::InvalidCertificate(CertificateError::UnknownRevocationStatus),
            Error::InvalidCertificate(CertificateError::BadEncoding),
        ];
        for e in &certificate {
            assert!(is_certificate_reason(classify_tls(e)), "{e:?}");
        }
        let other = [
            Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic),
            Error::DecryptError,
        ];
        for e in &other {
            assert!(!is_certificate_reason(classify_tls(e)), "{e:?}");
        }
        assert!(!is_certificate_reason("client_closed"));
    }
}
