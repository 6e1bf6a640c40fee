//! The next intermediate from a root outside Ward: `ward ca intermediate
//! csr`, signed by `openssl x509 -req` (the external root here is the CA's
//! own root files, handled by openssl alone), `ward ca intermediate
//! install`; a certificate from another CA or for another key is refused
//! and changes nothing.

use std::process::Command;
use std::time::Duration;

use super::support::{issue, issuer_of, openssl_verifies, published, sha256};
use crate::common::OutputText;
use crate::harness::{Backend, Ca, poll};

const EXTENSIONS: &str = "[v3_int]\n\
basicConstraints = critical, CA:true, pathlen:0\n\
keyUsage = critical, keyCertSign, cRLSign, digitalSignature\n\
subjectKeyIdentifier = hash\n\
authorityKeyIdentifier = keyid:always\n";

/// `openssl x509 -req` signing `csr` with `ca_cert`/`ca_key`.
fn openssl_sign(
    ca: &Ca,
    csr: &std::path::Path,
    ca_cert: &std::path::Path,
    ca_key: &std::path::Path,
) -> std::path::PathBuf {
    let ext = ca.write("ext.cnf", EXTENSIONS);
    let out = ca.scratch("signed.pem");
    let run = Command::new("openssl")
        .args([
            "x509",
            "-req",
            "-days",
            "30",
            "-sha256",
            "-set_serial",
            "0x1234abcd",
        ])
        .arg("-in")
        .arg(csr)
        .arg("-CA")
        .arg(ca_cert)
        .arg("-CAkey")
        .arg(ca_key)
        .arg("-extfile")
        .arg(&ext)
        .args(["-extensions", "v3_int"])
        .arg("-out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "openssl x509 -req: {}",
        run.stderr_text()
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediate_signed_by_openssl_is_installed_and_signs() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = ca.serve();
    let client = ca.client(&server);
    let token = ca.token("spiffe://example.org/web", &["--uses", "5"]);
    let before = published(&client).await;

    let csr = ca.scratch("int.csr");
    let out = ca.ward(&["ca", "intermediate", "csr", "--out", csr.to_str().unwrap()]);
    assert!(out.status.success(), "csr: {}", out.stderr_text());
    // A second CSR while the first key waits is refused.
    let again = ca.ward(&["ca", "intermediate", "csr"]);
    assert!(!again.status.success());
    assert!(
        again.stderr_text().contains("already waits"),
        "{}",
        again.stderr_text()
    );

    // Signed by another CA: refused, nothing changes.
    let other = Ca::new(Backend::Sqlite).unwrap();
    let foreign = openssl_sign(&ca, &csr, &other.root(), &other.file("root.key"));
    let out = ca.ward(&[
        "ca",
        "intermediate",
        "install",
        "--cert",
        foreign.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("not issued by the root"),
        "{}",
        out.stderr_text()
    );
    // A CA certificate for another key (the current intermediate): refused.
    let out = ca.ward(&[
        "ca",
        "intermediate",
        "install",
        "--cert",
        ca.file("intermediate.crt").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("not for the key"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(published(&client).await, before, "nothing was installed");

    let signed = openssl_sign(&ca, &csr, &ca.root(), &ca.file("root.key"));
    let out = ca.ward(&[
        "ca",
        "intermediate",
        "install",
        "--cert",
        signed.to_str().unwrap(),
        "--overlap",
        "2s",
    ]);
    assert!(out.status.success(), "install: {}", out.stderr_text());
    let der = ward_ca::dir::read_certs(&signed).unwrap();
    let next = sha256(&der[0]);
    poll(
        Duration::from_secs(15),
        "the installed intermediate signs",
        || {
            let client = &client;
            let next = next.clone();
            async move {
                published(client)
                    .await
                    .first()
                    .is_some_and(|f| *f == next)
                    .then_some(())
            }
        },
    )
    .await;
    let chain = issue(&ca, &client, &token.secret).await;
    assert_eq!(issuer_of(&chain), next);
    openssl_verifies(&ca, &chain, "sslclient");
    assert!(
        !ca.file("intermediates/pending.key").exists(),
        "the pending key became the intermediate's"
    );
}
