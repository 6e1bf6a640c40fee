//! Root rotation (issue 20 item 3, docs/rotation.md "Rotating the root"):
//! a gate, a `ward-client` rotator and an agent (with its Workload API read
//! by the unmodified `spiffe` crate), all on 30 s certificates and all
//! pinned to the first root by fingerprint, under continuous traffic
//! through the gate, go through a full intermediate rotation and then a
//! full root rotation: the next root reaches every party before anything
//! chains to it, every party moves to the new root's intermediate, and the
//! old root leaves the bundle once nothing chaining to it can be valid.
//! Not one handshake or request may fail (per-second counters printed);
//! openssl verifies the old chain against the old root, the new chain
//! against the new root, and the new chain with its rollover certificate
//! against the old root alone. Besides: a pending root rotation is
//! cancelled, and a second rotation is refused while one is pending.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use tokio_rustls::TlsConnector;
use ward_client::{BootstrapConfig, CaTrust, Rotator, Token};

use super::load::{Gate, Traffic, upstream};
use super::support::{issue, published, rotate, sha256};
use crate::agent::procs::{AgentDir, AgentProcess, DEADLINE, openssl_fingerprint};
use crate::common::OutputText;
use crate::harness::{Backend, Ca, Client};

/// `ward ca rotate root --overlap OVERLAP`: (next root, its intermediate).
fn rotate_root(ca: &Ca, overlap: &str) -> (String, String) {
    let out = ca.ward(&["ca", "rotate", "root", "--overlap", overlap]);
    assert!(out.status.success(), "rotate root: {}", out.stderr_text());
    let text = out.stdout_text();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix:?} in {text}"))
            .trim()
            .to_owned()
    };
    (find("Next root: "), find("Its intermediate: "))
}

/// The SHA-256 of every root of `GET /v1/roots`.
async fn bundle(client: &Client) -> Vec<String> {
    let resp = client.get("/v1/roots").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    fingerprints(&resp.text())
}

fn fingerprints(pem: &str) -> Vec<String> {
    ward_pki::pem::parse_certs(pem.as_bytes())
        .unwrap_or_default()
        .iter()
        .map(|c| sha256(c))
        .collect()
}

fn der_fingerprints(certs: &[CertificateDer<'_>]) -> Vec<String> {
    certs.iter().map(|c| sha256(c)).collect()
}

/// `openssl verify -CAfile ANCHORS -untrusted REST LEAF` (the anchors are
/// roots, never a partial chain); (verified, openssl's words).
fn openssl_verifies_with(dir: &Path, anchors: &[&[u8]], chain: &[&[u8]]) -> (bool, String) {
    openssl_verifies_at(dir, anchors, chain, None)
}

/// As [`openssl_verifies_with`], at the Unix time `at` (`-attime`) when
/// given: a 30 s certificate is judged as of when it was in use.
fn openssl_verifies_at(
    dir: &Path,
    anchors: &[&[u8]],
    chain: &[&[u8]],
    at: Option<i64>,
) -> (bool, String) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, certs: &[&[u8]]| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, ward_pki::pem::certs_to_pem(certs.iter().copied())).unwrap();
        path
    };
    let anchors = write("anchors.pem", anchors);
    let leaf = write("leaf.pem", &chain[..1]);
    let rest = write("untrusted.pem", &chain[1..]);
    let mut cmd = std::process::Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(&anchors);
    if chain.len() > 1 {
        cmd.arg("-untrusted").arg(&rest);
    }
    if let Some(at) = at {
        cmd.arg("-attime").arg(at.to_string());
    }
    let out = cmd.arg(&leaf).output().expect("openssl runs");
    (
        out.status.success(),
        format!("{}{}", out.stdout_text(), out.stderr_text()),
    )
}

fn read_der(path: &Path) -> Vec<u8> {
    ward_ca::dir::read_certs(path).unwrap().remove(0).to_vec()
}

/// Shortens `[issuance] max_ttl` (and `default_ttl`) in ca.toml, so that a replaced
/// intermediate (and with it the old root) retires within the test.
fn set_max_ttl(ca: &Ca, ttl: &str) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let new = text
        .replace("max_ttl = \"24h\"", &format!("max_ttl = \"{ttl}\""))
        .replace("default_ttl = \"1h\"", &format!("default_ttl = \"{ttl}\""));
    assert_ne!(new, text, "ca.toml has no max_ttl to change");
    std::fs::write(&path, new).unwrap();
}

