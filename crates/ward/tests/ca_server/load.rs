//! Concurrency and durability: one-use tokens under a race, a thousand
//! concurrent signings, two CA processes on one database, SIGKILL in the
//! middle of a burst, and the rate limits.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::{Barrier, Notify};

use crate::harness::{
    Backend, Ca, Req, Resp, burst, canon_serial, count, distinct, serials_of_token, sign_req,
};

on_both_backends!(
    one_use_token_under_50_concurrent_requests_issues_once,
    unlimited_token_under_1000_concurrent_signs,
    two_ca_processes_share_one_database,
    sigkill_mid_burst_loses_no_returned_certificate,
    rate_limits_answer_429,
);

/// Limits high enough that load tests measure the CA, not the limiter.
const NO_LIMITS: (u32, u32) = (1_000_000, 1_000_000);

async fn one_use_token_under_50_concurrent_requests_issues_once(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = ca.serve();
    let client = ca.client(&server);
    let admin = ca.admin(&server);
    let token = ca.token("spiffe://example.org/race", &[]);
    let csr = ca.csr(&[]);
    let start = count(&admin).await;

    // 50 connections, all ready before any request is sent.
    let barrier = Arc::new(Barrier::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (client, barrier, req) = (
            client.clone(),
            barrier.clone(),
            sign_req(&token.secret, &csr.pem),
        );
        tasks.spawn(async move {
            let mut conn = client.connect().await.unwrap();
            barrier.wait().await;
            conn.send(&req).await.unwrap()
        });
    }
    let mut answers: Vec<Resp> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        answers.push(r.unwrap());
    }
    let issued: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(issued.len(), 1, "exactly one certificate");
    for r in answers.iter().filter(|r| r.status != 201) {
        r.expect_error(401, "token_used");
    }
    assert_eq!(count(&admin).await, start + 1, "exactly one row");
    let recorded = serials_of_token(&admin, &token.id).await;
    assert_eq!(
        recorded.iter().map(|s| canon_serial(s)).collect::<Vec<_>>(),
        [canon_serial(issued[0].json()["serial"].as_str().unwrap())]
    );
    assert_eq!(ca.token_info(&token.id)["uses"], 1);
}

async fn unlimited_token_under_1000_concurrent_signs(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    ca.set_limits(NO_LIMITS, NO_LIMITS);
    let server = ca.serve();
    let client = ca.client(&server);
    let admin = ca.admin(&server);
    let token = ca.token("spiffe://example.org/fleet", &["--uses", "0"]);
    let csr = ca.csr(&[]);
    let start = count(&admin).await;

    let run = burst(
        &client,
        &sign_req(&token.secret, &csr.pem),
        1000,
        64,
        Arc::new(|_: &Resp| {}),
    )
    .await;
    println!(
        "{backend:?}: 1,000 × /v1/sign at 64 in flight: {}",
        run.summary()
    );
    let serials: Vec<String> = run
        .results
        .iter()
        .map(|r| {
            let r = r.as_ref().unwrap();
            r.expect(201)["serial"].as_str().unwrap().to_owned()
        })
        .collect();
    let returned = distinct(&serials);
    assert_eq!(returned.len(), 1000);
    assert_eq!(count(&admin).await, start + 1000, "1,000 new rows");
    let recorded: HashSet<String> = serials_of_token(&admin, &token.id)
        .await
        .iter()
        .map(|s| canon_serial(s))
        .collect();
    assert_eq!(recorded, returned, "the rows are the certificates returned");
    assert_eq!(ca.token_info(&token.id)["uses"], 1000);
}

