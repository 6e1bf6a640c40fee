//! Single-caller contract: what each operation stores, returns and refuses.

use time::Duration;
use ward_store::{
    REASON_PRIVILEGE_WITHDRAWN, RevokeOutcome, RevokeTokenOutcome, RevokedCertificate, StoreError,
};

use crate::harness::{Ctx, cert, now, s, token};

/// Tokens round-trip field for field; duplicates and bad values are refused.
pub(crate) async fn tokens_round_trip(ctx: Ctx) {
    let store = ctx.store().await;
    let t = token("tok_00000000000000a1", 3);
    store.create_token(&t).await.unwrap();
    let got = store.token(&t.id).await.unwrap().unwrap();
    assert_eq!(got.id, t.id);
    assert_eq!(got.hash, t.hash);
    assert_eq!(got.spiffe_id, t.spiffe_id);
    assert_eq!(got.dns_names, t.dns_names);
    assert_eq!(got.profile, t.profile);
    assert_eq!(got.cert_ttl_secs, t.cert_ttl_secs);
    assert_eq!(got.expires_at, t.expires_at);
    assert_eq!(got.expires_at.offset(), time::UtcOffset::UTC);
    assert_eq!((got.max_uses, got.uses), (3, 0));
    assert_eq!(got.allowed_cidrs, t.allowed_cidrs);
    assert_eq!(got.created_at, t.created_at);
    assert_eq!((got.revoked_at, got.revoked_with_certs), (None, false));
    assert_eq!(
        store.token_by_hash(&t.hash).await.unwrap(),
        Some(got.clone())
    );
    assert_eq!(store.token_by_hash(&[7; 32]).await.unwrap(), None);
    assert_eq!(store.token("tok_missing").await.unwrap(), None);

    let same_id = token(&t.id, 1);
    let mut same_hash = token("tok_00000000000000a2", 1);
    same_hash.hash = t.hash;
    for dup in [same_id, same_hash] {
        let err = store.create_token(&dup).await.unwrap_err();
        assert!(matches!(err, StoreError::DuplicateToken), "{err}");
    }
    // An unknown profile or a malformed SPIFFE ID cannot reach the store:
    // `NewToken` holds them as `Profile` and `SpiffeId`.

    let mut older = token("tok_00000000000000a0", 0);
    older.created_at -= Duration::minutes(1);
    older.dns_names.clear();
    store.create_token(&older).await.unwrap();
    let ids: Vec<_> = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(ids, ["tok_00000000000000a1", "tok_00000000000000a0"]);
}

/// A successful issue takes exactly one use and records the certificate under its token.
pub(crate) async fn issue_consumes_one_use_and_binds_certificate(ctx: Ctx) {
    let store = ctx.store().await;
    let t = token("tok_00000000000000b1", 2);
    store.create_token(&t).await.unwrap();
    let c = cert("0A1B2C");
    store.issue_with_token(&t.id, now(), &c).await.unwrap();
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 1);
    let got = store.certificate(&s("0a1b2c")).await.unwrap().unwrap();
    assert_eq!(
        store.certificate(&s("0A1B2C")).await.unwrap().as_ref(),
        Some(&got)
    );
    assert_eq!(got.serial.to_string(), "0a1b2c");
    assert_eq!(got.token_id.as_deref(), Some(t.id.as_str()));
    assert_eq!((got.not_before, got.not_after), (c.not_before, c.not_after));
    assert_eq!((&got.der, &got.fingerprint), (&c.der, &c.fingerprint));
    assert_eq!((got.issued_at, &got.renewed_from), (c.issued_at, &None));
    assert_eq!((got.revoked_at, got.revocation_reason), (None, None));

    let mut foreign = cert("0a1b2d");
    foreign.token_id = Some("tok_other".into());
    let err = store
        .issue_with_token(&t.id, now(), &foreign)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 1);
}

