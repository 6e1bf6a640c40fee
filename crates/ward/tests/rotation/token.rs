//! Rotation of a CA whose keys are in a PKCS#11 token (SoftHSM2): the root
//! in the token signs the next intermediate, whose key is made in the same
//! token (sensitive, never extractable, as OpenSC's `pkcs11-tool` reports)
//! and never written to a file; after the switch it signs through the token.

use std::time::Duration;

use super::support::{issue, issuer_of, openssl_verifies, published, rotate};
use crate::common::OutputText;
use crate::harness::poll;
use crate::softhsm::hsm_ca;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_intermediate_key_is_made_in_the_token_and_signs_through_it() {
    let Some((ca, hsm)) = hsm_ca("ecdsa-p256", &[]) else {
        return;
    };
    let server = ca.serve();
    let client = ca.client(&server);
    let token = ca.token("spiffe://example.org/web", &["--uses", "5"]);

    let next = rotate(&ca, "1s", &[]);
    assert!(
        !ca.file(&format!("intermediates/{next}.key")).exists(),
        "no key file: the key is in the token"
    );
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
    let chain = issue(&ca, &client, &token.secret).await;
    assert_eq!(issuer_of(&chain), next);
    openssl_verifies(&ca, &chain, "sslclient");

    let listing = hsm.list_private_keys();
    let keys: Vec<&str> = listing.split("Private Key Object").skip(1).collect();
    assert_eq!(
        keys.len(),
        4,
        "root, root OCSP and two intermediates:\n{listing}"
    );
    let intermediates: Vec<&&str> = keys
        .iter()
        .filter(|k| k.contains("label:      ward-intermediate-"))
        .collect();
    assert_eq!(intermediates.len(), 2, "{listing}");
    for key in intermediates {
        assert!(
            key.contains("sensitive") && key.contains("never extractable"),
            "{key}"
        );
    }
}

/// `ward ca rotate root` with the CA keys in the token: R2's OCSP
/// responder key is made in the token too (no key file, its URI beside
/// R2), and the running CA signs answers about I2 with it, which openssl
/// verifies under R2 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_roots_ocsp_responder_key_is_made_in_the_token_and_answers() {
    let Some((ca, hsm)) = hsm_ca("ecdsa-p256", &[]) else {
        return;
    };
    let server = crate::dual::DualServer::start(&ca);
    let out = ca.ward(&["ca", "rotate", "root", "--overlap", "1h"]);
    assert!(out.status.success(), "rotate root: {}", out.stderr_text());
    let text = out.stdout_text();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix:?} in {text}"))
            .trim()
            .to_owned()
    };
    let (r2, i2) = (find("Next root: "), find("Its intermediate: "));
    assert!(
        !ca.file(&format!("roots/{r2}-ocsp.key")).exists(),
        "no key file: the responder key is in the token"
    );
    let uri = std::fs::read_to_string(ca.file(&format!("roots/{r2}-ocsp.uri"))).unwrap();
    assert!(uri.starts_with("pkcs11:"), "{uri}");
    let listing = hsm.list_private_keys();
    let responders: Vec<&str> = listing
        .split("Private Key Object")
        .filter(|k| k.contains("label:      ward-root-ocsp-"))
        .collect();
    assert_eq!(responders.len(), 2, "R1's and R2's:\n{listing}");
    for key in responders {
        assert!(
            key.contains("sensitive") && key.contains("never extractable"),
            "{key}"
        );
    }

    let r2_crt = ca.file(&format!("roots/{r2}.crt"));
    let i2_crt = ca.file(&format!("intermediates/{i2}.crt"));
    let url = format!("http://{}/ocsp", server.http);
    poll(Duration::from_secs(15), "I2 answered under R2", || {
        let (r2_crt, i2_crt, url) = (r2_crt.clone(), i2_crt.clone(), url.clone());
        async move {
            let (ok, out, err) = crate::harness::openssl(&[
                "ocsp",
                "-issuer",
                r2_crt.to_str().unwrap(),
                "-cert",
                i2_crt.to_str().unwrap(),
                "-url",
                &url,
                "-CAfile",
                r2_crt.to_str().unwrap(),
            ]);
            (ok && err.contains("Response verify OK")
                && out.contains(&format!("{}: good", i2_crt.display())))
            .then_some(())
        }
    })
    .await;
}
