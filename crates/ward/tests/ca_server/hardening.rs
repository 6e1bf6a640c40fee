//! Issue 25 at the CA: RSA key generation does not stall the server and
//! one token gets a bounded share of it; JSON routes insist on
//! `application/json`; HTTP/2 connections close when idle and at their
//! maximum age (judged by Node's http2 client).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Ca, Req};

/// Rewrites `key = …` lines of ca.toml's `[limits]`.
fn set_limit(ca: &Ca, key: &str, value: &str) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let prefix = format!("{key} = ");
    assert!(text.contains(&prefix), "ca.toml has no {key}");
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_generation_keeps_healthz_fast_and_is_limited_per_token() {
    let Some(ca) = Ca::new(Backend::Sqlite) else {
        return;
    };
    let server = ca.serve();
    let client = ca.client(&server);
    let slots = ward_ca::cpu::slots();

    // Several clients, each with its own token, ask for RSA-4096 keys at
    // once while /healthz is polled on a warm connection.
    let clients = slots + 2;
    let issues: Vec<_> = (0..clients)
        .map(|i| {
            let token = ca.token(&format!("spiffe://example.org/rsa/{i}"), &[]);
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .post(
                        "/v1/issue",
                        &json!({ "token": token.secret, "key_type": "rsa-4096" }),
                    )
                    .await
            })
        })
        .collect();
    let mut health = client.connect().await.unwrap();
    let mut worst = Duration::ZERO;
    let mut polls = 0;
    while !issues.iter().all(|t| t.is_finished()) {
        let started = Instant::now();
        let r = health.send(&Req::get("/healthz")).await.unwrap();
        assert_eq!(r.status, 200);
        worst = worst.max(started.elapsed());
        polls += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for issue in issues {
        let issued = issue.await.unwrap().expect(201);
        let key = issued["private_key"].as_str().unwrap();
        assert!(key.contains("PRIVATE KEY"), "{issued}");
    }
    eprintln!(
        "/healthz: worst {worst:?} over {polls} polls while {clients} RSA-4096 keys were made"
    );
    assert!(polls > 3, "only {polls} health checks ran");
    assert!(
        worst < Duration::from_millis(200),
        "/healthz took up to {worst:?} while {clients} RSA-4096 keys were made"
    );

    // One token, several RSA keys at once: the first runs, the others are
    // told to come back, in the API's error shape.
    let token = ca.token("spiffe://example.org/rsa/greedy", &["--uses", "0"]);
    let greedy: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            let secret = token.secret.clone();
            tokio::spawn(async move {
                client
                    .post(
                        "/v1/issue",
                        &json!({ "token": secret, "key_type": "rsa-4096" }),
                    )
                    .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for g in greedy {
        let r = g.await.unwrap();
        if r.status == 429 {
            r.expect_error(429, "rate_limited");
        }
        statuses.push(r.status);
    }
    assert!(statuses.contains(&201), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // Cheap keys are not limited that way.
    let r = client
        .post(
            "/v1/issue",
            &json!({ "token": token.secret, "key_type": "ecdsa-p256" }),
        )
        .await;
    r.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_routes_require_application_json() {
    let Some(ca) = Ca::new(Backend::Sqlite) else {
        return;
    };
    let server = ca.serve();
    let client = ca.client(&server);
    let admin = ca.admin(&server);
    let body = json!({ "token": "wrd_nope", "csr": "x" });
    for (path, who) in [
        ("/v1/sign", &client),
        ("/v1/issue", &client),
        ("/internal/pki/issue-certificate", &client),
        ("/v1/renew", &admin),
        ("/v1/admin/tokens", &admin),
        ("/v1/revoke", &admin),
    ] {
        for wrong in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonp"),
            None,
        ] {
            let r = who.send(&Req::json(path, &body).content_type(wrong)).await;
            r.expect_error(415, "unsupported_media_type");
        }
        // application/json with parameters goes on to the route's own checks.
        let r = who
            .send(&Req::json(path, &body).content_type(Some("Application/JSON; charset=utf-8")))
            .await;
        assert_ne!(r.status, 415, "{path}: {}", r.text());
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ward-testkit/scripts/h2_client.js")
}

/// Runs the Node HTTP/2 client (as the admin) against the CA.
fn node(ca: &Ca, port: u16, paths: &str) -> Vec<Value> {
    let out = std::process::Command::new("node")
        .arg(script())
        .arg(format!("https://localhost:{port}"))
        .arg(ca.root())
        .arg(ca.file("admin.crt"))
        .arg(ca.file("admin.key"))
        .arg(paths)
        .arg("15000")
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn at(events: &[Value], ev: &str) -> Option<u64> {
    events
        .iter()
        .find(|e| e["ev"] == ev)
        .map(|e| e["t"].as_u64().unwrap())
}

#[test]
fn http2_connections_to_the_ca_close_when_idle_and_at_max_age() {
    let Some(ca) = Ca::new(Backend::Sqlite) else {
        return;
    };
    // Idle: one request, then nothing.
    set_limit(&ca, "connection_idle_timeout", "\"1s\"");
    set_limit(&ca, "max_connection_age", "\"off\"");
    let server = ca.serve();
    let events = node(&ca, server.addr.port(), "/healthz");
    let ended = at(&events, "end").unwrap_or_else(|| panic!("{events:?}"));
    assert!(at(&events, "goaway").is_some(), "no GOAWAY: {events:?}");
    let closed = at(&events, "close").unwrap_or_else(|| panic!("never closed: {events:?}"));
    assert!((900..6_000).contains(&(closed - ended)), "{events:?}");
    drop(server);

    // Max age, idle limit off.
    set_limit(&ca, "connection_idle_timeout", "\"off\"");
    set_limit(&ca, "max_connection_age", "\"2s\"");
    let server = ca.serve();
    let events = node(&ca, server.addr.port(), "/healthz");
    let goaway = at(&events, "goaway").unwrap_or_else(|| panic!("no GOAWAY: {events:?}"));
    assert!((1_500..6_000).contains(&goaway), "{events:?}");
    assert!(at(&events, "close").is_some(), "{events:?}");
}
