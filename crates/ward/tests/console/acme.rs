//! The console's ACME pages and DNS search, with data made by a real ACME
//! client: lego (Debian) obtains a certificate over http-01 from the CA's
//! ACME server, then headless Chromium finds its account, its order and
//! the certificate (by DNS name and by suffix), sees it counted by ACME
//! profile on the overview, and deactivates the account after confirming;
//! lego is then refused by the ACME server. curl checks that the
//! deactivation needs the session's CSRF token and a same-origin request.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::acme_setup::{ChallTestSrv, Ports, configure, free_port, have};
use crate::console::server::{Server, curl, login_link, sign_in};
use crate::console::webdriver::{Browser, available};
use crate::harness::{Backend, Ca, OutputText};

/// Runs lego against provisioner `web` with http-01 on `port`, for `domain`.
fn lego(ca: &Ca, server: &Server, path: &Path, port: u16, domain: &str) -> (bool, String) {
    let out = Command::new("lego")
        .env("LEGO_CA_CERTIFICATES", ca.root())
        .args([
            "--server",
            &format!("{}/acme/web/directory", server.url()),
            "--accept-tos",
            "--email",
            "ops@acme.test",
            "--path",
            path.to_str().unwrap(),
            "--http",
            "--http.port",
            &format!("127.0.0.1:{port}"),
            "-d",
            domain,
            "run",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("lego runs");
    (
        out.status.success(),
        format!("{}{}", out.stdout_text(), out.stderr_text()),
    )
}

/// The serial (lowercase hex, as the console shows it) of a PEM certificate.
fn serial_of(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem)
        .output()
        .expect("openssl runs");
    let text = out.stdout_text();
    text.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("openssl x509 -serial: {text}"))
        .to_ascii_lowercase()
}

async fn acme_accounts_orders_and_dns_search(backend: Backend) {
    if !available()
        || !have("lego", "apt-get install lego")
        || !have("pebble-challtestsrv", "apt-get install pebble")
    {
        return;
    }
    let Some(ca) = Ca::new(backend) else { return };
    let dns = ChallTestSrv::start();
    let ports = Ports {
        http01: free_port(),
        tlsalpn01: free_port(),
        dns: dns.dns,
    };
    configure(&ca, &ports, "");
    let server = Server::start(&ca);
    let base = server.url();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("lego");
    let (ok, out) = lego(&ca, &server, &path, ports.http01, "shop.acme.test");
    assert!(ok, "lego: {out}\nCA: {}", server.output());
    let serial = serial_of(&path.join("certificates").join("shop.acme.test.crt"));

    let shots = crate::console::browser::screenshots();
    let browser = Browser::start("UTC");
    browser.goto(&login_link(&ca, &base, "5m"));
    browser.click_to_page("#sign-in");
    assert_eq!(browser.text("h1"), "Overview");
    // Counted by origin and ACME profile.
    let overview = browser.source();
    assert!(
        overview.contains("<td>acme</td><td>default</td><td>1</td>"),
        "{overview}"
    );

    // The ACME page: the account lego made and its one order.
    browser.click_to_page("nav a[href='/console/acme']");
    assert_eq!(browser.text("h1"), "ACME");
    let page = browser.source();
    assert!(page.contains("mailto:ops@acme.test"), "{page}");
    assert!(page.contains("dns:shop.acme.test"), "{page}");
    assert!(page.contains(&format!("/console/certificates/{serial}")));
    browser.screenshot(&shots, "21-acme");
    browser.click_to_page("td a[href^='/console/acme/accounts/']");
    assert!(browser.text("#status").contains("valid"));
    assert!(browser.source().contains("dns:shop.acme.test"));
    let account_url = browser.url();
    browser.screenshot(&shots, "22-acme-account");

    // The order's certificate, and the same found by DNS name and suffix.
    browser.click_to_page(&format!("a[href='/console/certificates/{serial}']"));
    assert!(browser.source().contains("shop.acme.test"));
    for q in ["SHOP.acme.test", ".acme.test", "*.acme.test"] {
        browser.goto(&format!(
            "{base}/console/certificates?q={}",
            q.replace('*', "%2A")
        ));
        assert!(
            browser.source().contains(&serial),
            "{q} finds the certificate"
        );
    }
    browser.screenshot(&shots, "23-dns-search");
    browser.goto(&format!("{base}/console/certificates?q=other.acme.test"));
    assert!(!browser.source().contains(&serial));
    browser.goto(&format!("{base}/console/certificates?q=.cme.test"));
    assert!(!browser.source().contains(&serial));

    // Deactivation: refused cross-site and without the CSRF token (curl),
    // then asked, confirmed and done in the browser.
    let action = format!("{}/deactivate", account_url);
    let s = sign_in(&ca, &ca.root(), &base);
    let cookie = ("Cookie", s.cookie.as_str());
    let form = format!("csrf={}&confirm=yes", s.csrf);
    let hostile = curl(
        &ca.root(),
        "POST",
        &action,
        &[cookie, ("Origin", "https://evil.example")],
        Some(&form),
        &[],
    );
    assert_eq!(hostile.status, 403, "{hostile:?}");
    let origin = ("Origin", base.as_str());
    let no_csrf = curl(
        &ca.root(),
        "POST",
        &action,
        &[cookie, origin],
        Some("confirm=yes"),
        &[],
    );
    assert_eq!(no_csrf.status, 403, "{no_csrf:?}");
    assert!(no_csrf.body.contains("csrf_missing"));
    let bad_id = curl(
        &ca.root(),
        "POST",
        &format!("{base}/console/acme/accounts/not%20an%20id/deactivate"),
        &[cookie, origin],
        Some(&form),
        &[],
    );
    assert_eq!(bad_id.status, 400, "{bad_id:?}");
    browser.goto(&account_url);
    assert!(browser.text("#status").contains("valid"), "nothing changed");
    browser.click_to_page("#deactivate-start");
    assert_eq!(browser.text("h1"), "Confirm deactivation");
    browser.screenshot(&shots, "24-confirm-deactivation");
    browser.click_to_page("#deactivate-confirm");
    assert_eq!(browser.url(), account_url);
    assert!(browser.text("#status").contains("deactivated"));
    browser.screenshot(&shots, "25-acme-deactivated");
    let again = curl(
        &ca.root(),
        "POST",
        &action,
        &[cookie, origin],
        Some(&form),
        &[],
    );
    assert_eq!(again.status, 400, "{again:?}");
    assert!(again.body.contains("deactivated, not valid"));

    // A 375 px wide screen: the ACME pages do not overflow sideways.
    browser.resize(375, 812);
    for (url, name) in [
        (format!("{base}/console/acme"), "26-acme-375"),
        (account_url.clone(), "27-acme-account-375"),
    ] {
        browser.goto(&url);
        let fits =
            browser.script("return document.documentElement.scrollWidth <= window.innerWidth");
        assert_eq!(fits, true, "{url} fits 375 px");
        browser.screenshot(&shots, name);
    }

    // The ACME server now refuses the account's key.
    let (ok, out) = lego(&ca, &server, &path, ports.http01, "again.acme.test");
    assert!(!ok, "a deactivated account still orders: {out}");
    drop(server);
}

