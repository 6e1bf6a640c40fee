//! How the CA is trusted: a bundle of roots, or the SHA-256 fingerprint of
//! its root, as `step ca bootstrap` does.
//!
//! With a fingerprint, the first connection cannot be verified: nothing is
//! known yet but a hash. [`open`] connects with a capturing verifier (the
//! server still proves it holds the key of the certificate it shows), asks
//! `GET /v1/roots`, looks for a certificate with the pinned fingerprint among
//! those roots and the chain the server presented, then verifies that chain
//! against it for the CA's host name. Only then is anything secret (the
//! token) sent, on that same connection; every later connection verifies
//! the CA against the pinned root in the ordinary way.

use std::path::Path;
use std::sync::Arc;

use hyper::{Method, StatusCode};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use ward_pki::Fingerprint;
use ward_tls::config::{ClientCert, ServerAuth, client_config};
use ward_tls::danger::CapturingVerifier;
use ward_tls::verifier::ServerVerifier;

use crate::ClientError;
use crate::ca::{Conn, Endpoint, client_tls};

/// Largest bundle file read.
const MAX_BUNDLE_FILE: u64 = 1024 * 1024;

/// What the CA must prove to be trusted.
#[derive(Clone, Debug)]
pub enum CaTrust {
    /// The CA's root has this SHA-256 DER fingerprint.
    Fingerprint(Fingerprint),
    /// The CA's chain leads to one of these roots.
    Roots(Vec<CertificateDer<'static>>),
}

impl CaTrust {
    /// Trust from a fingerprint as users type it (hex, any case, colons
    /// optional, or what `openssl x509 -fingerprint -sha256` prints).
    pub fn fingerprint(text: &str) -> Result<Self, ClientError> {
        text.parse::<Fingerprint>()
            .map(CaTrust::Fingerprint)
            .map_err(|e| ClientError::Config(format!("--ca-fingerprint: {e}")))
    }

