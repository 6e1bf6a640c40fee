//! The ACME additions of migration 0011: reusable authorizations, one live
//! replacement per certificate, EAB key revocation, and the bounded sweep.

use time::Duration;
use ward_store::{AcmeAccount, AcmeEabKey, AcmeOrder, StoreError};

use crate::harness::{Ctx, cert, now, s};

fn account(id: &str, eab: Option<&str>) -> AcmeAccount {
    AcmeAccount {
        id: id.into(),
        provisioner: "web".into(),
        thumbprint: format!("tp-{id}"),
        jwk: "{}".into(),
        status: "valid".into(),
        contact: "[]".into(),
        eab_key_id: eab.map(str::to_owned),
        created_at: now(),
    }
}

fn order(id: &str, account: &str, expires_in: Duration, serial: Option<&str>) -> AcmeOrder {
    AcmeOrder {
        id: id.into(),
        account_id: account.into(),
        provisioner: "web".into(),
        status: if serial.is_some() { "valid" } else { "pending" }.into(),
        expires_at: now() + expires_in,
        doc: "{}".into(),
        cert_serial: serial.map(str::to_owned),
        version: 1,
        created_at: now(),
    }
}

/// Reusable authorizations: found until they expire, replaced by a newer
/// one, forgotten on request, per account and identifier.
pub(crate) async fn acme_valid_authz_round_trip(ctx: Ctx) {
    let store = ctx.store().await;
    let acme = store.acme();
    acme.create_account(&account("a1", None)).await.unwrap();
    acme.create_account(&account("a2", None)).await.unwrap();
    let t = now();
    acme.put_valid_authz("a1", "dns:x.test", "one", t + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        acme.valid_authz("a1", "dns:x.test", t)
            .await
            .unwrap()
            .as_deref(),
        Some("one")
    );
    assert_eq!(acme.valid_authz("a2", "dns:x.test", t).await.unwrap(), None);
    assert_eq!(
        acme.valid_authz("a1", "dns:*.x.test", t).await.unwrap(),
        None
    );
    assert_eq!(
        acme.valid_authz("a1", "dns:x.test", t + Duration::hours(2))
            .await
            .unwrap(),
        None,
        "an expired authorization is not reused"
    );
    acme.put_valid_authz("a1", "dns:x.test", "two", t + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        acme.valid_authz("a1", "dns:x.test", t)
            .await
            .unwrap()
            .as_deref(),
        Some("two")
    );
    acme.drop_valid_authz("a1", "dns:x.test").await.unwrap();
    assert_eq!(acme.valid_authz("a1", "dns:x.test", t).await.unwrap(), None);
}

/// One replacement per certificate: a second insert conflicts and stores
/// nothing; taking over from a named dead replacement works once.
pub(crate) async fn acme_one_replacement_per_certificate(ctx: Ctx) {
    let store = ctx.store().await;
    let acme = store.acme();
    acme.create_account(&account("a1", None)).await.unwrap();
    let hour = Duration::hours(1);
    acme.create_replacing_order(&order("o1", "a1", hour, None), "0a01", None)
        .await
        .unwrap();
    assert_eq!(
        acme.replacement("0a01").await.unwrap().as_deref(),
        Some("o1")
    );
    let second = acme
        .create_replacing_order(&order("o2", "a1", hour, None), "0a01", None)
        .await;
    assert!(matches!(second, Err(StoreError::Conflict(_))), "{second:?}");
    assert!(acme.order("o2").await.unwrap().is_none(), "o2 was stored");
    // o1 died: o3 takes over, naming it; a racing o4 naming o1 loses.
    acme.create_replacing_order(&order("o3", "a1", hour, None), "0a01", Some("o1"))
        .await
        .unwrap();
    let late = acme
        .create_replacing_order(&order("o4", "a1", hour, None), "0a01", Some("o1"))
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    assert!(acme.order("o4").await.unwrap().is_none(), "o4 was stored");
    assert_eq!(
        acme.replacement("0a01").await.unwrap().as_deref(),
        Some("o3")
    );
}

/// A revoked EAB key binds no account, and revoking a bound key revokes
/// its account; listing never needs the HMAC key to be shown.
pub(crate) async fn acme_eab_revocation(ctx: Ctx) {
    let store = ctx.store().await;
    let acme = store.acme();
    for id in ["k1", "k2"] {
        acme.create_eab_key(&AcmeEabKey {
            id: id.into(),
            provisioner: "web".into(),
            hmac_key: vec![7; 32],
            created_at: now(),
            account_id: None,
            revoked_at: None,
        })
        .await
        .unwrap();
    }
    acme.create_account(&account("a1", Some("k1")))
        .await
        .unwrap();
    assert!(acme.revoke_eab_key("k1", now()).await.unwrap());
    assert!(!acme.revoke_eab_key("k1", now()).await.unwrap(), "twice");
    assert!(!acme.revoke_eab_key("nope", now()).await.unwrap());
    assert_eq!(acme.account("a1").await.unwrap().unwrap().status, "revoked");
    assert!(acme.revoke_eab_key("k2", now()).await.unwrap());
    let bound = acme.create_account(&account("a2", Some("k2"))).await;
    assert!(matches!(bound, Err(StoreError::Conflict(_))), "{bound:?}");
    assert!(acme.account("a2").await.unwrap().is_none());
    let keys = acme.eab_keys(Some("web"), 10).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.revoked_at.is_some()));
    assert_eq!(acme.eab_keys(Some("other"), 10).await.unwrap().len(), 0);
    assert_eq!(acme.eab_keys(None, 1).await.unwrap().len(), 1);
}

