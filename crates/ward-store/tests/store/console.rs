//! The web console's queries: searches, the overview and login links.

use time::Duration;
use ward_store::{
    AccountDeactivation, AcmeAccount, AcmeOrder, ActiveCount, CertificateSearch, LoginUse, Origin,
};

use crate::harness::{Ctx, Kind, cert, now, s, token};

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

    let mut unknown = cert("0d05");
    unknown.origin = Origin::Offline;
    unknown.profile = None;
    store.record_certificate(&unknown).await.unwrap();
    let mut server = cert("0d06");
    server.profile = Some("server".into());
    server.token_id = Some(t.id.clone());
    store.issue_with_token(&t.id, now, &server).await.unwrap();

    let o = store.overview(now, 10).await.unwrap();
    assert_eq!(
        o.active_by_origin,
        [(Origin::Offline, 2), (Origin::Token, 2)]
    );
    let active = |origin, profile: Option<&str>, count| ActiveCount {
        origin,
        profile: profile.map(str::to_owned),
        count,
    };
    assert_eq!(
        o.active_by_profile,
        [
            active(Origin::Offline, None, 1),
            active(Origin::Offline, Some("peer"), 1),
            active(Origin::Token, Some("peer"), 1),
            active(Origin::Token, Some("server"), 1),
        ]
    );
    assert_eq!(o.revoked_unexpired, 1);
    assert_eq!(serials(&o.expiring), ["0d01", "0d02", "0d05", "0d06"]);
    assert_eq!(serials(&o.recent_revocations), ["0d04"]);
    assert_eq!(o.usable_tokens, 1);
    // The profile comes back with the certificate; a bad one is refused.
    let read = store.certificate(&s("0d06")).await.unwrap().unwrap();
    assert_eq!(read.profile.as_deref(), Some("server"));
    for bad in [String::new(), "p".repeat(65)] {
        let mut c = cert("0d07");
        c.profile = Some(bad);
        assert!(matches!(
            store.record_certificate(&c).await,
            Err(ward_store::StoreError::Invalid(_))
        ));
    }

    let bounds = [
        now - Duration::days(2),
        now - Duration::days(1),
        now - Duration::hours(1),
        now + Duration::seconds(1),
    ];
    assert_eq!(store.count_issued(&bounds).await.unwrap(), [1, 1, 4]);
    assert!(store.count_issued(&bounds[..1]).await.unwrap().is_empty());
    // More intervals than one statement counts (32), minute by minute.
    let minutes: Vec<_> = (0..=70)
        .map(|i| now - Duration::minutes(69) + Duration::minutes(i))
        .collect();
    let counts = store.count_issued(&minutes).await.unwrap();
    assert_eq!(counts.len(), 70);
    assert_eq!(counts[69], 4, "{counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 4, "{counts:?}");
    let mut early = minutes.clone();
    early[21] = now - Duration::minutes(100);
    early[22] = now + Duration::seconds(1);
    let counts = store.count_issued(&early[20..24]).await.unwrap();
    assert_eq!(counts, [0, 5, 0], "each interval counted on its own");
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

/// A real certificate (self-signed, by rcgen) with these DNS SANs.
fn with_dns(serial: &str, names: &[&str], issued_ago_s: i64) -> ward_store::NewCertificate {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    let mut c = cert(serial);
    c.der = made.cert.der().to_vec();
    c.issued_at -= Duration::seconds(issued_ago_s);
    c
}

/// DNS search: an exact name (any case, trailing dot or not) and a suffix
/// (`.example.test`, `*.example.test`) each find their certificates, newest
/// first, a certificate once; what is not a name under the suffix is not
/// found; names come from the DER of every recorded certificate.
pub(crate) async fn console_dns_search(ctx: Ctx) {
    let store = ctx.store().await;
    let t = token("tok_00000000000000d1", 0);
    store.create_token(&t).await.unwrap();
    store
        .issue_with_token(&t.id, now(), &with_dns("0e01", &["www.example.test"], 1))
        .await
        .unwrap();
    let certs = [
        with_dns("0e02", &["WWW.Example.Test", "api.example.test"], 2),
        with_dns("0e03", &["*.example.test"], 3),
        with_dns("0e04", &["example.test"], 4),
        with_dns("0e05", &["badexample.test", "www.example.test.evil"], 5),
        with_dns("0e06", &["a.b.example.test", "c.example.test"], 6),
    ];
    for c in &certs {
        store.record_certificate(c).await.unwrap();
    }
    // A serial recorded twice does not index its names twice.
    assert!(store.record_certificate(&certs[0]).await.is_err());
    // A certificate whose DER does not parse is recorded, indexed by nothing.
    store.record_certificate(&cert("0e07")).await.unwrap();

    let search = |q: CertificateSearch, limit| {
        let store = store.clone();
        async move { serials(&store.search_certificates(&q, limit).await.unwrap()) }
    };
    let name = |n: &str| CertificateSearch::DnsName(n.to_owned());
    let suffix = |n: &str| CertificateSearch::DnsSuffix(n.to_owned());
    assert_eq!(search(name("www.example.test"), 10).await, ["0e01", "0e02"]);
    assert_eq!(
        search(name("WWW.EXAMPLE.TEST."), 10).await,
        ["0e01", "0e02"]
    );
    assert_eq!(search(name("www.example.test"), 1).await, ["0e01"]);
    assert_eq!(search(name("*.example.test"), 10).await, ["0e03"]);
    assert_eq!(search(name("example.test"), 10).await, ["0e04"]);
    assert!(search(name("xample.test"), 10).await.is_empty());
    assert!(search(name("%.example.test"), 10).await.is_empty());
    assert!(search(name(""), 10).await.is_empty());
    // Under example.test, by name (reversed) then newest: the apex is not
    // under itself, badexample.test and *.test.evil are not under it.
    let mut under = search(suffix(".example.test"), 10).await;
    under.sort();
    assert_eq!(under, ["0e01", "0e02", "0e03", "0e06"]);
    let mut wild = search(suffix("*.EXAMPLE.test"), 10).await;
    wild.sort();
    assert_eq!(wild, under);
    assert_eq!(search(suffix(".b.example.test"), 10).await, ["0e06"]);
    assert!(search(suffix(".other.test"), 10).await.is_empty());
    // At most `limit` rows are read; 0e06 matching twice is listed once.
    let two = search(suffix(".example.test"), 2).await;
    assert!(two.len() <= 2 && !two.is_empty(), "{two:?}");
    let everything = search(suffix(".test"), 100).await;
    let mut sorted = everything.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), everything.len(), "{everything:?}");
    assert_eq!(sorted, ["0e01", "0e02", "0e03", "0e04", "0e05", "0e06"]);
    assert!(store.dns_index_complete().await.unwrap());
}

