//! OCSP across a root rotation (issue 20): `ward ca rotate root` makes the
//! next root R2's own delegated responder, and a running `ward ca serve`
//! picks it up without a restart. `openssl ocsp` judges: before the
//! rotation, answers about I1 verify under R1 alone; after it, answers
//! about I2 verify under R2 alone (`-CAfile R2`), a leaf under I2 is good,
//! and R1 does not vouch for I2. nginx (`ssl_ocsp on; ssl_verify_depth 2`)
//! trusting only R2 lets a client certificate under I2 in, which needs
//! answers about the leaf *and* about I2. After R1 retires, a client
//! bootstraps with R2's fingerprint. Without R2's responder (nor its key),
//! questions about I2 are refused, never signed by R1's responder.

use std::path::Path;
use std::time::{Duration, Instant};

use super::setup::{Leaf, configure, issue};
use crate::common::OutputText;
use crate::common::nginx::{Nginx, config, get_through, nginx_binary};
use crate::dual::DualServer;
use crate::harness::{Backend, Ca, Client, openssl};

/// `openssl ocsp -issuer ISSUER -cert CERT -url URL -CAfile ANCHOR`:
/// (exit ok, stdout, stderr).
fn ask(issuer: &Path, cert: &Path, url: &str, anchor: &Path) -> (bool, String, String) {
    openssl(&[
        "ocsp",
        "-issuer",
        issuer.to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-url",
        url,
        "-CAfile",
        anchor.to_str().unwrap(),
    ])
}

/// Asserts a verified answer saying `want` about `cert`.
fn verified(result: (bool, String, String), cert: &Path, want: &str) {
    let (ok, out, err) = result;
    assert!(ok, "openssl ocsp failed:\n{out}\n{err}");
    assert!(err.contains("Response verify OK"), "{out}\n{err}");
    let line = format!("{}: {want}", cert.display());
    assert!(out.contains(&line), "want {line:?}:\n{out}\n{err}");
}

/// Shortens `[issuance] max_ttl` and `default_ttl`, so that the replaced
/// intermediate (and with it R1) retires within the test.
fn set_max_ttl(ca: &Ca, ttl: &str) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let new = text
        .replace("max_ttl = \"24h\"", &format!("max_ttl = \"{ttl}\""))
        .replace("default_ttl = \"1h\"", &format!("default_ttl = \"{ttl}\""));
    assert_ne!(new, text, "ca.toml has no max_ttl to change");
    std::fs::write(&path, new).unwrap();
}

/// The SHA-256 (lowercase hex) of a DER certificate.
fn sha256(der: &[u8]) -> String {
    ward_pki::Fingerprint::of_der(der)
        .to_string()
        .replace(':', "")
        .to_lowercase()
}

/// The fingerprints of a PEM body.
fn fingerprints(pem: &str) -> Vec<String> {
    ward_pki::pem::parse_certs(pem.as_bytes())
        .unwrap_or_default()
        .iter()
        .map(|c| sha256(c))
        .collect()
}

/// The `spiffe_sequence` of `GET /v1/bundle`.
async fn sequence(client: &Client) -> u64 {
    let resp = client.get("/v1/bundle").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let json: serde_json::Value = serde_json::from_str(&resp.text()).unwrap();
    json["spiffe_sequence"].as_u64().unwrap()
}