on_both_backends!(acme_accounts_orders_and_dns_search);

/// A store from before the DNS index (certificates recorded, no names
/// indexed, the backfill pending): `ward ca serve` indexes them after
/// start, and the console then finds them by DNS name and suffix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_indexes_the_dns_names_of_earlier_certificates() {
    if !have("sqlite3", "apt-get install sqlite3") {
        return;
    }
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut serials = Vec::new();
    for name in ["a", "b", "c"] {
        let out = work.path().join(name);
        let made = crate::common::ward(&[
            "cert",
            "create",
            "--ca-dir",
            ca.dir(),
            "--profile",
            "server",
            "--spiffe-id",
            &format!("spiffe://example.org/old/{name}"),
            "--dns",
            &format!("{name}.old.test"),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(made.status.success(), "{}", made.stderr_text());
        serials.push(serial_of(&out.with_extension("crt")));
    }
    // As an older Ward left it.
    let sql = Command::new("sqlite3")
        .arg(ca.file("ward.db"))
        .arg("DELETE FROM cert_dns; INSERT INTO cert_dns_backfill (id, after) VALUES (1, '');")
        .output()
        .expect("sqlite3 runs");
    assert!(sql.status.success(), "{}", sql.stderr_text());
    let server = Server::start(&ca);
    let base = server.url();
    let s = sign_in(&ca, &ca.root(), &base);
    let search = |q: &str| {
        curl(
            &ca.root(),
            "GET",
            &format!("{base}/console/certificates?q={q}"),
            &[("Cookie", s.cookie.as_str())],
            None,
            &[],
        )
    };
    // Bounded wait for the backfill (three certificates: one step).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = search(".old.test");
        assert_eq!(page.status, 200, "{page:?}");
        if serials.iter().all(|s| page.body.contains(s.as_str())) {
            assert!(!page.body.contains("still being indexed"), "{}", page.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not indexed after 30 s: {}\n{}",
            page.body,
            server.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let page = search("b.old.test");
    assert!(page.body.contains(serials[1].as_str()));
    assert!(!page.body.contains(serials[0].as_str()));
    // Offline certificates record their profile.
    let overview = curl(
        &ca.root(),
        "GET",
        &format!("{base}/console/"),
        &[("Cookie", s.cookie.as_str())],
        None,
        &[],
    );
    assert!(
        overview
            .body
            .contains("<td>offline</td><td>server</td><td>3</td>"),
        "{}",
        overview.body
    );
    drop(server);
}