    /// Trust from a PEM (or single DER) bundle file.
    pub fn bundle_file(path: &Path) -> Result<Self, ClientError> {
        let read_err = |e: std::io::Error| {
            ClientError::Config(format!("cannot read the CA bundle {}: {e}", path.display()))
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_BUNDLE_FILE {
            return Err(ClientError::Config(format!(
                "the CA bundle {} is larger than {MAX_BUNDLE_FILE} bytes",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        let roots = ward_pki::pem::parse_certs_any(&bytes)
            .map_err(|e| ClientError::Config(format!("the CA bundle {}: {e}", path.display())))?;
        Ok(CaTrust::Roots(roots))
    }
}

/// Opens a connection to the CA at `endpoint` that is authenticated under
/// `trust`, and returns it with the roots to trust the CA by from now on.
pub(crate) async fn open(
    endpoint: &Endpoint,
    trust: &CaTrust,
) -> Result<(Conn, Vec<CertificateDer<'static>>), ClientError> {
    match trust {
        CaTrust::Roots(roots) => {
            let conn = endpoint.connect(Arc::new(client_tls(roots, None)?)).await?;
            Ok((conn, roots.clone()))
        }
        CaTrust::Fingerprint(pin) => open_pinned(endpoint, pin).await,
    }
}

async fn open_pinned(
    endpoint: &Endpoint,
    pin: &Fingerprint,
) -> Result<(Conn, Vec<CertificateDer<'static>>), ClientError> {
    let capture = CapturingVerifier::new();
    let tls = client_config(ServerAuth::Verifier(capture.verifier()), ClientCert::None)
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let mut conn = endpoint.connect(Arc::new(tls)).await?;
    let (status, body) = conn.send(Method::GET, "/v1/roots", None).await?;
    if status != StatusCode::OK {
        return Err(ClientError::Protocol(format!(
            "GET /v1/roots answered {status}"
        )));
    }
    let roots = ward_pki::pem::parse_certs(&body)
        .map_err(|e| ClientError::Protocol(format!("GET /v1/roots: {e}")))?;
    let presented = capture.captured();
    let root = find_pinned(pin, &roots, &presented).ok_or_else(|| {
        ClientError::Trust(format!(
            "no root with fingerprint {pin} among the {} the CA sent",
            roots.len()
        ))
    })?;
    // The connection so far proved only that the server holds its key; it
    // becomes authenticated once its chain leads to the pinned root.
    let (leaf, intermediates) = presented
        .split_first()
        .ok_or_else(|| ClientError::Trust("the CA presented no certificate".into()))?;
    let mut store = rustls::RootCertStore::empty();
    store
        .add(root.clone())
        .map_err(|e| ClientError::Trust(format!("the pinned root is unusable: {e}")))?;
    let verifier =
        ServerVerifier::webpki(Arc::new(store)).map_err(|e| ClientError::Trust(e.to_string()))?;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &endpoint.server_name,
            &[],
            UnixTime::now(),
        )
        .map_err(|e| {
            ClientError::Trust(format!(
                "the CA's certificate does not verify against the pinned root: {e}"
            ))
        })?;
    Ok((conn, vec![root]))
}

/// The anchors to verify the CA's server certificate with: those the
/// client started with (its bundle file, or the pinned root) and the trust
/// bundle its current identity came with. That bundle arrived over a
/// connection authenticated by these anchors, so it is trusted as they
/// are; it carries the next root of a root rotation, so the client keeps
/// reaching the CA after the root it was pinned to has been retired.
pub(crate) fn followed_anchors(
    initial: &[CertificateDer<'static>],
    received: &[CertificateDer<'static>],
) -> Vec<CertificateDer<'static>> {
    let mut all = initial.to_vec();
    for root in received {
        if !all.contains(root) {
            all.push(root.clone());
        }
    }
    all
}

/// The certificate with fingerprint `pin` among `roots` (preferred) and the
/// chain the server presented.
fn find_pinned(
    pin: &Fingerprint,
    roots: &[CertificateDer<'static>],
    presented: &[CertificateDer<'static>],
) -> Option<CertificateDer<'static>> {
    roots
        .iter()
        .chain(presented)
        .find(|c| Fingerprint::of_der(c).ct_eq(pin))
        .cloned()
}

/// Fetches the CA's roots and returns the one whose fingerprint is `pin`,
/// after checking the CA's own chain leads to it: `step ca bootstrap` as a
/// function, for callers that want a bundle file.
pub async fn fetch_pinned_root(
    url: &str,
    pin: &Fingerprint,
) -> Result<CertificateDer<'static>, ClientError> {
    let endpoint = Endpoint::parse(url)?;
    let (_, mut roots) = tokio::time::timeout(crate::REQUEST_TIMEOUT, open_pinned(&endpoint, pin))
        .await
        .map_err(|_| ClientError::Timeout)??;
    roots
        .pop()
        .ok_or_else(|| ClientError::Trust("no pinned root".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followed_anchors_add_the_received_bundle_once() {
        let a = CertificateDer::from(vec![1u8]);
        let b = CertificateDer::from(vec![2u8]);
        let all = followed_anchors(std::slice::from_ref(&a), &[a.clone(), b.clone()]);
        assert_eq!(all, vec![a.clone(), b]);
        assert_eq!(followed_anchors(std::slice::from_ref(&a), &[]), vec![a]);
    }

    #[test]
    fn fingerprints_parse_in_every_spelling_and_refuse_garbage() {
        let fp = Fingerprint::of_der(b"root");
        let plain = fp.to_string();
        for text in [
            plain.clone(),
            plain.to_uppercase(),
            fp.to_colon_hex(),
            fp.to_colon_hex().to_lowercase(),
            format!("sha256 Fingerprint={}", fp.to_colon_hex()),
            format!("  {plain}\n"),
        ] {
            match CaTrust::fingerprint(&text) {
                Ok(CaTrust::Fingerprint(got)) => assert_eq!(got, fp, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        for bad in ["", "zz", &plain[..62], &format!("{plain}00"), "sha1=ab"] {
            let err = CaTrust::fingerprint(bad).unwrap_err().to_string();
            assert!(err.starts_with("--ca-fingerprint:"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn pinned_certificate_is_found_among_roots_or_presented_chain() {
        let a = CertificateDer::from(b"a-root".to_vec());
        let b = CertificateDer::from(b"b-intermediate".to_vec());
        let pin_a = Fingerprint::of_der(&a);
        let pin_b = Fingerprint::of_der(&b);
        let (roots, presented) = (vec![a.clone()], vec![b.clone()]);
        assert_eq!(find_pinned(&pin_a, &roots, &[]), Some(a));
        assert_eq!(find_pinned(&pin_b, &roots, &presented), Some(b));
        assert_eq!(find_pinned(&Fingerprint::of_der(b"x"), &roots, &[]), None);
    }

    #[test]
    fn bundle_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        assert!(CaTrust::bundle_file(&missing).is_err());
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err = CaTrust::bundle_file(&junk).unwrap_err().to_string();
        assert!(err.contains("junk.pem"), "{err}");
    }
}
