//! Revocation signals across handles (issue 14 item 2): a running CA learns
//! of a revocation recorded by another process within a second, for a
//! single certificate and for a token's kill switch.

use std::time::Duration;

use ward_store::RevocationWatch;

use crate::harness::{Ctx, cert, now, s, token};

/// The bound a signal must arrive within.
const BOUND: Duration = Duration::from_secs(1);

/// Swallows signals until none came for a while (SQLite signals every
/// commit, so the set-up's writes signal too).
async fn drain(watch: &mut RevocationWatch) {
    while tokio::time::timeout(Duration::from_millis(300), watch.changed())
        .await
        .is_ok()
    {}
}

/// A revocation through another handle (another replica, `ward revoke
/// --dir`) reaches a watch within [`BOUND`]; so does a token kill switch.
pub(crate) async fn another_handles_revocations_are_signalled(ctx: Ctx) {
    let ca = ctx.store().await;
    let other = ctx.store().await;
    let mut watch = ca.watch_revocations().await.unwrap();
    let t = token("tok_00000000000000w1", 0);
    other.create_token(&t).await.unwrap();
    for serial in ["c1", "c2"] {
        other
            .issue_with_token(&t.id, now(), &cert(serial))
            .await
            .unwrap();
    }
    other.record_certificate(&cert("c3")).await.unwrap();

    drain(&mut watch).await;
    other
        .revoke_certificate(&s("c3"), Some(1), now())
        .await
        .unwrap();
    let signalled = tokio::time::timeout(BOUND, watch.changed()).await;
    assert!(matches!(signalled, Ok(true)), "no signal for a revocation");

    drain(&mut watch).await;
    other.revoke_token(&t.id, true, now()).await.unwrap();
    let signalled = tokio::time::timeout(BOUND, watch.changed()).await;
    assert!(matches!(signalled, Ok(true)), "no signal for a kill switch");
    assert_eq!(ca.revoked_certificates(now()).await.unwrap().len(), 3);
}