/// Runs SQL straight on the test's database (what a store made by an
/// earlier Ward version looks like).
async fn exec(ctx: &Ctx, statements: &[&str]) {
    use sqlx::{AssertSqlSafe, Connection};
    match ctx.kind {
        Kind::Sqlite => {
            let path = ctx.url.strip_prefix("sqlite://").unwrap();
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            for sql in statements {
                sqlx::query(AssertSqlSafe(*sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
        Kind::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&ctx.url).await.unwrap();
            for sql in statements {
                sqlx::query(AssertSqlSafe(*sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Certificates recorded before the DNS index existed are indexed by the
/// backfill, a bounded number per step, until it says done; a DER that
/// does not parse is skipped; a second store (a replica) finds it done.
pub(crate) async fn console_dns_backfill(ctx: Ctx) {
    let store = ctx.store().await;
    // A fresh store has nothing to backfill.
    assert!(store.dns_index_complete().await.unwrap());
    assert!(store.backfill_dns(10).await.unwrap());
    for (i, serial) in ["0f01", "0f02", "0f03", "0f04", "0f05"].iter().enumerate() {
        let names = [format!("h{i}.old.test"), "all.old.test".to_owned()];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        store
            .record_certificate(&with_dns(serial, &names, i as i64))
            .await
            .unwrap();
    }
    store.record_certificate(&cert("0f06")).await.unwrap();
    // As an older Ward left it: no names indexed, the backfill pending.
    exec(
        &ctx,
        &[
            "DELETE FROM cert_dns",
            "INSERT INTO cert_dns_backfill (id, after) VALUES (1, '')",
        ],
    )
    .await;
    let all = CertificateSearch::DnsName("all.old.test".into());
    assert!(
        store
            .search_certificates(&all, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.dns_index_complete().await.unwrap());
    // Two rows per step: 0f01-02, 0f03-04, 0f05-06 (full, so not yet
    // known to be the last), then an empty step that ends it.
    let mut steps = 0;
    while !store.backfill_dns(2).await.unwrap() {
        steps += 1;
        assert!(steps <= 10, "the backfill does not end");
        let found = store.search_certificates(&all, 10).await.unwrap();
        assert_eq!(found.len(), (2 * steps).min(5), "after step {steps}");
    }
    assert_eq!(steps, 3);
    assert!(store.dns_index_complete().await.unwrap());
    assert_eq!(
        serials(&store.search_certificates(&all, 10).await.unwrap()),
        ["0f01", "0f02", "0f03", "0f04", "0f05"]
    );
    let h3 = CertificateSearch::DnsName("h3.old.test".into());
    assert_eq!(
        serials(&store.search_certificates(&h3, 10).await.unwrap()),
        ["0f04"]
    );
    // Done stays done, here and on another handle.
    assert!(store.backfill_dns(2).await.unwrap());
    assert!(ctx.store().await.backfill_dns(2).await.unwrap());
}

/// The console's ACME lists: accounts newest first with their order
/// counts, orders (all or one account's) newest first; deactivation is
/// final and says why it did nothing.
pub(crate) async fn console_acme_lists(ctx: Ctx) {
    let store = ctx.store().await;
    let now = now();
    let account = |id: &str, age: i64| AcmeAccount {
        id: id.to_owned(),
        provisioner: "acme".into(),
        thumbprint: format!("thumb-{id}"),
        jwk: "{}".into(),
        status: "valid".into(),
        contact: "[\"mailto:ops@example.test\"]".into(),
        eab_key_id: None,
        created_at: now - Duration::minutes(age),
    };
    store
        .acme()
        .create_account(&account("acc1", 10))
        .await
        .unwrap();
    store
        .acme()
        .create_account(&account("acc2", 5))
        .await
        .unwrap();
    for (i, owner) in ["acc1", "acc1", "acc1", "acc2"].iter().enumerate() {
        let order = AcmeOrder {
            id: format!("ord{i}"),
            account_id: (*owner).to_owned(),
            provisioner: "acme".into(),
            status: "pending".into(),
            expires_at: now + Duration::hours(1),
            doc: "{}".into(),
            cert_serial: None,
            version: 0,
            created_at: now - Duration::minutes(10 - i as i64),
        };
        store.acme().create_order(&order).await.unwrap();
    }
    let accounts = store.acme_accounts(10).await.unwrap();
    let listed: Vec<(&str, u64)> = accounts.iter().map(|(a, n)| (a.id.as_str(), *n)).collect();
    assert_eq!(listed, [("acc2", 1), ("acc1", 3)]);
    assert_eq!(store.acme_accounts(1).await.unwrap().len(), 1);
    let ids = |orders: Vec<AcmeOrder>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.acme_orders(None, 10).await.unwrap()),
        ["ord3", "ord2", "ord1", "ord0"]
    );
    assert_eq!(
        ids(store.acme_orders(Some("acc1"), 2).await.unwrap()),
        ["ord2", "ord1"]
    );
    assert!(
        store
            .acme_orders(Some("none"), 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store.deactivate_acme_account("acc1").await.unwrap(),
        AccountDeactivation::Deactivated
    );
    assert_eq!(
        store.acme().account("acc1").await.unwrap().unwrap().status,
        "deactivated"
    );
    assert_eq!(
        store.deactivate_acme_account("acc1").await.unwrap(),
        AccountDeactivation::NotValid("deactivated".into())
    );
    assert_eq!(
        store.deactivate_acme_account("none").await.unwrap(),
        AccountDeactivation::NotFound
    );
    assert_eq!(
        store.acme().account("acc2").await.unwrap().unwrap().status,
        "valid"
    );
}
