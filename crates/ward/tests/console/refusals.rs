//! What the console refuses, with curl as the client: used, expired and
//! unknown login links, requests without a session, cross-site changes,
//! changes without (or with another session's) CSRF token, oversized forms;
//! and what it must send: security headers and a hardened cookie. Each
//! refusal is paired with the same request made right, so none passes
//! vacuously.

use std::time::{Duration, Instant};

use crate::console::server::{Http, Server, Session, curl, login_link, sign_in, use_link};
use crate::harness::{Backend, Ca};

fn get(ca: &Ca, base: &str, path: &str, session: Option<&Session>) -> Http {
    let cookie = session.map(|s| s.cookie.clone());
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
    curl(
        &ca.root(),
        "GET",
        &format!("{base}{path}"),
        &headers,
        None,
        &[],
    )
}

fn post(ca: &Ca, base: &str, path: &str, headers: &[(&str, &str)], form: &str) -> Http {
    curl(
        &ca.root(),
        "POST",
        &format!("{base}{path}"),
        headers,
        Some(form),
        &[],
    )
}

fn assert_refused(answer: &Http, status: u16, reason: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert!(answer.body.contains(reason), "{reason} in {}", answer.body);
}

fn token_count(ca: &Ca) -> usize {
    let out = ca.ward(&["token", "list", "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["tokens"].as_array().map_or(0, Vec::len)
}

async fn login_links_work_once_and_expire(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = Server::start(&ca);
    let base = server.url();
    let root = ca.root();

    let link = login_link(&ca, &base, "5m");
    // Opening the link changes nothing: it shows a form to POST.
    let page = curl(&root, "GET", &link, &[], None, &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/console/login\"")
    );
    let first = use_link(&root, &base, &link);
    assert_eq!(first.status, 303, "{first:?}");
    let cookie = first.header("set-cookie").unwrap();
    for attr in [
        "__Host-ward-console=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert_refused(&use_link(&root, &base, &link), 401, "login_link_used");

    let short = login_link(&ca, &base, "1s");
    let made = Instant::now();
    // Waiting for the clock, not for a process: the link's whole point.
    while made.elapsed() < Duration::from_millis(1100) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_refused(&use_link(&root, &base, &short), 401, "login_link_expired");
    let forged = format!("{base}/console/login?token=wcl_{}", "A".repeat(43));
    assert_refused(&use_link(&root, &base, &forged), 401, "login_link_unknown");
    let junk = format!("{base}/console/login?token={}", "x".repeat(5000));
    assert_refused(&use_link(&root, &base, &junk), 401, "login_link_unknown");

    // Links are refused after 1 h at most, and only https URLs are printed.
    let out = ca.ward(&["ca", "console-login", "--url", &base, "--expires-in", "2h"]);
    assert!(!out.status.success());
    let out = ca.ward(&["ca", "console-login", "--url", "http://x"]);
    assert!(!out.status.success());

    // The audit page lists the refusals by reason.
    let session = sign_in(&ca, &root, &base);
    let audit = get(&ca, &base, "/console/audit", Some(&session));
    for reason in [
        "login_link_used",
        "login_link_expired",
        "login_link_unknown",
    ] {
        assert!(audit.body.contains(reason), "{reason} on the audit page");
    }
    drop(server);
}

async fn changes_need_a_session_the_origin_and_the_csrf_token(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = Server::start(&ca);
    let base = server.url();
    let origin = base.clone();
    let before = token_count(&ca);
    let form =
        |csrf: &str| format!("csrf={csrf}&spiffe_id=spiffe%3A%2F%2Fexample.org%2Fconsole%2Fa");

    // No session: pages send to the sign-in page, changes are refused.
    let page = get(&ca, &base, "/console/", None);
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/console/login"));
    assert_refused(
        &post(&ca, &base, "/console/tokens", &[], &form("x")),
        401,
        "missing_session",
    );
    let stale = [("Cookie", "__Host-ward-console=not-a-session")];
    assert_refused(
        &post(&ca, &base, "/console/tokens", &stale, &form("x")),
        401,
        "missing_session",
    );

    let s = sign_in(&ca, &ca.root(), &base);
    let other = sign_in(&ca, &ca.root(), &base);
    let cookie = ("Cookie", s.cookie.as_str());
    // Cross-site: another Origin, or a browser saying so.
    for hostile in [
        vec![cookie, ("Origin", "https://evil.example")],
        vec![cookie, ("Origin", "null")],
        vec![cookie, ("Sec-Fetch-Site", "cross-site")],
        vec![
            cookie,
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "same-site"),
        ],
    ] {
        assert_refused(
            &post(&ca, &base, "/console/tokens", &hostile, &form(&s.csrf)),
            403,
            "cross_site_request",
        );
    }
    // Sign-in itself is refused cross-site (login CSRF).
    let link = login_link(&ca, &base, "5m");
    let token = crate::console::server::link_token(&link);
    let evil = [("Origin", "https://evil.example")];
    assert_refused(
        &post(
            &ca,
            &base,
            "/console/login",
            &evil,
            &format!("token={token}"),
        ),
        403,
        "cross_site_request",
    );
    // Without the CSRF token, or with another session's.
    let same = [cookie, ("Origin", origin.as_str())];
    let no_csrf = "spiffe_id=spiffe%3A%2F%2Fexample.org%2Fconsole%2Fa";
    assert_refused(
        &post(&ca, &base, "/console/tokens", &same, no_csrf),
        403,
        "csrf_missing",
    );
    assert_refused(
        &post(&ca, &base, "/console/tokens", &same, &form("")),
        403,
        "csrf_missing",
    );
    assert_refused(
        &post(&ca, &base, "/console/tokens", &same, &form(&other.csrf)),
        403,
        "csrf_mismatch",
    );
    assert_refused(
        &post(&ca, &base, "/console/logout", &same, "csrf=wrong"),
        403,
        "csrf_mismatch",
    );
    assert_eq!(
        token_count(&ca),
        before,
        "no refused request created a token"
    );

    // The same request made right works (HTTP/2 and HTTP/1.1 alike).
    let made = post(&ca, &base, "/console/tokens", &same, &form(&s.csrf));
    assert_eq!(made.status, 201, "{made:?}");
    assert!(made.body.contains("id=\"new-token\" class=\"secret\">wdt_"));
    let made = curl(
        &ca.root(),
        "POST",
        &format!("{base}/console/tokens"),
        &same,
        Some(&form(&s.csrf)),
        &["--http1.1"],
    );
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(token_count(&ca), before + 2);

    // Oversized and malformed forms get a clear error, not a crash.
    let huge = format!("csrf={}&spiffe_id={}", s.csrf, "a".repeat(20_000));
    assert_eq!(
        post(&ca, &base, "/console/tokens", &same, &huge).status,
        413
    );
    let bad = post(
        &ca,
        &base,
        "/console/tokens",
        &same,
        &format!("csrf={}&spiffe_id=not-an-id", s.csrf),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("Not created"));
    let bad = get(&ca, &base, "/console/certificates?q=zz&by=serial", Some(&s));
    assert_eq!(bad.status, 400);
    let bad = get(&ca, &base, "/console/certificates/not-hex", Some(&s));
    assert_eq!(bad.status, 400);

    // Logout ends the session.
    let out = post(
        &ca,
        &base,
        "/console/logout",
        &same,
        &format!("csrf={}", s.csrf),
    );
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(get(&ca, &base, "/console/", Some(&s)).status, 303);
    assert_eq!(get(&ca, &base, "/console/", Some(&other)).status, 200);
    drop(server);
}

async fn headers_certificates_and_the_console_listener(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = Server::start(&ca);
    let base = server.url();
    let root = ca.root();

    // Every console answer carries the policy; it allows no inline script.
    for path in [
        "/console/login",
        "/console/",
        "/console/assets/console.js",
        "/console/nope",
    ] {
        let answer = get(&ca, &base, path, None);
        let csp = answer
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("CSP on {path}"));
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("referrer-policy"), Some("same-origin"));
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    let page = get(&ca, &base, "/console/login", None);
    assert!(!page.body.contains("<script>") && !page.body.contains("style="));
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no external asset"
    );

    // The admin client certificate signs in by itself.
    let admin = ca.file("admin.crt");
    let key = ca.file("admin.key");
    let with_cert = curl(
        &root,
        "GET",
        &format!("{base}/console/"),
        &[],
        None,
        &[
            "--cert",
            admin.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(with_cert.status, 200, "{with_cert:?}");
    assert!(with_cert.header("set-cookie").unwrap().contains("HttpOnly"));
    assert!(with_cert.body.contains("<h1>Overview</h1>"));
    // A workload certificate does not.
    let mut extra: Vec<&str> = Vec::new();
    let db = ca.db_args();
    extra.extend(db.iter().map(String::as_str));
    let leaf = ca
        .pki()
        .issue("client", "spiffe://example.org/console/w", &extra);
    let crt = leaf.with_extension("crt");
    let lkey = leaf.with_extension("key");
    let workload = curl(
        &root,
        "GET",
        &format!("{base}/console/"),
        &[],
        None,
        &[
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            lkey.to_str().unwrap(),
        ],
    );
    assert_eq!(workload.status, 303);

    // The console-only listener serves the console and nothing else.
    let console = format!("https://{}", server.console);
    assert_eq!(get(&ca, &console, "/console/login", None).status, 200);
    let s = sign_in(&ca, &root, &console);
    assert_eq!(get(&ca, &console, "/console/", Some(&s)).status, 200);
    assert_eq!(get(&ca, &console, "/v1/roots", None).status, 404);
    assert_eq!(get(&ca, &base, "/v1/roots", None).status, 200);
    drop(server);
}

on_both_backends!(
    login_links_work_once_and_expire,
    changes_need_a_session_the_origin_and_the_csrf_token,
    headers_certificates_and_the_console_listener,
);
