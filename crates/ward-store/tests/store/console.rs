//! The web console's queries: searches, the overview and login links.

use time::Duration;
use ward_store::{CertificateSearch, LoginUse, Origin};

use crate::harness::{Ctx, cert, now, s, token};

fn serials(certs: &[ward_store::Certificate]) -> Vec<String> {
    certs.iter().map(|c| c.serial.to_string()).collect()
}

/// Prefix search is byte-exact and bounded; serial and token searches find
/// their certificates, newest first.
pub(crate) async fn console_searches(ctx: Ctx) {
    let store = ctx.store().await;
    let t = token("tok_00000000000000c1", 0);
    store.create_token(&t).await.unwrap();
    let ids = [
        ("0c01", "spiffe://example.org/fn/a"),
        ("0c02", "spiffe://example.org/fn/ab"),
        ("0c03", "spiffe://example.org/fn/b"),
        ("0c04", "spiffe://example.org/FN/a"),
        ("0c05", "spiffe://example.org/fn"),
    ];
    for (i, (serial, id)) in ids.iter().enumerate() {
        let mut c = cert(serial);
        c.spiffe_id = Some(id.parse().unwrap());
        c.issued_at -= Duration::seconds(i as i64);
        if i < 2 {
            store.issue_with_token(&t.id, now(), &c).await.unwrap();
        } else {
            store.record_certificate(&c).await.unwrap();
        }
    }
    let search = |q: CertificateSearch, limit| {
        let store = store.clone();
        async move { serials(&store.search_certificates(&q, limit).await.unwrap()) }
    };
    let prefix = |p: &str| CertificateSearch::SpiffePrefix(p.to_owned());
    assert_eq!(
        search(prefix("spiffe://example.org/fn/a"), 10).await,
        ["0c01", "0c02"]
    );
    assert_eq!(
        search(prefix("spiffe://example.org/fn/"), 10).await.len(),
        3
    );
    // Case matters: /FN/ is another path.
    assert_eq!(
        search(prefix("spiffe://example.org/FN"), 10).await,
        ["0c04"]
    );
    assert_eq!(search(prefix("spiffe://example.org/"), 2).await.len(), 2);
    assert!(search(prefix("spiffe://other.org/"), 10).await.is_empty());
    // LIKE wildcards mean nothing.
    assert!(
        search(prefix("spiffe://example.org/fn/%"), 10)
            .await
            .is_empty()
    );
    assert!(
        search(prefix("spiffe://example.org/fn/_"), 10)
            .await
            .is_empty()
    );

    assert_eq!(
        search(CertificateSearch::Serial(s("0C03")), 10).await,
        ["0c03"]
    );
    assert!(
        search(CertificateSearch::Serial(s("0c99")), 10)
            .await
            .is_empty()
    );
    assert_eq!(
        search(CertificateSearch::Token(t.id.clone()), 10).await,
        ["0c01", "0c02"]
    );
    assert!(
        search(CertificateSearch::Token("tok_none".into()), 10)
            .await
            .is_empty()
    );
    assert_eq!(
        search(CertificateSearch::Recent, 3).await,
        ["0c01", "0c02", "0c03"]
    );
}

/// The overview counts what is active, revoked and usable, and lists what
/// expires next; issuance is counted per interval.
pub(crate) async fn console_overview(ctx: Ctx) {
    let store = ctx.store().await;
    let now = now();
    let t = token("tok_00000000000000c2", 5);
    store.create_token(&t).await.unwrap();
    let mut used_up = token("tok_00000000000000c3", 1);
    used_up.hash = [9; 32];
    store.create_token(&used_up).await.unwrap();
    let mut a = cert("0d01");
    a.not_after = now + Duration::minutes(10);
    store.issue_with_token(&used_up.id, now, &a).await.unwrap();
    let mut b = cert("0d02");
    b.origin = Origin::Offline;
    b.issued_at = now - Duration::minutes(90);
    store.record_certificate(&b).await.unwrap();
    let mut expired = cert("0d03");
    expired.not_after = now - Duration::minutes(1);
    expired.issued_at = now - Duration::hours(30);
    store.record_certificate(&expired).await.unwrap();
    let mut revoked = cert("0d04");
    revoked.origin = Origin::Admin;
    store.record_certificate(&revoked).await.unwrap();
    store
        .revoke_certificate(&s("0d04"), Some(1), now)
        .await
        .unwrap();

    let o = store.overview(now, 10).await.unwrap();
    assert_eq!(
        o.active_by_origin,
        [(Origin::Offline, 1), (Origin::Token, 1)]
    );
    assert_eq!(o.revoked_unexpired, 1);
    assert_eq!(serials(&o.expiring), ["0d01", "0d02"]);
    assert_eq!(serials(&o.recent_revocations), ["0d04"]);
    assert_eq!(o.usable_tokens, 1);

    let bounds = [
        now - Duration::days(2),
        now - Duration::days(1),
        now - Duration::hours(1),
        now + Duration::seconds(1),
    ];
    assert_eq!(store.count_issued(&bounds).await.unwrap(), [1, 1, 2]);
    assert!(store.count_issued(&bounds[..1]).await.unwrap().is_empty());
}

/// A login link works once, before it expires; an unknown one is unknown.
pub(crate) async fn console_login_links(ctx: Ctx) {
    let store = ctx.store().await;
    let now = now();
    store
        .create_console_login(&[1; 32], now, now + Duration::minutes(5))
        .await
        .unwrap();
    store
        .create_console_login(
            &[2; 32],
            now - Duration::minutes(10),
            now - Duration::minutes(5),
        )
        .await
        .unwrap();
    let use_at = |hash: [u8; 32]| {
        let store = store.clone();
        async move { store.use_console_login(&hash, now).await.unwrap() }
    };
    assert_eq!(use_at([1; 32]).await, LoginUse::Accepted);
    assert_eq!(use_at([1; 32]).await, LoginUse::Used);
    assert_eq!(use_at([2; 32]).await, LoginUse::Expired);
    assert_eq!(use_at([3; 32]).await, LoginUse::Unknown);
    // Racing uses of one link: exactly one wins.
    store
        .create_console_login(&[4; 32], now, now + Duration::minutes(5))
        .await
        .unwrap();
    let racers: Vec<_> = (0..8).map(|_| tokio::spawn(use_at([4; 32]))).collect();
    let mut accepted = 0;
    for r in racers {
        if r.await.unwrap() == LoginUse::Accepted {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);
}
