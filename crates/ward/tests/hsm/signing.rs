//! A CA whose root, intermediate and root OCSP responder keys were made in
//! the token: nothing of them is on disk, the token reports them sensitive
//! and never extractable, and certificates (through the API and the
//! agent), CRLs and OCSP answers signed through the token pass openssl.

use std::path::{Path, PathBuf};

use super::softhsm::{LABEL, hsm_ca};
use crate::common::{OutputText, openssl_verify};
use crate::dual::DualServer;
use crate::harness::{Ca, Client, openssl, sign_req};
use crate::procs::{AgentDir, AgentProcess, DEADLINE};

/// The URLs written into issued certificates (ports are placeholders:
/// tests pass the real listener to openssl).
const OCSP_URL: &str = "http://127.0.0.1:9/ocsp";
const CRL_URL: &str = "http://127.0.0.1:9/v1/crl";

fn configure_urls(ca: &Ca) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let new = text
        .replace(
            "# ocsp_url = \"http://ca.example.org/ocsp\"",
            &format!("ocsp_url = \"{OCSP_URL}\""),
        )
        .replace(
            "# crl_url = \"http://ca.example.org/v1/crl\"",
            &format!("crl_url = \"{CRL_URL}\""),
        );
    assert_ne!(new, text, "ca.toml has no URLs to set");
    std::fs::write(&path, new).unwrap();
}

/// The CA files and ca.toml say the keys are in the token, not on disk.
fn keys_live_in_the_token(ca: &Ca, hsm: &super::softhsm::SoftHsm) {
    for file in ["root.key", "intermediate.key", "root-ocsp.key"] {
        assert!(!ca.file(file).exists(), "{file} must not be written");
    }
    assert!(
        ca.file("admin.key").exists(),
        "the admin identity is a file"
    );
    let toml = std::fs::read_to_string(ca.file("ca.toml")).unwrap();
    for role in ["root", "intermediate", "root_ocsp"] {
        let line = toml
            .lines()
            .find(|l| l.starts_with(&format!("{role} = \"pkcs11:")))
            .unwrap_or_else(|| panic!("no {role} URI in ca.toml:\n{toml}"));
        assert!(line.contains(&format!("token={LABEL}")), "{line}");
        assert!(
            line.contains("module-path=/usr/lib/softhsm/libsofthsm2.so"),
            "{line}"
        );
        assert!(line.contains("pin-source=file:"), "{line}");
        assert!(!line.contains("pin-value"), "{line}");
    }

    // The token's own account of the keys (OpenSC pkcs11-tool).
    let listing = hsm.list_private_keys();
    let keys: Vec<&str> = listing.split("Private Key Object").skip(1).collect();
    assert_eq!(keys.len(), 3, "three private keys in the token:\n{listing}");
    for role in ["ward-root-", "ward-intermediate-", "ward-root-ocsp-"] {
        assert!(
            keys.iter()
                .any(|k| k.contains(&format!("label:      {role}"))),
            "no key labelled {role}…:\n{listing}"
        );
    }
    for key in keys {
        let access = key
            .lines()
            .find(|l| l.trim_start().starts_with("Access:"))
            .unwrap_or_else(|| panic!("no Access line:\n{key}"));
        assert!(access.contains("sensitive"), "{access}");
        assert!(access.contains("never extractable"), "{access}");
        assert!(
            !access.contains(" extractable,") || access.contains("never extractable"),
            "{access}"
        );
    }
}

async fn issue(ca: &Ca, client: &Client, name: &str) -> (PathBuf, PathBuf, String) {
    let token = ca.token(&format!("spiffe://example.org/{name}"), &[]);
    let csr = ca.csr(&[]);
    let json = client
        .send(&sign_req(&token.secret, &csr.pem))
        .await
        .expect(201);
    (
        ca.write("leaf.pem", json["certificate"].as_str().unwrap()),
        ca.write("chain.pem", json["chain"].as_str().unwrap()),
        json["serial"].as_str().unwrap().to_owned(),
    )
}

fn ocsp(ca: &Ca, issuer: &Path, cert: &Path, url: &str) -> String {
    let (ok, out, err) = openssl(&[
        "ocsp",
        "-issuer",
        issuer.to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-url",
        url,
        "-CAfile",
        ca.root().to_str().unwrap(),
    ]);
    assert!(ok, "openssl ocsp failed:\n{out}\n{err}");
    assert!(err.contains("Response verify OK"), "{out}\n{err}");
    out
}

