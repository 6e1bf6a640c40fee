//! Each intermediate signs the CRL its own certificates name: the
//! directory's intermediate keeps signing the CRL at `crl_url` after the
//! switch, while its certificates live, and the rotated one signs
//! `crl_url/<sha256>`. openssl checks revocation of both with
//! `-crl_check` against the CRL each certificate's CRL Distribution Point
//! names. OCSP keeps answering for both intermediates' certificates.

use std::process::Command;
use std::time::Duration;

use super::support::{issue, issuer_of, published, rotate};
use crate::common::OutputText;
use crate::harness::{Backend, Ca, Client, poll, x509};

const CRL_URL: &str = "http://ca.test/v1/crl";

/// Sets `[revocation] crl_url` in ca.toml (read when the server starts).
fn set_crl_url(ca: &Ca) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let new = text.replace(
        "# crl_url = \"http://ca.example.org/v1/crl\"",
        &format!("crl_url = \"{CRL_URL}\""),
    );
    assert_ne!(new, text, "ca.toml has a crl_url line to set");
    std::fs::write(&path, new).unwrap();
}

/// The CRL at `path` of the CA, as a PEM file.
async fn crl_pem(ca: &Ca, client: &Client, path: &str) -> std::path::PathBuf {
    let resp = client.get(path).await;
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    let der = ca.scratch("crl.der");
    std::fs::write(&der, &resp.body).unwrap();
    let pem = ca.scratch("crl.pem");
    let out = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&pem)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl crl: {}", out.stderr_text());
    pem
}

/// `openssl verify -crl_check` of a chain PEM with `crl`: (ok, output).
fn verify_with_crl(ca: &Ca, chain_pem: &str, crl: &std::path::Path) -> (bool, String) {
    let chain = ca.write("chain.pem", chain_pem);
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-crl_check")
        .arg("-CRLfile")
        .arg(crl)
        .arg("-CAfile")
        .arg(ca.root())
        .arg("-untrusted")
        .arg(&chain)
        .arg(&chain)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", out.stdout_text(), out.stderr_text()),
    )
}

/// The URI of a certificate's CRL Distribution Point.
fn cdp(ca: &Ca, chain_pem: &str) -> String {
    let path = ca.write("leaf.pem", chain_pem);
    let text = x509(&path, &["-ext", "crlDistributionPoints"]);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("URI:"))
        .unwrap_or_else(|| panic!("no CDP: {text}"))
        .to_owned()
}

fn serial(ca: &Ca, chain_pem: &str) -> String {
    let path = ca.write("leaf.pem", chain_pem);
    x509(&path, &["-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_certificates_are_checked_against_their_own_issuers_crl() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    set_crl_url(&ca);
    let server = crate::harness::Server::start_with(&ca, &["--http-listen", "127.0.0.1:0"]);
    let client = ca.client(&server);
    let token = ca.token("spiffe://example.org/web", &["--uses", "10"]);
    let http = poll(Duration::from_secs(10), "the plain-HTTP listener", || {
        let line = server.stderr().lines().find_map(|l| {
            l.strip_prefix("ward ca: listening on http://")
                .map(str::to_owned)
        });
        async move { line }
    })
    .await;
    let ocsp_url = format!("http://{}/ocsp", http.trim());

    let before = issue(&ca, &client, &token.secret).await;
    assert_eq!(cdp(&ca, &before), CRL_URL);
    let next = rotate(&ca, "1s", &[]);
    poll(Duration::from_secs(15), "the switch", || {
        let client = &client;
        let next = next.clone();
        async move {
            published(client)
                .await
                .first()
                .is_some_and(|f| *f == next)
                .then_some(())
        }
    })
    .await;
    let after = issue(&ca, &client, &token.secret).await;
    let kept = issue(&ca, &client, &token.secret).await;
    assert_eq!(issuer_of(&after), next);
    assert_eq!(cdp(&ca, &after), format!("{CRL_URL}/{next}"));

    for chain in [&before, &after] {
        let out = ca.ward(&["revoke", &serial(&ca, chain)]);
        assert!(out.status.success(), "revoke: {}", out.stderr_text());
    }
    // Each certificate's own CRL lists it, and openssl finds it revoked.
    let old_crl = poll(
        Duration::from_secs(10),
        "the old intermediate's CRL lists it",
        || {
            let (ca, client, before) = (&ca, &client, before.clone());
            async move {
                let crl = crl_pem(ca, client, "/v1/crl").await;
                let (ok, text) = verify_with_crl(ca, &before, &crl);
                (!ok && text.contains("certificate revoked")).then_some(crl)
            }
        },
    )
    .await;
    let new_path = format!("/v1/crl/{next}");
    let new_crl = poll(
        Duration::from_secs(10),
        "the new intermediate's CRL lists it",
        || {
            let (ca, client, after, path) = (&ca, &client, after.clone(), new_path.clone());
            async move {
                let crl = crl_pem(ca, client, &path).await;
                let (ok, text) = verify_with_crl(ca, &after, &crl);
                (!ok && text.contains("certificate revoked")).then_some(crl)
            }
        },
    )
    .await;
    // An unrevoked certificate of the new intermediate passes its CRL check;
    // the old intermediate's CRL cannot vouch for it (another issuer).
    let (ok, text) = verify_with_crl(&ca, &kept, &new_crl);
    assert!(ok, "{text}");
    let (ok, text) = verify_with_crl(&ca, &kept, &old_crl);
    assert!(!ok, "a CRL of another issuer is no proof: {text}");
    assert!(text.contains("unable to get certificate CRL"), "{text}");
    // OCSP answers for the certificates of both intermediates, each signed
    // by a responder of its own issuer (openssl checks that against the root).
    let old_int = ca.file("intermediate.crt");
    let new_int = ca.file(&format!("intermediates/{next}.crt"));
    for (chain, issuer, want) in [
        (&before, &old_int, "revoked"),
        (&after, &new_int, "revoked"),
        (&kept, &new_int, "good"),
    ] {
        let leaf = ca.write("leaf.pem", chain);
        let (ok, out, err) = crate::harness::openssl(&[
            "ocsp",
            "-issuer",
            issuer.to_str().unwrap(),
            "-cert",
            leaf.to_str().unwrap(),
            "-url",
            &ocsp_url,
            "-CAfile",
            ca.root().to_str().unwrap(),
        ]);
        assert!(ok, "openssl ocsp: {out}{err}");
        assert!(
            out.contains(&format!(": {want}")) && err.contains("Response verify OK"),
            "expected {want}: {out}{err}"
        );
    }
    // An unknown intermediate has no CRL.
    let missing = client.get(&format!("/v1/crl/{}", "0".repeat(64))).await;
    assert_eq!(missing.status, 404);
}
