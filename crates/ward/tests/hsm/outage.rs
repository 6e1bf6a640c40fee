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
    // One token good for every request of the test, made while the token
    // is there (`ward token create` opens the CA directory).
    let token = ca.token("spiffe://example.org/w", &["--uses", "30"]);
    let sign = |_: &str| sign_req(&token.secret, &ca.csr(&[]).pem);
    client.send(&sign("before")).await.expect(201);

    // The token's directory disappears (as a token pulled from its slot).
    let token_dir = hsm.token_dir();
    let away = hsm.tokens.with_file_name("token-away");
    let during = sign("during");
    std::fs::rename(&token_dir, &away).unwrap();
    client
        .send(&during)
        .await
        .expect_error(503, "signer_unavailable");
    // Requests that need no signature still work.
    let roots = client.get("/v1/roots").await;
    assert_eq!(roots.status, 200, "{}", roots.text());
    assert!(roots.text().contains("BEGIN CERTIFICATE"));
    assert!(
        server.stderr().contains("the PKCS#11 token did not sign"),
        "{}",
        server.stderr()
    );

    // Back in its slot: issuance resumes without a restart. The CA looks
    // for the token again at most once a second, so a client retrying
    // after a 503 (as Retry-After asks) gets its certificate within a few
    // tries.
    std::fs::rename(&away, &token_dir).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let resp = client.send(&sign("after")).await;
        statuses.push(resp.status);
        if resp.status == 201 {
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.text());
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        statuses.last(),
        Some(&201),
        "no recovery after {statuses:?}:\n{}",
        server.stderr()
    );
    println!("statuses after the token came back: {statuses:?}");
    assert_eq!(client.get("/v1/crl").await.status, 200);
}
