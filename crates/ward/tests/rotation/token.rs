//! Rotation of a CA whose keys are in a PKCS#11 token (SoftHSM2): the root
//! in the token signs the next intermediate, whose key is made in the same
//! token (sensitive, never extractable, as OpenSC's `pkcs11-tool` reports)
//! and never written to a file; after the switch it signs through the token.

use std::time::Duration;

use super::support::{issue, issuer_of, openssl_verifies, published, rotate};
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