/// The sweep deletes what expired, at most `limit` rows of a kind per
/// call, and keeps orders whose certificate is still valid.
pub(crate) async fn acme_prune_is_bounded_and_keeps_live_state(ctx: Ctx) {
    let store = ctx.store().await;
    let acme = store.acme();
    let t = now();
    acme.create_account(&account("a1", None)).await.unwrap();
    for i in 0..5 {
        assert!(
            acme.use_nonce(&format!("old{i}"), t + Duration::seconds(1), t)
                .await
                .unwrap()
        );
        acme.create_order(&order(
            &format!("dead{i}"),
            "a1",
            Duration::seconds(1),
            None,
        ))
        .await
        .unwrap();
    }
    assert!(
        acme.use_nonce("fresh", t + Duration::hours(2), t)
            .await
            .unwrap()
    );
    acme.create_order(&order("live", "a1", Duration::hours(2), None))
        .await
        .unwrap();
    acme.put_valid_authz("a1", "dns:x.test", "doc", t + Duration::seconds(1))
        .await
        .unwrap();
    // A finished order whose certificate is valid for an hour.
    store.record_certificate(&cert("0b01")).await.unwrap();
    let serial = s("0b01").to_string();
    acme.create_replacing_order(
        &order("issued", "a1", Duration::seconds(1), Some(&serial)),
        "0c01",
        None,
    )
    .await
    .unwrap();
    let later = t + Duration::minutes(1);
    // limit 2: at most 2 nonces, 2 orders, 1 authorization this round.
    assert_eq!(acme.prune(later, 2).await.unwrap(), 5);
    let mut total = 5;
    loop {
        let n = acme.prune(later, 2).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 11, "5 nonces, 5 dead orders, 1 authorization");
    // The used nonce that has not expired is still refused.
    assert!(
        !acme
            .use_nonce("fresh", t + Duration::hours(2), later)
            .await
            .unwrap()
    );
    assert!(acme.order("live").await.unwrap().is_some());
    assert!(
        acme.order("issued").await.unwrap().is_some(),
        "its certificate is valid"
    );
    for i in 0..5 {
        assert!(acme.order(&format!("dead{i}")).await.unwrap().is_none());
    }
    // Once the certificate expires its order goes, then the replacement.
    let after = t + Duration::hours(3);
    let mut gone = 0;
    loop {
        let n = acme.prune(after, 2).await.unwrap();
        if n == 0 {
            break;
        }
        gone += n;
    }
    assert_eq!(
        gone, 4,
        "the used nonce, the live order, the issued one, its replacement"
    );
    assert!(acme.order("issued").await.unwrap().is_none());
    assert_eq!(acme.replacement("0c01").await.unwrap(), None);
}

/// Nonces: two handles on one database (replicas) get the same key, the
/// first to ask creates it; a nonce used concurrently through both is
/// accepted exactly once, and stays refused until its record expires.
pub(crate) async fn acme_nonces_are_used_once_across_replicas(ctx: Ctx) {
    let replicas = [ctx.store().await, ctx.store().await];
    let t = now();
    let first = replicas[0].acme().nonce_key(&[1; 32], t).await.unwrap();
    let second = replicas[1].acme().nonce_key(&[2; 32], t).await.unwrap();
    assert_eq!(first, vec![1; 32]);
    assert_eq!(
        second, first,
        "the replica that came second reads the first key"
    );
    let expires = t + Duration::hours(1);
    let mut tasks = Vec::new();
    for round in 0..20 {
        for i in 0..6 {
            let store = replicas[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let nonce = format!("n{round}");
                (
                    round,
                    store.acme().use_nonce(&nonce, expires, t).await.unwrap(),
                )
            }));
        }
    }
    let mut accepted = [0; 20];
    for task in tasks {
        let (round, fresh) = task.await.unwrap();
        accepted[round] += usize::from(fresh);
    }
    assert_eq!(accepted, [1; 20], "each nonce accepted once");
    let later = t + Duration::minutes(30);
    assert!(
        !replicas[1]
            .acme()
            .use_nonce("n0", expires, later)
            .await
            .unwrap()
    );
}