/// Refused or failed issues leave the token's uses and the certificates untouched.
pub(crate) async fn failed_issue_changes_nothing(ctx: Ctx) {
    let store = ctx.store().await;
    let now = now();
    let live = token("tok_00000000000000c1", 5);
    let mut expired = token("tok_00000000000000c2", 5);
    expired.expires_at = now; // expiry is exclusive: expired at that very instant
    let revoked = token("tok_00000000000000c3", 5);
    let exhausted = token("tok_00000000000000c4", 1);
    for t in [&live, &expired, &revoked, &exhausted] {
        store.create_token(t).await.unwrap();
    }
    store.revoke_token(&revoked.id, false, now).await.unwrap();
    store
        .issue_with_token(&live.id, now, &cert("c1"))
        .await
        .unwrap();
    store
        .issue_with_token(&exhausted.id, now, &cert("c4"))
        .await
        .unwrap();

    let cases = [
        ("tok_missing", cert("d0"), "not found"),
        (expired.id.as_str(), cert("d1"), "expired"),
        (revoked.id.as_str(), cert("d2"), "revoked"),
        (exhausted.id.as_str(), cert("d3"), "exhausted"),
        (live.id.as_str(), cert("C1"), "duplicate"),
    ];
    for (id, c, why) in cases {
        let err = store.issue_with_token(id, now, &c).await.unwrap_err();
        let ok = match why {
            "not found" => matches!(err, StoreError::TokenNotFound),
            "expired" => matches!(err, StoreError::TokenExpired),
            "revoked" => matches!(err, StoreError::TokenRevoked),
            "exhausted" => matches!(err, StoreError::TokenExhausted),
            _ => matches!(err, StoreError::DuplicateSerial),
        };
        assert!(ok, "{why}: got {err:?}");
    }
    assert_eq!(store.count_certificates().await.unwrap(), 2);
    let uses = |id: String| {
        let store = store.clone();
        async move { store.token(&id).await.unwrap().unwrap().uses }
    };
    assert_eq!(
        uses(live.id.clone()).await,
        1,
        "duplicate serial gave the use back"
    );
    assert_eq!(uses(expired.id.clone()).await, 0);
    assert_eq!(uses(revoked.id.clone()).await, 0);
    assert_eq!(uses(exhausted.id.clone()).await, 1);
    assert_eq!(
        store.certificate(&s("c1")).await.unwrap().unwrap().der,
        b"c1"
    );
    // The live token still works after the failed duplicate.
    store
        .issue_with_token(&live.id, now, &cert("c5"))
        .await
        .unwrap();
    assert_eq!(uses(live.id.clone()).await, 2);
}

/// Renewals are recorded without a token use and never overwrite a serial.
pub(crate) async fn record_certificate_never_overwrites(ctx: Ctx) {
    let store = ctx.store().await;
    store.record_certificate(&cert("e1")).await.unwrap();
    let mut renewal = cert("e2");
    renewal.renewed_from = Some(s("E1"));
    store.record_certificate(&renewal).await.unwrap();
    assert_eq!(
        store
            .certificate(&s("e2"))
            .await
            .unwrap()
            .unwrap()
            .renewed_from
            .clone(),
        Some(s("e1"))
    );
    let mut clash = cert("E1");
    clash.der = b"other".to_vec();
    let err = store.record_certificate(&clash).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateSerial), "{err}");
    assert_eq!(
        store.certificate(&s("e1")).await.unwrap().unwrap().der,
        b"e1"
    );

    let mut unknown_token = cert("e3");
    unknown_token.token_id = Some("tok_missing".into());
    let err = store.record_certificate(&unknown_token).await.unwrap_err();
    assert!(matches!(err, StoreError::TokenNotFound), "{err}");
    // An empty or non-hex serial cannot reach the store: `NewCertificate`
    // holds a `Serial`.
    assert_eq!(store.count_certificates().await.unwrap(), 2);
}

/// Revoking a certificate twice keeps the first time and reason.
pub(crate) async fn revoke_certificate_is_idempotent(ctx: Ctx) {
    let store = ctx.store().await;
    store.record_certificate(&cert("f1")).await.unwrap();
    let first = now();
    let later = first + Duration::seconds(5);
    assert_eq!(
        store
            .revoke_certificate(&s("f2"), Some(1), first)
            .await
            .unwrap(),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        store
            .revoke_certificate(&s("F1"), Some(1), first)
            .await
            .unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        store
            .revoke_certificate(&s("f1"), Some(4), later)
            .await
            .unwrap(),
        RevokeOutcome::AlreadyRevoked
    );
    let got = store.certificate(&s("f1")).await.unwrap().unwrap();
    assert_eq!(
        (got.revoked_at, got.revocation_reason),
        (Some(first), Some(1))
    );
    for bad in [7, 11, -1] {
        let err = store
            .revoke_certificate(&s("f1"), Some(bad), later)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{bad}: {err}");
    }
}

