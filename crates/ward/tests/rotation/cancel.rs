//! A rotation is published at once, can be cancelled before its switch
//! (and not twice, nor after the switch), refuses a second pending one,
//! and never lets a certificate outlive its issuer.

use std::time::{Duration, Instant};

use super::support::{initial, issue, issuer_of, openssl_verifies, published, rotate};
use crate::common::OutputText;
use crate::harness::{Backend, Ca, not_after, poll};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_is_published_at_once_and_can_be_cancelled_before_the_switch() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = ca.serve();
    let client = ca.client(&server);
    let token = ca.token("spiffe://example.org/web", &["--uses", "10"]);
    let old = initial(&ca);
    assert_eq!(published(&client).await, vec![old.clone()]);

    let next = rotate(&ca, "1h", &[]);
    // Published (after the signing one) before it signs.
    let started = Instant::now();
    poll(
        Duration::from_secs(10),
        "the next intermediate is published",
        || {
            let client = &client;
            let (old, next) = (old.clone(), next.clone());
            async move { (published(client).await == vec![old, next]).then_some(()) }
        },
    )
    .await;
    println!("published after {:?}", started.elapsed());
    assert_eq!(issuer_of(&issue(&ca, &client, &token.secret).await), old);

    // A second rotation while one is pending is refused, clearly.
    let out = ca.ward(&["ca", "rotate", "intermediate", "--overlap", "1h"]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("already pending"),
        "{}",
        out.stderr_text()
    );
    let status = ca.ward(&["ca", "rotate", "status"]).stdout_text();
    assert!(status.contains(&format!("pending    {next}")), "{status}");

    let out = ca.ward(&["ca", "rotate", "cancel"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    poll(
        Duration::from_secs(10),
        "the cancelled intermediate is withdrawn",
        || {
            let client = &client;
            let old = old.clone();
            async move { (published(client).await == vec![old]).then_some(()) }
        },
    )
    .await;
    assert_eq!(issuer_of(&issue(&ca, &client, &token.secret).await), old);
    let out = ca.ward(&["ca", "rotate", "cancel"]);
    assert!(!out.status.success(), "nothing left to cancel");
    assert!(
        out.stderr_text().contains("no rotation is pending"),
        "{}",
        out.stderr_text()
    );
    let status = ca.ward(&["ca", "rotate", "status"]).stdout_text();
    assert!(status.contains(&format!("cancelled  {next}")), "{status}");

    // After a switch, cancelling is refused and the new one stays.
    let newer = rotate(&ca, "1s", &[]);
    poll(Duration::from_secs(10), "the switch", || {
        let client = &client;
        let newer = newer.clone();
        async move {
            published(client)
                .await
                .first()
                .is_some_and(|f| *f == newer)
                .then_some(())
        }
    })
    .await;
    let out = ca.ward(&["ca", "rotate", "cancel"]);
    assert!(
        !out.status.success(),
        "a switched rotation cannot be cancelled"
    );
    let chain = issue(&ca, &client, &token.secret).await;
    assert_eq!(issuer_of(&chain), newer);
    openssl_verifies(&ca, &chain, "sslclient");
    // The replaced intermediate stays published while its certificates live.
    assert_eq!(published(&client).await, vec![newer.clone(), old.clone()]);

    // The state is in the store: a restarted CA and `ward cert create`
    // sign with the new intermediate too.
    drop(client);
    let mut server = server;
    server.kill();
    let server = ca.serve();
    let client = ca.client(&server);
    assert_eq!(published(&client).await, vec![newer.clone(), old]);
    assert_eq!(issuer_of(&issue(&ca, &client, &token.secret).await), newer);
    let prefix = ca
        .pki()
        .issue("client", "spiffe://example.org/offline", &[]);
    let chain = std::fs::read_to_string(format!("{}.crt", prefix.display())).unwrap();
    assert_eq!(issuer_of(&chain), newer);
    openssl_verifies(&ca, &chain, "sslclient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outlives_a_short_lived_next_intermediate_and_its_expiry_warns() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = ca.serve();
    let client = ca.client(&server);
    let token = ca.token("spiffe://example.org/web", &["--cert-ttl", "1h"]);
    let next = rotate(&ca, "1s", &["--validity", "10m"]);
    poll(Duration::from_secs(10), "the switch", || {
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
    let leaf = ca.write("leaf.pem", &chain);
    let int = ca.file(&format!("intermediates/{next}.crt"));
    let (leaf_end, int_end) = (not_after(&leaf), not_after(&int));
    assert!(
        leaf_end <= int_end,
        "the leaf ({leaf_end}) ends no later than its issuer ({int_end})"
    );
    openssl_verifies(&ca, &chain, "sslclient");

    // A 10-minute intermediate is inside the default 30-day margin.
    let ready = client.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert!(
        ready
            .text()
            .contains("warning: the signing intermediate expires in"),
        "{}",
        ready.text()
    );
    let metrics = client.get("/metrics").await.text();
    assert_eq!(
        crate::common::sample(&metrics, "ward_ca_intermediate_expiring"),
        Some(1.0),
        "{metrics}"
    );
    let left = crate::common::sample(
        &metrics,
        "ward_ca_certificate_expiry_seconds{kind=\"intermediate\"}",
    )
    .unwrap();
    assert!(left > 0.0 && left <= 600.0, "{left}");
    let of = |kind: &str| {
        crate::common::sample(
            &metrics,
            &format!("ward_ca_certificate_expiry_seconds{{kind=\"{kind}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {kind} gauge: {metrics}"))
    };
    assert!(of("root") > 600.0, "the root outlives the intermediate");
    // The OCSP responder the new intermediate issued is clamped to it too.
    let responder = of("responder");
    assert!(
        responder > 0.0 && responder <= left,
        "{responder} vs {left}"
    );
}