async fn token_signs_everything(key_type: &str, with_agent: bool) {
    let Some((ca, hsm)) = hsm_ca(key_type, &[]) else {
        return;
    };
    keys_live_in_the_token(&ca, &hsm);
    configure_urls(&ca);
    ca.set_limits((10_000, 10_000), (10_000, 10_000));
    let server = DualServer::start(&ca);
    let client = Client::new(server.https, &ca.root(), None);
    let https = format!("https://{}", server.https);
    let ocsp_url = format!("http://{}/ocsp", server.http);

    // A certificate through the API: its chain verifies up to the root.
    let (leaf, chain, serial) = issue(&ca, &client, "api").await;
    let (ok, text) = openssl_verify(&ca.root(), &chain, "sslclient");
    assert!(ok, "openssl verify of a token-signed chain: {text}");
    assert!(ocsp(&ca, &ca.file("intermediate.crt"), &leaf, &ocsp_url).contains(": good"));
    // The intermediate, answered by the root's responder whose key is in
    // the token too.
    let about_int = ocsp(&ca, &ca.root(), &ca.file("intermediate.crt"), &ocsp_url);
    assert!(about_int.contains(": good"), "{about_int}");

    if with_agent {
        // Concurrent issuance through the session pool: 16 in flight.
        let many = ca.token("spiffe://example.org/many", &["--uses", "0"]);
        let req = sign_req(&many.secret, &ca.csr(&[]).pem);
        let burst = crate::harness::burst(&client, &req, 96, 16, std::sync::Arc::new(|_| {})).await;
        assert!(
            burst.statuses().iter().all(|s| *s == 201),
            "{:?}",
            burst.statuses()
        );
        println!("concurrent issuance through the token: {}", burst.summary());

        let token = ca.token("spiffe://example.org/agent", &[]);
        let dir = AgentDir::new(&ca, "agent");
        let out = dir.root.join("out");
        let token_file = dir.path("token");
        std::fs::write(&token_file, format!("{}\n", token.secret)).unwrap();
        let mut agent = AgentProcess::start(
            &[
                "--ca",
                &https,
                "--ca-bundle",
                ca.root().to_str().unwrap(),
                "--token-file",
                &token_file,
                "--out-dir",
                out.to_str().unwrap(),
            ],
            &[],
        );
        agent.wait_deliveries(1, DEADLINE);
        let (ok, text) = openssl_verify(&ca.root(), &out.join("svid.pem"), "sslclient");
        assert!(ok, "the agent's certificate: {text}");
        agent.terminate();
    }

    // Revocation: the CRL signed through the token verifies against the
    // intermediate and lists the serial; OCSP says revoked.
    let out = crate::common::ward(&[
        "revoke",
        &serial,
        "--reason",
        "keyCompromise",
        "--ca",
        &https,
        "--admin-cert",
        ca.file("admin.crt").to_str().unwrap(),
        "--admin-key",
        ca.file("admin.key").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "ward revoke: {}", out.stderr_text());
    let crl = ca.write("crl.pem", &client.get("/v1/crl.pem").await.text());
    let (ok, text, err) = openssl(&[
        "crl",
        "-in",
        crl.to_str().unwrap(),
        "-CAfile",
        ca.file("intermediate.crt").to_str().unwrap(),
        "-verify",
        "-noout",
        "-text",
    ]);
    assert!(
        ok && err.contains("verify OK"),
        "openssl crl -verify:\n{text}\n{err}"
    );
    let hex = serial.to_ascii_uppercase();
    assert!(text.contains(&hex), "the CRL lists {hex}:\n{text}");
    let revoked = ocsp(&ca, &ca.file("intermediate.crt"), &leaf, &ocsp_url);
    assert!(revoked.contains(": revoked"), "{revoked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_p256_keys_in_the_token_sign_certificates_crls_and_ocsp() {
    token_signs_everything("ecdsa-p256", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_p384_keys_in_the_token_sign_certificates_crls_and_ocsp() {
    token_signs_everything("ecdsa-p384", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_in_the_token_sign_certificates_crls_and_ocsp() {
    token_signs_everything("rsa-2048", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_keys_in_the_token_sign_certificates_crls_and_ocsp() {
    token_signs_everything("ed25519", false).await;
}

#[test]
fn init_refuses_a_wrong_pin_and_leaves_nothing_behind() {
    let pki = crate::common::Pki::empty();
    let Some(hsm) = super::softhsm::SoftHsm::new(&pki.path("")) else {
        return;
    };
    let bad_pin = pki.path("bad.pin");
    std::fs::write(&bad_pin, "00000000\n").unwrap();
    let out = crate::common::ward_env(
        &[
            "ca",
            "init",
            "--dir",
            pki.ca_dir(),
            "--trust-domain",
            "example.org",
            "--pkcs11-module",
            super::softhsm::MODULE,
            "--pkcs11-token",
            LABEL,
            "--pin-file",
            bad_pin.to_str().unwrap(),
        ],
        &hsm.envs(),
    );
    assert!(!out.status.success());
    let err = out.stderr_text();
    assert!(err.contains("PIN was refused"), "{err}");
    assert!(!Path::new(pki.ca_dir()).exists(), "nothing is left behind");
    // A token that does not exist.
    let out = crate::common::ward_env(
        &[
            "ca",
            "init",
            "--dir",
            pki.ca_dir(),
            "--trust-domain",
            "example.org",
            "--pkcs11-module",
            super::softhsm::MODULE,
            "--pkcs11-token",
            "no-such-token",
            "--pin-file",
            hsm.pin_file.to_str().unwrap(),
        ],
        &hsm.envs(),
    );
    assert!(!out.status.success());
    assert!(
        out.stderr_text()
            .contains("no token labelled \"no-such-token\""),
        "{}",
        out.stderr_text()
    );
    assert!(!Path::new(pki.ca_dir()).exists(), "nothing is left behind");
    assert!(
        !hsm.list_private_keys().contains("Private Key Object"),
        "no key was made"
    );
    // A failure after the keys were made (the store exists already): the
    // keys made in the token are removed again.
    let taken = pki.path("taken.db");
    std::fs::write(&taken, "").unwrap();
    let mut args = vec![
        "ca".to_owned(),
        "init".into(),
        "--dir".into(),
        pki.ca_dir().to_owned(),
        "--trust-domain".into(),
        "example.org".into(),
        "--database".into(),
        taken.to_str().unwrap().to_owned(),
    ];
    args.extend(hsm.init_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::common::ward_env(&refs, &hsm.envs());
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("refusing to reuse"),
        "{}",
        out.stderr_text()
    );
    assert!(
        !hsm.list_private_keys().contains("Private Key Object"),
        "the keys made before the failure are removed:\n{}",
        hsm.list_private_keys()
    );
}