/// Waits (polling every 200 ms, up to `limit`) until `cond` holds; the
/// message names what each party still lacks.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + limit;
    loop {
        match cond() {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < end, "{what}: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_then_root_rotation_under_continuous_traffic_fails_nothing() {
    ward_tls::install_default_provider();
    let ca = Ca::new(Backend::Sqlite).unwrap();
    set_max_ttl(&ca, "30s");
    let server = ca.serve();
    let url = format!("https://{}", server.addr);
    let client = ca.client(&server);
    let r1_der = read_der(&ca.root());
    let r1 = sha256(&r1_der);
    let pin = openssl_fingerprint(&ca.root());

    let gate_token = ca.token(
        "spiffe://example.org/gate",
        &["--cert-ttl", "30s", "--dns", "localhost"],
    );
    let token_file = ca.write("gate-token", &gate_token.secret);
    let upstream = upstream().await;
    let gate = Gate::start(&[
        "--ca",
        &url,
        "--ca-fingerprint",
        &pin,
        "--token-file",
        token_file.to_str().unwrap(),
        "--upstream",
        &format!("http://{upstream}"),
        "--allow-spiffe-id",
        "spiffe://example.org/client",
    ]);
    let client_token = ca.token("spiffe://example.org/client", &["--cert-ttl", "30s"]);
    let rotator = Rotator::bootstrap(BootstrapConfig::new(
        url.clone(),
        CaTrust::Fingerprint(pin.parse().unwrap()),
        Token::new(&client_token.secret).unwrap(),
    ))
    .await
    .unwrap();
    let agent_token = ca.token("spiffe://example.org/agent", &["--cert-ttl", "30s"]);
    let agent_dir = AgentDir::new(&ca, "agent");
    let out = agent_dir.root.join("out");
    let socket = agent_dir.path("api.sock");
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &url,
            "--ca-fingerprint",
            &pin,
            "--out-dir",
            out.to_str().unwrap(),
            "--socket",
            &socket,
        ],
        &[("WARD_TOKEN", &agent_token.secret)],
    );
    agent.wait_deliveries(1, DEADLINE);
    let source = spiffe::X509Source::builder()
        .endpoint(format!("unix://{socket}"))
        .build()
        .await
        .expect("X509Source connects");
    let td: spiffe::TrustDomain = "example.org".parse().unwrap();

    // What every party holds now: (chain after the leaf, bundle), as
    // SHA-256 lists. The client follows its bundle: the traffic rebuilds
    // its TLS configuration from the rotator for every connection.
    let parties = {
        let rotator = rotator.clone();
        let out = out.clone();
        let source = source.clone();
        move || -> Vec<(&'static str, Vec<String>, Vec<String>)> {
            let svid = rotator.current();
            let agent_chain = std::fs::read_to_string(out.join("svid.pem")).unwrap_or_default();
            let agent_bundle =
                std::fs::read_to_string(out.join("svid_bundle.pem")).unwrap_or_default();
            let (wl_chain, wl_bundle) = match (source.svid(), source.bundle_set()) {
                (Ok(svid), Ok(set)) => (
                    svid.cert_chain()
                        .iter()
                        .skip(1)
                        .map(|c| sha256(c.as_bytes()))
                        .collect(),
                    set.get(&td)
                        .map(|b| {
                            b.authorities()
                                .iter()
                                .map(|c| sha256(c.as_bytes()))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                _ => (Vec::new(), Vec::new()),
            };
            vec![
                (
                    "client",
                    der_fingerprints(&svid.chain()[1..]),
                    der_fingerprints(svid.bundle()),
                ),
                (
                    "agent",
                    fingerprints(&agent_chain).into_iter().skip(1).collect(),
                    fingerprints(&agent_bundle),
                ),
                ("Workload API", wl_chain, wl_bundle),
            ]
        }
    };
    let traffic = {
        let rotator = rotator.clone();
        Traffic::start(gate.addr, move || {
            TlsConnector::from(rotator.client_config().unwrap())
        })
    };
    let tally = traffic.tally.clone();
    let started = traffic.started;
    let gate_chain = || tally.lock().unwrap().gate_chains.last().cloned();

    // 1. A full intermediate rotation under the first root.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let i1b = rotate(&ca, "4s", &[]);
    println!("intermediate rotation at {:?}", started.elapsed());
    wait_for(
        "everyone on the rotated intermediate",
        Duration::from_secs(45),
        || {
            let mut lacking = Vec::new();
            for (who, chain, _) in parties() {
                if chain != [i1b.clone()] {
                    lacking.push(format!("{who} {chain:?}"));
                }
            }
            if gate_chain() != Some(vec![i1b.clone()]) {
                lacking.push(format!("gate {:?}", gate_chain()));
            }
            if lacking.is_empty() {
                Ok(())
            } else {
                Err(lacking.join("; "))
            }
        },
    )
    .await;
    let old_chain = std::fs::read_to_string(out.join("svid.pem")).unwrap();
    let old_at = time::OffsetDateTime::now_utc().unix_timestamp();
    println!(
        "everyone on the rotated intermediate at {:?}",
        started.elapsed()
    );

    // 2. The root rotation: distributed at once, switching after 24 s.
    let (r2, i2) = rotate_root(&ca, "24s");
    let switch_at = Instant::now() + Duration::from_secs(24);
    println!(
        "root rotation at {:?}; switch 24 s later",
        started.elapsed()
    );
    let r2_der = read_der(&ca.file(&format!("roots/{r2}.crt")));
    let nwo_der = read_der(&ca.file(&format!("roots/{r2}.new-with-old.crt")));
    let own_der = read_der(&ca.file(&format!("roots/{r2}.old-with-new.crt")));
    let (nwo, own) = (sha256(&nwo_der), sha256(&own_der));
    // A second rotation of either kind waits for this one.
    let again = ca.ward(&["ca", "rotate", "root", "--overlap", "1s"]);
    assert!(
        !again.status.success(),
        "a second pending rotation is refused"
    );
    assert!(
        again.stderr_text().contains("already pending"),
        "{}",
        again.stderr_text()
    );
    let again = ca.ward(&["ca", "rotate", "intermediate", "--overlap", "1s"]);
    assert!(
        !again.status.success(),
        "an intermediate rotation waits too"
    );

    // Every party holds the next root before anything chains to it.
    let mut seen = Vec::new();
    for _ in 0..25 {
        seen = bundle(&client).await;
        if seen.contains(&r2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen,
        vec![r2.clone(), r1.clone()],
        "the bundle: the next root first"
    );
    wait_for(
        "everyone trusts the next root",
        Duration::from_secs(30),
        || {
            let lacking: Vec<String> = parties()
                .into_iter()
                .filter(|(_, _, b)| !b.contains(&r2))
                .map(|(who, _, b)| format!("{who} {b:?}"))
                .collect();
            if lacking.is_empty() {
                Ok(())
            } else {
                Err(lacking.join("; "))
            }
        },
    )
    .await;
    assert!(
        Instant::now() < switch_at,
        "the next root reached every party before the switch"
    );
    println!("everyone trusts the next root at {:?}", started.elapsed());
    // Meanwhile the old intermediate signs, its chains carrying the old
    // root certified by the new one, and no chain leads to I2 yet.
    let fresh = ca.token("spiffe://example.org/probe", &[]);
    let chain = issue(&ca, &client, &fresh.secret).await;
    assert_eq!(fingerprints(&chain)[1..], [i1b.clone(), own.clone()]);
    let certs = ward_pki::pem::parse_certs(chain.as_bytes()).unwrap();
    let (ok, text) = openssl_verifies_with(
        &ca.scratch("own"),
        &[&r2_der],
        &[&certs[0], &certs[1], &own_der],
    );
    assert!(
        ok,
        "an old chain with OldWithNew verifies against the new root alone: {text}"
    );

    // 3. The switch: everyone moves to I2, chains carrying NewWithOld.
    wait_for(
        "everyone on the new root's intermediate",
        Duration::from_secs(60),
        || {
            let mut lacking = Vec::new();
            for (who, chain, _) in parties() {
                if chain != [i2.clone(), nwo.clone()] {
                    lacking.push(format!("{who} {chain:?}"));
                }
            }
            if gate_chain() != Some(vec![i2.clone(), nwo.clone()]) {
                lacking.push(format!("gate {:?}", gate_chain()));
            }
            if lacking.is_empty() {
                Ok(())
            } else {
                Err(lacking.join("; "))
            }
        },
    )
    .await;
    println!(
        "everyone on the new root's intermediate at {:?}",
        started.elapsed()
    );
    let new_chain = std::fs::read_to_string(out.join("svid.pem")).unwrap();
    let old = ward_pki::pem::parse_certs(old_chain.as_bytes()).unwrap();
    let new = ward_pki::pem::parse_certs(new_chain.as_bytes()).unwrap();
    assert_eq!(new.len(), 3, "leaf, I2, R2 by R1");
    let scratch = ca.scratch("verify");
    let (ok, text) = openssl_verifies_at(&scratch, &[&r1_der], &[&old[0], &old[1]], Some(old_at));
    assert!(ok, "the old chain verifies against the old root: {text}");
    let (ok, text) = openssl_verifies_with(&scratch, &[&r2_der], &[&new[0], &new[1]]);
    assert!(ok, "the new chain verifies against the new root: {text}");
    let (ok, text) = openssl_verifies_with(&scratch, &[&r1_der], &[&new[0], &new[1], &new[2]]);
    assert!(
        ok,
        "the new chain with NewWithOld verifies against the old root alone: {text}"
    );
    let (ok, _) = openssl_verifies_with(&scratch, &[&r1_der], &[&new[0], &new[1]]);
    assert!(
        !ok,
        "without NewWithOld the old root alone does not verify the new chain"
    );
    let (ok, _) = openssl_verifies_at(&scratch, &[&r2_der], &[&old[0], &old[1]], Some(old_at));
    assert!(!ok, "the new root alone does not verify an old chain");

    // 4. Retirement: once the last intermediate of the old root is no
    // longer published (max_ttl after the switch), the old root leaves
    // the bundle and chains lose the rollover certificate; every party
    // follows at its next renewal, the pinned client included.
    wait_for(
        "the old root retired everywhere",
        Duration::from_secs(90),
        || {
            let mut lacking = Vec::new();
            for (who, chain, bundle) in parties() {
                if chain != [i2.clone()] || bundle != [r2.clone()] {
                    lacking.push(format!("{who} {chain:?} {bundle:?}"));
                }
            }
            if gate_chain() != Some(vec![i2.clone()]) {
                lacking.push(format!("gate {:?}", gate_chain()));
            }
            if lacking.is_empty() {
                Ok(())
            } else {
                Err(lacking.join("; "))
            }
        },
    )
    .await;
    println!("the old root retired everywhere at {:?}", started.elapsed());
    assert_eq!(bundle(&client).await, vec![r2.clone()]);
    assert_eq!(published(&client).await, vec![i2.clone()]);
    let renewals = rotator.status().borrow().renewals;
    // The client pinned to the old root renews once more over the CA's
    // certificate that now chains to the new root only.
    wait_for(
        "the pinned client renews after the retirement",
        Duration::from_secs(30),
        || {
            if rotator.status().borrow().renewals > renewals {
                Ok(())
            } else {
                Err(format!("{:?}", rotator.status().borrow()))
            }
        },
    )
    .await;
    let status = ca.ward(&["ca", "rotate", "status"]);
    let status_text = status.stdout_text();
    assert!(
        status_text.contains(&format!("root retired    {r1}")),
        "{status_text}"
    );
    assert!(
        status_text.contains(&format!("root in bundle  {r2}")),
        "{status_text}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = traffic.stop().await;
    t.report(500);
    println!("gate chains in order: {:?}", t.gate_chains);
    agent.terminate();
    drop(rotator);
}

#[tokio::test]
async fn a_pending_root_rotation_is_published_refuses_a_second_and_cancels() {
    ward_tls::install_default_provider();
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = ca.serve();
    let client = ca.client(&server);
    let r1 = sha256(&read_der(&ca.root()));
    let token = ca.token("spiffe://example.org/w", &["--uses", "10"]);

    let (r2, i2) = rotate_root(&ca, "1h");
    let mut roots = Vec::new();
    for _ in 0..50 {
        roots = bundle(&client).await;
        if roots.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(roots, vec![r2.clone(), r1.clone()], "published at once");
    assert!(
        published(&client).await.contains(&i2),
        "its intermediate is listed"
    );
    let chain = issue(&ca, &client, &token.secret).await;
    assert_eq!(
        fingerprints(&chain).len(),
        3,
        "leaf, I1, R1 by R2 during the overlap"
    );
    let status = ca.ward(&["ca", "rotate", "status"]).stdout_text();
    assert!(
        status.contains(&format!("root pending    {r2}")),
        "{status}"
    );
    let key = ca.file(&format!("roots/{r2}.key"));
    assert_eq!(
        crate::agent::procs::mode(&key) & 0o777,
        0o600,
        "the root key is private"
    );

    let second = ca.ward(&["ca", "rotate", "root", "--overlap", "1h"]);
    assert!(!second.status.success());
    assert!(
        second.stderr_text().contains("already pending"),
        "{}",
        second.stderr_text()
    );

    let cancel = ca.ward(&["ca", "rotate", "cancel"]);
    assert!(cancel.status.success(), "{}", cancel.stderr_text());
    for _ in 0..50 {
        roots = bundle(&client).await;
        if roots.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(roots, vec![r1.clone()], "the cancelled root is withdrawn");
    let chain = issue(&ca, &client, &token.secret).await;
    assert_eq!(
        fingerprints(&chain).len(),
        2,
        "no rollover certificate any more"
    );
    let status = ca.ward(&["ca", "rotate", "status"]).stdout_text();
    assert!(
        status.contains(&format!("root cancelled  {r2}")),
        "{status}"
    );
    assert!(
        status.contains(&format!("root in bundle  {r1}")),
        "{status}"
    );
    // A new root rotation may follow the cancelled one.
    let (r3, _) = rotate_root(&ca, "1h");
    assert_ne!(r3, r2);
}
