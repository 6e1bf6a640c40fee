//! What the rotation scenarios share: `ward ca rotate …` on a CA, the
//! intermediates a CA publishes, and the issuer of a PEM chain.

use std::path::Path;
use std::time::Duration;

use crate::common::OutputText;
use crate::harness::{Ca, Client, pem_certs, sign_req};

/// `ward ca rotate intermediate --overlap OVERLAP EXTRA…`; the new
/// intermediate's SHA-256 (hex).
pub(crate) fn rotate(ca: &Ca, overlap: &str, extra: &[&str]) -> String {
    let mut args = vec!["ca", "rotate", "intermediate", "--overlap", overlap];
    args.extend_from_slice(extra);
    let out = ca.ward(&args);
    assert!(out.status.success(), "rotate: {}", out.stderr_text());
    out.stdout_text()
        .lines()
        .find_map(|l| l.strip_prefix("Next intermediate: "))
        .expect("the fingerprint is printed")
        .trim()
        .to_owned()
}

/// The SHA-256 (lowercase hex) of a DER certificate.
pub(crate) fn sha256(der: &[u8]) -> String {
    ward_pki::Fingerprint::of_der(der)
        .to_string()
        .replace(':', "")
        .to_lowercase()
}

/// The fingerprints of `GET /v1/intermediates`, signing one first.
pub(crate) async fn published(client: &Client) -> Vec<String> {
    let resp = client.get("/v1/intermediates").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    ward_pki::pem::parse_certs(resp.text().as_bytes())
        .unwrap()
        .iter()
        .map(|c| sha256(c))
        .collect()
}

/// Signs a fresh CSR with `token` on `client`; the chain PEM returned.
pub(crate) async fn issue(ca: &Ca, client: &Client, token: &str) -> String {
    let csr = ca.csr(&[]);
    let json = client.send(&sign_req(token, &csr.pem)).await.expect(201);
    json["chain"].as_str().unwrap().to_owned()
}

/// The fingerprint of the intermediate in a chain PEM (its second
/// certificate).
pub(crate) fn issuer_of(chain_pem: &str) -> String {
    let certs = ward_pki::pem::parse_certs(chain_pem.as_bytes()).unwrap();
    assert!(certs.len() >= 2, "a chain with its intermediate");
    sha256(&certs[1])
}

/// The fingerprint of `DIR/intermediate.crt`.
pub(crate) fn initial(ca: &Ca) -> String {
    let der = ward_ca::dir::read_certs(&ca.file("intermediate.crt")).unwrap();
    sha256(&der[0])
}

/// `openssl verify -CAfile root -untrusted <intermediate> leaf` of a chain PEM.
pub(crate) fn openssl_verifies(ca: &Ca, chain_pem: &str, purpose: &str) {
    let path = ca.write("chain.pem", chain_pem);
    let (ok, text) = crate::common::openssl_verify(&ca.root(), &path, purpose);
    assert!(ok, "openssl verify: {text}");
}
