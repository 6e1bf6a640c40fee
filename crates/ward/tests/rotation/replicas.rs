//! Two `ward ca serve` replicas on one PostgreSQL database (SPEC §8) both
//! publish a rotation at once and switch signing together, without a
//! restart: the state is in the store, and each wakes at the switch time.

use std::time::{Duration, Instant};

use super::support::{initial, issue, issuer_of, published, rotate};
use crate::harness::{Backend, Ca, poll};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_publish_and_switch_together() {
    let Some(ca) = Ca::new(Backend::Postgres) else {
        return;
    };
    let (one, two) = (ca.serve(), ca.serve());
    let (c1, c2) = (ca.client(&one), ca.client(&two));
    let token = ca.token("spiffe://example.org/web", &["--uses", "1000"]);
    let old = initial(&ca);

    // signs_from is the command's clock plus 3 s: at least `before` + 3 s.
    let before = Instant::now();
    let next = rotate(&ca, "3s", &[]);
    for c in [&c1, &c2] {
        poll(
            Duration::from_secs(5),
            "both replicas publish the next intermediate",
            || {
                let (old, next) = (old.clone(), next.clone());
                async move { (published(c).await == vec![old, next]).then_some(()) }
            },
        )
        .await;
    }
    assert!(
        before.elapsed() < Duration::from_secs(3),
        "published before the switch"
    );
    assert_eq!(issuer_of(&issue(&ca, &c1, &token.secret).await), old);
    assert_eq!(issuer_of(&issue(&ca, &c2, &token.secret).await), old);

    // Issue on both, alternately, until both sign with the new one; note
    // when each did first.
    let mut first_new = [None, None];
    let end = Instant::now() + Duration::from_secs(20);
    while first_new.iter().any(Option::is_none) {
        assert!(
            Instant::now() < end,
            "a replica never switched: {first_new:?}"
        );
        for (i, c) in [&c1, &c2].into_iter().enumerate() {
            let issuer = issuer_of(&issue(&ca, c, &token.secret).await);
            let at = before.elapsed();
            if issuer == next {
                first_new[i].get_or_insert(at);
            } else {
                assert_eq!(issuer, old);
                assert!(
                    first_new[i].is_none(),
                    "replica {i} went back to the old intermediate"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let [a, b] = first_new.map(Option::unwrap);
    let skew = a.abs_diff(b);
    println!("replica 1 switched at {a:?}, replica 2 at {b:?} after the rotation (skew {skew:?})");
    assert!(
        a >= Duration::from_secs(3) - Duration::from_millis(50)
            && b >= Duration::from_secs(3) - Duration::from_millis(50),
        "not before the overlap ended"
    );
    assert!(
        skew < Duration::from_millis(500),
        "the replicas switched together: {skew:?}"
    );
    for c in [&c1, &c2] {
        assert_eq!(published(c).await, vec![next.clone(), old.clone()]);
    }
}
