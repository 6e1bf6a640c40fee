//! The credential store and the verifier hooks, without sockets: what is
//! published is what handshakes get, a staple rides on the current pair, a
//! caller's check runs after path validation and hears of every refusal.

use std::sync::{Arc, Mutex};

use rustls::client::ResolvesClientCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use ward_testkit::{read_certs, read_key};
use ward_tls::credentials::{Credentials, certified_key};
use ward_tls::verifier::{ClientCheck, ClientVerifier};

use crate::common::{leaf, roots};

#[test]
fn a_staple_rides_on_the_current_pair_until_the_next_publish() {
    let store = Credentials::new(read_certs("server.crt"), read_key("server.key")).unwrap();
    assert_eq!(store.ocsp_staple(), None);
    store.set_ocsp_staple(Some(b"response".to_vec()));
    assert_eq!(store.ocsp_staple().as_deref(), Some(&b"response"[..]));
    assert_eq!(store.current().cert[0], leaf("server.crt"));

    let next = certified_key(read_certs("client.crt"), read_key("client.key")).unwrap();
    store.publish(Arc::new(next));
    assert_eq!(store.current().cert[0], leaf("client.crt"));
    assert_eq!(store.ocsp_staple(), None, "a new pair starts unstapled");
    store.set_ocsp_staple(None);
    assert_eq!(store.current().cert[0], leaf("client.crt"));
}

#[test]
fn a_client_presents_only_a_key_the_server_can_verify() {
    let store = Credentials::new(read_certs("client.crt"), read_key("client.key")).unwrap();
    let scheme = store.current().key.algorithm();
    let offered: Vec<SignatureScheme> = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA256,
    ]
    .into();
    assert!(store.has_certs());
    assert!(
        ResolvesClientCert::resolve(&store, &[], &offered).is_some(),
        "{scheme:?}"
    );
    assert!(ResolvesClientCert::resolve(&store, &[], &[]).is_none());
}

/// Refuses every leaf and remembers what it was told.
#[derive(Debug, Default)]
struct Refuse {
    checked: Mutex<usize>,
    refused: Mutex<Vec<CertificateDer<'static>>>,
}

impl ClientCheck for Refuse {
    fn check(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        *self.checked.lock().unwrap() += 1;
        Err(rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose,
        ))
    }

    fn refused(&self, end_entity: &CertificateDer<'_>) {
        self.refused
            .lock()
            .unwrap()
            .push(end_entity.clone().into_owned());
    }
}

#[test]
fn a_callers_check_runs_after_the_chain_and_hears_of_every_refusal() {
    let check = Arc::new(Refuse::default());
    let verifier = ClientVerifier::required(roots())
        .unwrap()
        .with_check(check.clone());
    assert!(verifier.client_auth_mandatory());
    let chain = read_certs("client.crt");
    let err = verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)
    );
    assert_eq!(*check.checked.lock().unwrap(), 1);

    // A chain that does not validate never reaches the check, but its
    // refusal is still reported.
    let server = read_certs("server.crt");
    let unrelated = CertificateDer::from(b"not a certificate".to_vec());
    assert!(
        verifier
            .verify_client_cert(&unrelated, &server[1..], UnixTime::now())
            .is_err()
    );
    assert_eq!(*check.checked.lock().unwrap(), 1);
    assert_eq!(check.refused.lock().unwrap().len(), 2);
}

#[test]
fn any_tls_eku_is_optional_and_accepts_a_server_certificate() {
    let root = read_certs("root.crt");
    let verifier = ClientVerifier::any_tls_eku(&root).unwrap();
    assert!(!verifier.client_auth_mandatory());
    let chain = read_certs("server.crt");
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .unwrap();
    assert!(ClientVerifier::any_tls_eku(&[]).is_err());
}
