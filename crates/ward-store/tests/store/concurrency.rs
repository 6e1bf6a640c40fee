//! Concurrent contract: no double spend, no lost or duplicated rows, and
//! strictly increasing CRL numbers, within one handle and across "replicas"
//! (separate `connect` handles to one database). Tasks start together on a
//! barrier; nothing waits on a timer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Barrier;
use ward_store::{RevokeTokenOutcome, Store, StoreError};

use crate::harness::{Ctx, cert, now, token};

/// Runs `issue_with_token` for each serial concurrently, spreading calls over
/// `stores` round-robin; returns each call's result.
async fn issue_all(
    stores: &[Arc<dyn Store>],
    token_id: &str,
    serials: Vec<String>,
) -> Vec<Result<(), StoreError>> {
    let barrier = Arc::new(Barrier::new(serials.len()));
    let tasks: Vec<_> = serials
        .into_iter()
        .enumerate()
        .map(|(i, serial)| {
            let store = stores[i % stores.len()].clone();
            let (barrier, token_id) = (barrier.clone(), token_id.to_owned());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .issue_with_token(&token_id, now(), &cert(&serial))
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// Counts successes and `TokenExhausted`; panics on any other error.
fn tally(results: &[Result<(), StoreError>]) -> (usize, usize) {
    let mut counts = (0, 0);
    for r in results {
        match r {
            Ok(()) => counts.0 += 1,
            Err(StoreError::TokenExhausted) => counts.1 += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    counts
}

/// 50 callers race for a 1-use token: exactly one wins, the rest see TokenExhausted.
pub(crate) async fn one_use_token_under_50_concurrent_calls(ctx: Ctx) {
    let store = ctx.store().await;
    let t = token("tok_0000000000000050", 1);
    store.create_token(&t).await.unwrap();
    let serials = (0..50).map(|i| format!("50{i:04x}")).collect();
    let results = issue_all(std::slice::from_ref(&store), &t.id, serials).await;
    assert_eq!(tally(&results), (1, 49));
    assert_eq!(store.count_certificates().await.unwrap(), 1);
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 1);
}

/// 1,000 callers on an unlimited token through a 10-connection pool: every one is recorded.
pub(crate) async fn unlimited_token_under_1000_concurrent_calls(ctx: Ctx) {
    let store = ctx.store_with_pool(10).await;
    let t = token("tok_0000000000001000", 0);
    store.create_token(&t).await.unwrap();
    let serials: Vec<_> = (0..1000).map(|i| format!("1000{i:04x}")).collect();
    let started = Instant::now();
    let results = issue_all(std::slice::from_ref(&store), &t.id, serials).await;
    let elapsed = started.elapsed();
    println!(
        "{:?}: 1,000 concurrent issue_with_token calls took {elapsed:?}",
        ctx.kind
    );
    assert_eq!(tally(&results), (1000, 0));
    assert_eq!(store.count_certificates().await.unwrap(), 1000);
    assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 1000);
    let listed = store.list_certificates(2000, 0).await.unwrap();
    let distinct: HashSet<_> = listed.iter().map(|c| c.serial.clone()).collect();
    assert_eq!(distinct.len(), 1000);
    assert!(
        listed
            .iter()
            .all(|c| c.token_id.as_deref() == Some(t.id.as_str()))
    );
}

/// Two handles (two CA replicas) race for a 10-use token: exactly 10 certificates exist.
pub(crate) async fn two_replicas_never_double_spend(ctx: Ctx) {
    let replicas = [ctx.store().await, ctx.store().await];
    let t = token("tok_00000000000000aa", 10);
    replicas[0].create_token(&t).await.unwrap();
    let serials = (0..60).map(|i| format!("aa{i:04x}")).collect();
    let results = issue_all(&replicas, &t.id, serials).await;
    assert_eq!(tally(&results), (10, 50));
    for store in &replicas {
        assert_eq!(store.count_certificates().await.unwrap(), 10);
        assert_eq!(store.token(&t.id).await.unwrap().unwrap().uses, 10);
    }
}

/// CRL numbers taken concurrently from two handles never repeat, and each
/// caller sees them strictly increase; the next one is above them all.
pub(crate) async fn crl_numbers_unique_across_replicas(ctx: Ctx) {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let replicas = [ctx.store().await, ctx.store().await];
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (store, barrier) = (replicas[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut taken = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    taken.push(store.next_crl_number().await.unwrap());
                }
                taken
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let taken = task.await.unwrap();
        assert!(
            taken.windows(2).all(|w| w[0] < w[1]),
            "not increasing: {taken:?}"
        );
        all.extend(taken);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), TASKS * EACH, "a CRL number was handed out twice");
    let next = replicas[1].next_crl_number().await.unwrap();
    assert!(next > *all.last().unwrap());
}

/// A kill switch racing with issuance: no certificate from the token escapes
/// revocation, and every call either issued or saw TokenRevoked.
pub(crate) async fn revocation_races_issuance_cleanly(ctx: Ctx) {
    let replicas = [ctx.store().await, ctx.store().await];
    let t = token("tok_00000000000000bb", 0);
    replicas[0].create_token(&t).await.unwrap();
    let serials: Vec<_> = (0..100).map(|i| format!("bb{i:04x}")).collect();
    let issuing = {
        let (replicas, id) = (replicas.clone(), t.id.clone());
        tokio::spawn(async move { issue_all(&replicas, &id, serials).await })
    };
    let revoked = replicas[1].revoke_token(&t.id, true, now()).await.unwrap();
    let results = issuing.await.unwrap();
    let issued = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        assert!(matches!(r, Ok(()) | Err(StoreError::TokenRevoked)), "{r:?}");
    }
    let RevokeTokenOutcome::Revoked {
        certificates_revoked,
    } = revoked
    else {
        panic!("token not found");
    };
    assert!(certificates_revoked as usize <= issued);
    let store = &replicas[0];
    assert_eq!(store.count_certificates().await.unwrap() as usize, issued);
    assert_eq!(
        store.token(&t.id).await.unwrap().unwrap().uses as usize,
        issued
    );
    let certs = store.list_certificates(1000, 0).await.unwrap();
    let live: Vec<_> = certs.iter().filter(|c| c.revoked_at.is_none()).collect();
    assert!(
        live.is_empty(),
        "{} certificates escaped the kill switch",
        live.len()
    );
}