async fn two_ca_processes_share_one_database(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    ca.set_limits(NO_LIMITS, NO_LIMITS);
    let (one, two) = (ca.serve(), ca.serve());
    let admin = ca.admin(&one);
    let token = ca.token("spiffe://example.org/shared", &["--uses", "100"]);
    let csr = ca.csr(&[]);
    let start = count(&admin).await;

    let req = sign_req(&token.secret, &csr.pem);
    let (c1, c2) = (ca.client(&one), ca.client(&two));
    let noop = Arc::new(|_: &Resp| {});
    let (a, b) = tokio::join!(
        burst(&c1, &req, 75, 16, noop.clone()),
        burst(&c2, &req, 75, 16, noop),
    );
    let mut serials = Vec::new();
    for run in [&a, &b] {
        for r in &run.results {
            let r = r.as_ref().unwrap();
            if r.status == 201 {
                serials.push(r.json()["serial"].as_str().unwrap().to_owned());
            } else {
                r.expect_error(401, "token_used");
            }
        }
    }
    assert!(
        a.statuses().contains(&201) && b.statuses().contains(&201),
        "both processes issued"
    );
    let returned = distinct(&serials);
    assert_eq!(returned.len(), 100, "exactly the token's 100 uses");
    assert_eq!(count(&admin).await, start + 100);
    let recorded: HashSet<String> = serials_of_token(&admin, &token.id)
        .await
        .iter()
        .map(|s| canon_serial(s))
        .collect();
    assert_eq!(recorded, returned, "no lost or extra record");
    // The other process sees the same rows.
    assert_eq!(count(&ca.admin(&two)).await, start + 100);
    assert_eq!(ca.token_info(&token.id)["uses"], 100);
}

async fn sigkill_mid_burst_loses_no_returned_certificate(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    ca.set_limits(NO_LIMITS, NO_LIMITS);
    let mut server = ca.serve();
    let client = ca.client(&server);
    let token = ca.token("spiffe://example.org/crash", &["--uses", "0"]);
    let csr = ca.csr(&[]);

    // Every serial a client received, as it arrives.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let on_answer = {
        let (received, answered, enough) = (received.clone(), answered.clone(), enough.clone());
        Arc::new(move |r: &Resp| {
            if r.status == 201 {
                let serial = r.json()["serial"].as_str().unwrap().to_owned();
                received.lock().unwrap().push(serial);
            }
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == 150 {
                enough.notify_one();
            }
        })
    };
    let load = {
        let (client, req) = (client.clone(), sign_req(&token.secret, &csr.pem));
        tokio::spawn(async move { burst(&client, &req, 5000, 32, on_answer).await })
    };
    enough.notified().await;
    server.kill();
    let run = load.await.unwrap();
    let statuses = run.statuses();
    assert!(
        statuses.contains(&0),
        "the kill landed mid-burst (some requests failed)"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 0),
        "{statuses:?}"
    );
    let received = received.lock().unwrap().clone();
    assert!(received.len() >= 150, "{}", received.len());
    let received = distinct(&received);

    let restarted = ca.serve();
    let recorded: HashSet<String> = serials_of_token(&ca.admin(&restarted), &token.id)
        .await
        .iter()
        .map(|s| canon_serial(s))
        .collect();
    let lost: Vec<&String> = received.difference(&recorded).collect();
    assert!(lost.is_empty(), "returned but not recorded: {lost:?}");
    println!(
        "{backend:?}: killed after {} certificates were returned; {} recorded",
        received.len(),
        recorded.len()
    );
    let uses = ca.token_info(&token.id)["uses"].as_u64().unwrap();
    assert_eq!(
        uses,
        recorded.len() as u64,
        "a use per recorded certificate"
    );
}

async fn rate_limits_answer_429(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    ca.set_limits((1, 8), (1, 3));
    let server = ca.serve();
    let client = ca.client(&server);
    let token = ca.token("spiffe://example.org/limited", &["--uses", "0"]);
    let csr = ca.csr(&[]);

    // Per token: a burst of 3, then 429, and a refused request spends no use.
    let mut issued = 0;
    let mut limited = None;
    for _ in 0..20 {
        let resp = client.send(&sign_req(&token.secret, &csr.pem)).await;
        match resp.status {
            201 => issued += 1,
            _ => {
                limited = Some(resp);
                break;
            }
        }
    }
    let limited = limited.expect("a 429 within 20 requests");
    limited.expect_error(429, "rate_limited");
    assert!(issued >= 2, "the burst is allowed ({issued})");
    assert_eq!(ca.token_info(&token.id)["uses"], issued);

    // Per address: requests without a valid token still count.
    let mut saw_429 = false;
    for _ in 0..20 {
        let resp = client
            .post("/v1/sign", &json!({ "token": "wdt_nope", "csr": csr.pem }))
            .await;
        if resp.status == 429 {
            resp.expect_error(429, "rate_limited");
            saw_429 = true;
            break;
        }
        assert_eq!(resp.status, 401, "{}", resp.text());
    }
    assert!(saw_429, "the address limit answers 429");
    let metrics = client.send(&Req::get("/metrics")).await.text();
    for scope in ["token", "address"] {
        let line = format!("ward_ca_rate_limited_total{{scope=\"{scope}\"}} ");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}