/// The kill switch revokes the token's live certificates once, with privilegeWithdrawn.
pub(crate) async fn revoke_token_kills_its_certificates(ctx: Ctx) {
    let store = ctx.store().await;
    let now = now();
    let t = token("tok_00000000000000g1", 0);
    let bystander = token("tok_00000000000000g2", 0);
    store.create_token(&t).await.unwrap();
    store.create_token(&bystander).await.unwrap();
    for serial in ["91", "92", "93"] {
        store
            .issue_with_token(&t.id, now, &cert(serial))
            .await
            .unwrap();
    }
    let mut expired = cert("94");
    expired.not_after = now - Duration::seconds(1);
    store.issue_with_token(&t.id, now, &expired).await.unwrap();
    store
        .issue_with_token(&bystander.id, now, &cert("95"))
        .await
        .unwrap();
    store
        .revoke_certificate(&s("93"), Some(1), now)
        .await
        .unwrap();

    let missing = store.revoke_token("tok_missing", true, now).await.unwrap();
    assert_eq!(missing, RevokeTokenOutcome::NotFound);
    // Without certificates first, then the kill switch on the already revoked token.
    let plain = store.revoke_token(&t.id, false, now).await.unwrap();
    assert_eq!(
        plain,
        RevokeTokenOutcome::Revoked {
            certificates_revoked: 0
        }
    );
    let later = now + Duration::seconds(1);
    let kill = store.revoke_token(&t.id, true, later).await.unwrap();
    assert_eq!(
        kill,
        RevokeTokenOutcome::Revoked {
            certificates_revoked: 2
        }
    );
    let again = store
        .revoke_token(&t.id, true, later + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        again,
        RevokeTokenOutcome::Revoked {
            certificates_revoked: 0
        }
    );

    let got = store.token(&t.id).await.unwrap().unwrap();
    assert_eq!((got.revoked_at, got.revoked_with_certs), (Some(now), true));
    for serial in ["91", "92"] {
        let c = store.certificate(&s(serial)).await.unwrap().unwrap();
        assert_eq!(
            (c.revoked_at, c.revocation_reason),
            (Some(later), Some(REASON_PRIVILEGE_WITHDRAWN))
        );
    }
    assert_eq!(
        store
            .certificate(&s("93"))
            .await
            .unwrap()
            .unwrap()
            .revocation_reason,
        Some(1)
    );
    assert_eq!(
        store
            .certificate(&s("94"))
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    assert_eq!(
        store
            .certificate(&s("95"))
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    let err = store
        .issue_with_token(&t.id, later, &cert("96"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TokenRevoked), "{err}");
}

/// The CRL content is every revoked certificate that has not expired yet.
pub(crate) async fn crl_lists_only_unexpired_revocations(ctx: Ctx) {
    let store = ctx.store().await;
    let now = now();
    let mut short = cert("a1");
    short.not_after = now + Duration::minutes(1);
    store.record_certificate(&short).await.unwrap();
    store.record_certificate(&cert("a2")).await.unwrap();
    store.record_certificate(&cert("a3")).await.unwrap();
    store.revoke_certificate(&s("a1"), None, now).await.unwrap();
    store
        .revoke_certificate(&s("a2"), Some(1), now + Duration::seconds(1))
        .await
        .unwrap();
    let crl = store.revoked_certificates(now).await.unwrap();
    let expect = |serial: &str, at, reason| RevokedCertificate {
        serial: s(serial),
        revoked_at: at,
        reason,
    };
    assert_eq!(
        crl,
        [
            expect("a1", now, None),
            expect("a2", now + Duration::seconds(1), Some(1))
        ]
    );
    let after_a1_expired = store
        .revoked_certificates(now + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(
        after_a1_expired,
        [expect("a2", now + Duration::seconds(1), Some(1))]
    );
}

/// Listing pages newest first; counting counts everything.
pub(crate) async fn list_and_count_certificates(ctx: Ctx) {
    let store = ctx.store().await;
    assert_eq!(store.count_certificates().await.unwrap(), 0);
    let base = now();
    for i in 0..5i64 {
        // Serials 01..=05: a serial is positive.
        let mut c = cert(&format!("{:02x}", i + 1));
        c.issued_at = base + Duration::seconds(i);
        store.record_certificate(&c).await.unwrap();
    }
    assert_eq!(store.count_certificates().await.unwrap(), 5);
    let page = |limit, offset| {
        let store = store.clone();
        async move {
            let list = store.list_certificates(limit, offset).await.unwrap();
            let serials = list.into_iter().map(|c| c.serial.to_string());
            serials.collect::<Vec<_>>()
        }
    };
    assert_eq!(page(2, 0).await, ["05", "04"]);
    assert_eq!(page(2, 2).await, ["03", "02"]);
    assert_eq!(page(10, 4).await, ["01"]);
    assert!(page(10, 5).await.is_empty());
}

/// A second `connect` on the same database sees everything and migrates nothing twice.
pub(crate) async fn reopening_keeps_data_and_reruns_migrations(ctx: Ctx) {
    let store = ctx.store().await;
    store
        .create_token(&token("tok_00000000000000i1", 1))
        .await
        .unwrap();
    store
        .issue_with_token("tok_00000000000000i1", now(), &cert("b1"))
        .await
        .unwrap();
    store.close().await;
    drop(store);
    let reopened = ctx.store().await;
    assert!(reopened.certificate(&s("b1")).await.unwrap().is_some());
    assert_eq!(
        reopened
            .token("tok_00000000000000i1")
            .await
            .unwrap()
            .unwrap()
            .uses,
        1
    );
}

/// Readiness works, the backend is reported, CRL numbers increase strictly,
/// never fall below the clock (in µs since the epoch) and go on increasing
/// after a reopen.
pub(crate) async fn ping_and_crl_numbers_follow_the_clock(ctx: Ctx) {
    let store = ctx.store().await;
    store.ping().await.unwrap();
    let expected = match ctx.kind {
        crate::harness::Kind::Sqlite => ward_store::Backend::Sqlite,
        crate::harness::Kind::Postgres => ward_store::Backend::Postgres,
    };
    assert_eq!(store.backend(), expected);
    let floor =
        u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap();
    let numbers = [
        store.next_crl_number().await.unwrap(),
        store.next_crl_number().await.unwrap(),
        store.next_crl_number().await.unwrap(),
    ];
    assert!(numbers[0] >= floor, "{numbers:?} < {floor}");
    assert!(
        numbers[0] < numbers[1] && numbers[1] < numbers[2],
        "{numbers:?}"
    );
    store.close().await;
    drop(store);
    let reopened = ctx.store().await;
    assert!(reopened.next_crl_number().await.unwrap() > numbers[2]);
}

/// Every origin and an empty SPIFFE ID round-trip; a token's bound common
/// name round-trips, and an empty one is refused.
pub(crate) async fn origins_and_common_names_round_trip(ctx: Ctx) {
    let store = ctx.store().await;
    let mut t = token("tok_00000000000000c1", 0);
    t.common_name = Some("app_user".into());
    store.create_token(&t).await.unwrap();
    assert_eq!(
        store
            .token(&t.id)
            .await
            .unwrap()
            .unwrap()
            .common_name
            .as_deref(),
        Some("app_user")
    );
    let mut empty = token("tok_00000000000000c2", 0);
    empty.common_name = Some(String::new());
    assert!(matches!(
        store.create_token(&empty).await,
        Err(StoreError::Invalid(_))
    ));
    for (i, origin) in ward_store::Origin::ALL.into_iter().enumerate() {
        let mut c = cert(&format!("c{i}"));
        c.origin = origin;
        if origin == ward_store::Origin::OcspResponder {
            c.spiffe_id = None;
        }
        if origin == ward_store::Origin::Token {
            store.issue_with_token(&t.id, now(), &c).await.unwrap();
        } else {
            store.record_certificate(&c).await.unwrap();
        }
        let got = store.certificate(&c.serial).await.unwrap().unwrap();
        assert_eq!(got.origin, origin);
        assert_eq!(got.spiffe_id, c.spiffe_id);
    }
    let listed = store.list_certificates(100, 0).await.unwrap();
    assert_eq!(listed.len(), ward_store::Origin::ALL.len());
}

/// Opening without `create` refuses a database with no Ward store, and
/// creates nothing; once created, it opens.
pub(crate) async fn open_existing_refuses_a_missing_store(ctx: Ctx) {
    let err = match ward_store::open_existing(&ctx.url).await {
        Err(e) => e,
        Ok(_) => panic!("opened a store that does not exist"),
    };
    assert!(matches!(err, StoreError::Missing(_)), "{err}");
    assert!(err.to_string().contains("store"), "{err}");
    // Still nothing there: a second attempt fails the same way.
    assert!(matches!(
        ward_store::open_existing(&ctx.url).await,
        Err(StoreError::Missing(_))
    ));
    let created = ctx.store().await;
    created
        .create_token(&token("tok_00000000000000d1", 1))
        .await
        .unwrap();
    created.close().await;
    drop(created);
    let opened = ward_store::open_existing(&ctx.url).await.unwrap();
    assert!(
        opened
            .token("tok_00000000000000d1")
            .await
            .unwrap()
            .is_some()
    );
}
