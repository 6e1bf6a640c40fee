//! What every OCSP scenario needs: a CA whose certificates carry an AIA
//! OCSP URL, certificates issued online, and `openssl ocsp` as the judge.

use std::path::PathBuf;

use crate::harness::{Ca, Client, openssl, sign_req};

/// The OCSP URL written into issued certificates. The port is a
/// placeholder: tests pass the real listener to `openssl ocsp -url`.
pub(crate) const OCSP_URL: &str = "http://127.0.0.1:9/ocsp";

/// Sets `[revocation] ocsp_url` in ca.toml.
pub(crate) fn configure(ca: &Ca) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let new = text.replace(
        "# ocsp_url = \"http://ca.example.org/ocsp\"",
        &format!("ocsp_url = \"{OCSP_URL}\""),
    );
    assert_ne!(new, text, "ca.toml has no ocsp_url to set");
    std::fs::write(&path, new).unwrap();
}

/// A certificate issued online.
pub(crate) struct Leaf {
    /// The leaf alone (PEM).
    pub(crate) cert: PathBuf,
    /// Leaf and intermediate (PEM), what a client presents.
    pub(crate) chain: PathBuf,
    /// Its private key.
    pub(crate) key: PathBuf,
    /// Its serial as the API prints it.
    pub(crate) serial: String,
}

/// Issues a certificate for `spiffe://example.org/NAME` through `/v1/sign`.
pub(crate) async fn issue(ca: &Ca, client: &Client, name: &str) -> Leaf {
    let token = ca.token(&format!("spiffe://example.org/{name}"), &[]);
    let csr = ca.csr(&[]);
    let json = client
        .send(&sign_req(&token.secret, &csr.pem))
        .await
        .expect(201);
    Leaf {
        cert: ca.write("leaf.pem", json["certificate"].as_str().unwrap()),
        chain: ca.write("chain.pem", json["chain"].as_str().unwrap()),
        key: csr.key,
        serial: json["serial"].as_str().unwrap().to_owned(),
    }
}

/// `openssl ocsp` about `cert` (issued by `issuer`) against `url`, trusting
/// only the root; `extra` goes before `-cert` (e.g. `-sha256`). Returns
/// (exit ok, stdout, stderr).
pub(crate) fn openssl_ocsp(
    ca: &Ca,
    issuer: &str,
    cert: &std::path::Path,
    url: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let issuer = ca.file(issuer);
    let root = ca.root();
    let mut args = vec!["ocsp", "-issuer", issuer.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-cert",
        cert.to_str().unwrap(),
        "-url",
        url,
        "-CAfile",
        root.to_str().unwrap(),
    ]);
    openssl(&args)
}