/// Polls `cond` every 200 ms until it holds, for up to `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let end = Instant::now() + limit;
    loop {
        match cond().await {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < end, "{what}: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_root_answers_ocsp_about_its_own_intermediate_across_a_rotation() {
    ward_tls::install_default_provider();
    let ca = Ca::new(Backend::Sqlite).unwrap();
    configure(&ca);
    set_max_ttl(&ca, "10s");
    let server = DualServer::start(&ca);
    let client = Client::new(server.https, &ca.root(), None);
    let url = format!("http://{}/ocsp", server.http);
    let r1 = ca.root();
    let i1 = ca.file("intermediate.crt");

    // Before the rotation: I1 answered by R1's responder, verified under R1
    // alone.
    verified(ask(&r1, &i1, &url, &r1), &i1, "good");
    let seq_before = sequence(&client).await;

    let out = ca.ward(&["ca", "rotate", "root", "--overlap", "3s"]);
    assert!(out.status.success(), "rotate root: {}", out.stderr_text());
    let text = out.stdout_text();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix:?} in {text}"))
            .trim()
            .to_owned()
    };
    let (r2_fp, i2_fp) = (find("Next root: "), find("Its intermediate: "));
    let r2 = ca.file(&format!("roots/{r2_fp}.crt"));
    let i2 = ca.file(&format!("intermediates/{i2_fp}.crt"));
    // From here on the CA's own certificate may chain to either root.
    let both = ca.write(
        "both-roots.pem",
        &format!(
            "{}{}",
            std::fs::read_to_string(&r1).unwrap(),
            std::fs::read_to_string(&r2).unwrap()
        ),
    );
    let client = Client::new(server.https, &both, None);
    let responder_key = ca.file(&format!("roots/{r2_fp}-ocsp.key"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&responder_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "R2's responder key is private");
    }
    // R2's responder has the profile of root-ocsp.crt: OCSPSigning, nocheck.
    let (ok, shown, err) = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        ca.file(&format!("roots/{r2_fp}-ocsp.crt"))
            .to_str()
            .unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(shown.contains("OCSP Signing"), "{shown}");
    assert!(shown.contains("OCSP No Check"), "{shown}");

    // The running CA learns R2 (and its responder) without a restart.
    wait_until("I2 answered under R2", Duration::from_secs(15), || {
        let (r2, i2, url) = (r2.clone(), i2.clone(), url.clone());
        async move {
            let (ok, out, err) = ask(&r2, &i2, &url, &r2);
            let line = format!("{}: good", i2.display());
            (ok && err.contains("Response verify OK") && out.contains(&line))
                .then_some(())
                .ok_or(format!("{out}\n{err}"))
        }
    })
    .await;
    // R1's answers about I1 still verify under R1 alone.
    verified(ask(&r1, &i1, &url, &r1), &i1, "good");
    // I2's serial asked under R1: R1 did not sign it.
    verified(ask(&r1, &i2, &url, &r1), &i2, "unknown");
    // A root change is a new SPIFFE bundle version.
    let seq_published = sequence(&client).await;
    assert!(
        seq_published > seq_before,
        "spiffe_sequence {seq_before} -> {seq_published}"
    );

    // After the switch, leaves come from I2; their answers verify under
    // R2 alone.
    let mut leaf: Option<Leaf> = None;
    let end = Instant::now() + Duration::from_secs(20);
    while leaf.is_none() {
        let l = issue(&ca, &client, "web").await;
        let chain = std::fs::read_to_string(&l.chain).unwrap();
        if fingerprints(&chain).get(1) == Some(&i2_fp) {
            leaf = Some(l);
        } else {
            assert!(Instant::now() < end, "the CA never switched to I2");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let leaf = leaf.unwrap();
    verified(ask(&i2, &leaf.cert, &url, &r2), &leaf.cert, "good");
    verified(ask(&r2, &i2, &url, &r2), &i2, "good");

    // nginx trusting only R2, checking the leaf and I2 by OCSP.
    if let Some(bin) = nginx_binary() {
        let tls = ca.pki().issue(
            "server",
            "spiffe://example.org/nginx",
            &["--ip", "127.0.0.1", "--dns", "localhost"],
        );
        let dir = ca.pki().path("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        // nginx trusts R2 alone for clients; curl verifies nginx's own
        // certificate under either root.
        let nginx = Nginx::start(&bin, &dir, |port| config(&dir, port, &tls, &r2, &url));
        let (status, body) = get_through(&nginx, &both, &leaf.chain, &leaf.key);
        assert_eq!(status, 200, "{body}\n{}", nginx.error_log());
        assert!(body.contains("hello SUCCESS"), "{body}");
        let out = ca.ward(&["revoke", &leaf.serial, "--reason", "keyCompromise"]);
        assert!(out.status.success(), "ward revoke: {}", out.stderr_text());
        let (status, body) = get_through(&nginx, &both, &leaf.chain, &leaf.key);
        assert_eq!(status, 400, "{body}\n{}", nginx.error_log());
        assert!(
            nginx.error_log().contains("revoked"),
            "{}",
            nginx.error_log()
        );
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is required under CI (apt-get install nginx)"
        );
        println!("nginx part skipped: nginx is not installed");
    }

    // R1 retires once nothing under I1 can be valid; then a client pinned
    // to R2's fingerprint bootstraps.
    wait_until("R1 retired", Duration::from_secs(40), || {
        let client = &client;
        let r2_fp = r2_fp.clone();
        async move {
            let resp = client.get("/v1/roots").await;
            let roots = fingerprints(&resp.text());
            (roots == vec![r2_fp.clone()])
                .then_some(())
                .ok_or(format!("bundle {roots:?}"))
        }
    })
    .await;
    let pin: ward_pki::Fingerprint = r2_fp.parse().unwrap();
    let got = ward_client::trust::fetch_pinned_root(&format!("https://{}", server.https), &pin)
        .await
        .expect("bootstrap with R2's fingerprint");
    assert_eq!(sha256(&got), r2_fp);
    drop(server);

    // Without R2's responder nor its key: questions about I2 are refused,
    // R1's answers are unchanged.
    std::fs::remove_file(ca.file(&format!("roots/{r2_fp}-ocsp.crt"))).unwrap();
    std::fs::remove_file(ca.file(&format!("roots/{r2_fp}.key"))).unwrap();
    let server = DualServer::start(&ca);
    let url = format!("http://{}/ocsp", server.http);
    let (ok, out, err) = ask(&r2, &i2, &url, &r2);
    assert!(
        out.contains("unauthorized") || err.contains("unauthorized"),
        "{ok} {out}\n{err}"
    );
    assert!(!err.contains("Response verify OK"), "{out}\n{err}");
}
