//! The console in a real browser (issue 21, "Must hold"): headless Debian
//! Chromium, driven through WebDriver, signs in with a one-time link,
//! creates a token, sees the certificate `ward agent run` obtained with it,
//! revokes it; the certificate's page and `openssl ocsp` both say revoked.
//! Screenshots of every page are written under the test's target temporary
//! directory (`CARGO_TARGET_TMPDIR/console-screenshots/`).

use std::path::PathBuf;
use std::process::Command;

use crate::console::server::{Server, login_link};
use crate::console::webdriver::{Browser, available};
use crate::harness::{Backend, Ca, OutputText};
use crate::procs::{AgentDir, AgentProcess, DEADLINE, openssl_fingerprint};

pub(crate) fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `openssl ocsp` about `cert` against the CA's plain-HTTP responder.
fn ocsp_status(ca: &Ca, server: &Server, cert: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-issuer"])
        .arg(ca.file("intermediate.crt"))
        .arg("-cert")
        .arg(cert)
        .arg("-CAfile")
        .arg(ca.root())
        .args(["-url", &format!("http://{}/ocsp", server.http)])
        .output()
        .expect("openssl runs");
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(
        out.status.success() && text.contains("Response verify OK"),
        "openssl ocsp: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_creates_a_token_and_revokes_its_certificate() {
    if !available() {
        return;
    }
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = Server::start(&ca);
    let base = server.url();
    let shots = screenshots();
    // A zone far from UTC, to see times rendered in the viewer's zone.
    let browser = Browser::start("Asia/Tokyo");

    // Sign in with a one-time link.
    let link = login_link(&ca, &base, "5m");
    browser.goto(&link);
    browser.screenshot(&shots, "01-login");
    browser.click_to_page("#sign-in");
    assert_eq!(
        browser.url(),
        format!("{base}/console/"),
        "{}\n{}",
        browser.source(),
        server.output()
    );
    assert_eq!(browser.text("h1"), "Overview");
    let cookies = browser.cookies();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "__Host-ward-console")
        .expect("the session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "Strict");
    // HttpOnly: the page's scripts cannot read it.
    assert_eq!(browser.script("return document.cookie"), "");
    browser.screenshot(&shots, "02-overview");

    // Create a token bound to a SPIFFE ID; its secret is shown once.
    browser.click_to_page("nav a[href='/console/tokens']");
    browser.screenshot(&shots, "03-tokens");
    browser.type_into("#spiffe_id", "spiffe://example.org/console/web");
    browser.type_into("#cert_ttl", "1h");
    browser.click_to_page("#create-token");
    assert_eq!(browser.text("h1"), "New token");
    let secret = browser.text("#new-token");
    let token_id = browser.text("#new-token-id");
    assert!(secret.starts_with("wdt_"), "{secret}");
    // The copy button appears only with script running (it does here).
    assert_eq!(browser.attribute("button[data-copy]", "hidden"), None);
    browser.screenshot(&shots, "04-token-created");

    // An agent obtains a certificate with it.
    let dir = AgentDir::new(&ca, "agent");
    let out = dir.root.join("out");
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &base,
            "--ca-fingerprint",
            &openssl_fingerprint(&ca.root()),
            "--out-dir",
            out.to_str().unwrap(),
        ],
        &[("WARD_TOKEN", &secret)],
    );
    let serial = agent.wait_deliveries(1, DEADLINE)[0].serial.clone();
    let svid = out.join("svid.pem");
    assert!(ocsp_status(&ca, &server, &svid).contains(": good"));

    // The console finds it by SPIFFE ID prefix and by token.
    browser.goto(&format!(
        "{base}/console/certificates?q=spiffe%3A%2F%2Fexample.org%2Fconsole%2F&by=spiffe"
    ));
    assert!(
        browser.source().contains(&serial),
        "the agent's certificate is listed"
    );
    browser.screenshot(&shots, "05-certificates");
    browser.goto(&format!("{base}/console/certificates?q={token_id}"));
    assert!(browser.source().contains(&serial));
    browser.click_to_page(&format!("a[href='/console/certificates/{serial}']"));
    assert!(browser.text("#status").contains("valid"));
    let page = browser.source();
    assert!(page.contains("spiffe://example.org/console/web"));
    assert!(page.contains("BEGIN CERTIFICATE"), "the chain is shown");
    // Times: the viewer's zone in the text, UTC on hover.
    let shown = browser.text("dd time");
    let title = browser.attribute("dd time", "title").unwrap();
    assert!(title.ends_with("UTC"), "{title}");
    assert!(!shown.ends_with("UTC"), "{shown} is in the viewer's zone");
    browser.screenshot(&shots, "06-certificate");

    // Revoke it, with a reason, after confirming.
    browser.click("#reason option[value='keyCompromise']");
    browser.click_to_page("#revoke-start");
    assert_eq!(browser.text("h1"), "Confirm revocation");
    browser.screenshot(&shots, "07-confirm-revocation");
    browser.click_to_page("#revoke-confirm");
    let status = browser.text("#status");
    assert!(
        status.contains("revoked") && status.contains("keyCompromise"),
        "{status}"
    );
    browser.screenshot(&shots, "08-revoked");
    let ocsp = ocsp_status(&ca, &server, &svid);
    assert!(ocsp.contains(": revoked"), "{ocsp}");
    assert!(
        ocsp.contains("Key Compromise") || ocsp.contains("keyCompromise"),
        "{ocsp}"
    );

    // Revoke the token with its certificates from the list.
    browser.goto(&format!("{base}/console/tokens"));
    browser.click_to_page("button[name='certificates'][value='yes']");
    assert!(browser.source().contains("certificates revoked too"));
    browser.screenshot(&shots, "09-token-revoked");

    // The overview and audit pages show what happened.
    browser.goto(&format!("{base}/console/"));
    assert!(browser.source().contains(&serial), "a recent revocation");
    browser.goto(&format!("{base}/console/audit"));
    browser.screenshot(&shots, "10-audit");

    // Keyboard: the first Tab reaches the skip link, which leads to main.
    browser.goto(&format!("{base}/console/"));
    browser.keys("\u{E004}");
    assert_eq!(
        browser.script("return document.activeElement.className"),
        "skip"
    );
    // A 375 px wide screen: nothing overflows the page sideways.
    browser.resize(375, 812);
    for (path, name) in [
        ("/console/", "11-overview-375"),
        ("/console/tokens", "12-tokens-375"),
        (
            &format!("/console/certificates/{serial}")[..],
            "13-certificate-375",
        ),
    ] {
        browser.goto(&format!("{base}{path}"));
        let wide =
            browser.script("return document.documentElement.scrollWidth <= window.innerWidth");
        assert_eq!(wide, true, "{path} fits 375 px");
        browser.screenshot(&shots, name);
    }
    browser.resize(1280, 900);

    // Sign out; the session is gone and the used link stays used.
    browser.click_to_page("form.logout button");
    assert_eq!(browser.text("h1"), "Signed out");
    browser.goto(&format!("{base}/console/"));
    assert_eq!(browser.url(), format!("{base}/console/login"));
    browser.goto(&link);
    browser.click_to_page("#sign-in");
    assert!(browser.source().contains("login_link_used"));
    browser.screenshot(&shots, "14-link-used");
    println!("screenshots in {}", shots.display());
    agent.terminate();
    drop(server);
}
