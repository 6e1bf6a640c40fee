//! A token that goes away: signing answers 503 (`signer_unavailable`), the
//! CA keeps serving what needs no signature, and issuance works again as
//! soon as the token is back, without a restart.

use super::softhsm::hsm_ca;
use crate::harness::sign_req;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_goes_away_gives_503_and_the_ca_recovers() {
    let Some((ca, hsm)) = hsm_ca("ecdsa-p256", &[]) else {
        return;
    };
    let server = ca.serve();
    let client = ca.client(&server);
    let sign = |name: &str| {
        let token = ca.token(&format!("spiffe://example.org/{name}"), &[]);
        let csr = ca.csr(&[]);
        sign_req(&token.secret, &csr.pem)
    };
    client.send(&sign("before")).await.expect(201);

    // The token's directory disappears (as a token pulled from its slot).
    let token_dir = hsm.token_dir();
    let away = hsm.tokens.with_file_name("token-away");
    let during = sign("during");
    let after = sign("after");
    std::fs::rename(&token_dir, &away).unwrap();
    client
        .send(&during)
        .await
        .expect_error(503, "signer_unavailable");
    // Requests that need no signature still work.
    client.get("/v1/roots").await.expect(200);
    assert!(
        server.stderr().contains("the PKCS#11 token did not sign"),
        "{}",
        server.stderr()
    );

    // Back in its slot: the next request is signed, no restart needed.
    std::fs::rename(&away, &token_dir).unwrap();
    client.send(&after).await.expect(201);
}
