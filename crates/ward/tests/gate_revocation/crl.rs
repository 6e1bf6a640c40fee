//! CRL enforcement: refusal within 3 s of `ward revoke` for new, resumed
//! and open (keep-alive, TCP) connections; a file source; foreign and
//! malformed CRLs rejected while the old one stays; fail-closed and
//! fail-open past nextUpdate; a token's kill switch; refusal on a chain
//! cache hit.

use std::time::{Duration, Instant};

use super::ca::CaServer;
use super::support::{BOUND, full, gate, python_crl, replace_file, resuming, until_refused};
use crate::common::Pki;
use crate::harness::{Gate, wait_until};
use crate::upstream::{Echo, LineEcho};

const HANDSHAKES: &str = "ward_gate_handshakes_total";

fn metric(gate: &Gate, name: &str, labels: &[(&str, &str)]) -> f64 {
    gate.metrics().sum(name, labels)
}

#[test]
fn a_revoked_client_is_refused_within_3s_and_its_open_connections_stop_working() {
    let ca = CaServer::start(&[]);
    let echo = Echo::start();
    let crl = ca.crl_url();
    let gate = gate(
        &ca,
        &echo.url(),
        "gate",
        &["--crl", &crl, "--crl-refresh", "1s"],
    );
    let a = ca.issue("a");
    let b = ca.issue("b");
    let a_resuming = resuming(&ca, &a);
    let a_full = full(&ca, &a);
    let b_full = full(&ca, &b);

    // A keep-alive connection, and a second one that resumed a session.
    let mut keep = a_resuming.connect(gate.addr).unwrap();
    assert!(!keep.resumed());
    assert_eq!(keep.get("/").unwrap(), 200);
    let mut resumed = a_resuming.connect(gate.addr).unwrap();
    assert!(resumed.resumed(), "the client resumed a TLS 1.3 session");
    assert_eq!(resumed.get("/").unwrap(), 200);
    assert_eq!(b_full.get_once(gate.addr).unwrap(), 200);
    // Conditional GET: the unchanged CRL comes back as 304.
    gate.wait_metric(
        "ward_gate_crl_refresh_total",
        &[("result", "not_modified")],
        1.0,
    );

    ca.revoke(&a.serial);
    let revoked = Instant::now();
    // The client goes on requesting every 200 ms: on its open connections,
    // on new full handshakes and on new resumed sessions.
    let (mut keep_dead, mut resumed_dead, mut full_dead, mut resume_dead) =
        (None, None, None, None);
    while keep_dead.is_none()
        || resumed_dead.is_none()
        || full_dead.is_none()
        || resume_dead.is_none()
    {
        let t = revoked.elapsed();
        assert!(
            t < BOUND,
            "after {t:?}: keep-alive {keep_dead:?}, resumed {resumed_dead:?}, full {full_dead:?}, new resumed {resume_dead:?}\n{}",
            gate.stderr()
        );
        if keep_dead.is_none() && keep.get("/").is_err() {
            keep_dead = Some(t);
        }
        if resumed_dead.is_none() && resumed.get("/").is_err() {
            resumed_dead = Some(t);
        }
        if full_dead.is_none() && a_full.get_once(gate.addr).is_err() {
            full_dead = Some(t);
        }
        if resume_dead.is_none() {
            match a_resuming.connect(gate.addr) {
                Err(_) => resume_dead = Some(t),
                Ok(mut c) => {
                    if c.get("/").is_err() {
                        resume_dead = Some(t);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // From now on a full handshake is refused with the certificate_revoked
    // alert (the first failure above may have been a connection accepted
    // just before the CRL update, then closed by it), and a session resumed
    // after the revocation is refused right after its handshake (trap 6).
    let e = a_full.get_once(gate.addr).unwrap_err();
    assert!(e.to_string().contains("CertificateRevoked"), "{e}");
    let mut late = a_resuming.connect(gate.addr).unwrap();
    assert!(late.resumed(), "the client still holds a session ticket");
    assert!(late.get("/").is_err(), "a resumed session must not work");
    // Another client is unaffected.
    assert_eq!(b_full.get_once(gate.addr).unwrap(), 200);

    // Depending on when the CRL arrived, a new resumed session was refused
    // right after its handshake or closed with the open connections.
    let m = gate.metrics();
    assert!(
        m.sum(HANDSHAKES, &[("result", "failure"), ("reason", "revoked")]) >= 1.0,
        "{}",
        m.0
    );
    assert!(
        m.sum(
            "ward_gate_revocation_closed_total",
            &[("reason", "revoked")]
        ) >= 2.0,
        "{}",
        m.0
    );
    assert!(m.sum("ward_gate_crl_refresh_total", &[("result", "updated")]) >= 2.0);
    assert_eq!(m.sum("ward_gate_crl_entries", &[]), 1.0);
    assert_eq!(m.sum("ward_gate_crl_stale", &[]), 0.0);
    let audit = gate.audit_lines();
    assert!(audit.iter().any(|l| l["event"] == "connection"
        && l["result"] == "closed"
        && l["reason"] == "revoked"));
    assert!(audit.iter().any(|l| l["event"] == "handshake"
        && l["result"] == "refused"
        && l["reason"] == "revoked"));
}

#[test]
fn a_tcp_connection_is_closed_when_its_certificate_is_revoked() {
    let ca = CaServer::start(&[]);
    let echo = LineEcho::start();
    let upstream = format!("tcp://{}", echo.addr);
    let crl = ca.crl_url();
    let gate = gate(
        &ca,
        &upstream,
        "gate",
        &["--crl", &crl, "--crl-refresh", "1s"],
    );
    let a = ca.issue("a");
    let mut conn = full(&ca, &a).connect(gate.addr).unwrap();
    assert_eq!(conn.line("hello").unwrap(), "echo: hello");
    ca.revoke(&a.serial);
    let revoked = Instant::now();
    while conn.line("ping").is_ok() {
        assert!(revoked.elapsed() < BOUND, "{}", gate.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(metric(&gate, "ward_gate_revocation_closed_total", &[]) >= 1.0);
}

#[test]
fn a_file_source_is_picked_up_and_foreign_or_broken_crls_leave_it_in_force() {
    let ca = CaServer::start(&[]);
    let echo = Echo::start();
    let file = ca.scratch("gate.crl");
    replace_file(&file, &ca.fetch_crl());
    let path = file.to_str().unwrap().to_owned();
    let gate = gate(
        &ca,
        &echo.url(),
        "gate",
        &["--crl", &path, "--crl-refresh", "1s"],
    );
    let a = ca.issue("a");
    let b = ca.issue("b");
    let (a_full, b_full) = (full(&ca, &a), full(&ca, &b));
    assert_eq!(a_full.get_once(gate.addr).unwrap(), 200);

    ca.revoke(&a.serial);
    replace_file(&file, &ca.fetch_crl());
    until_refused(&a_full, &gate, BOUND);
    let e = a_full.get_once(gate.addr).unwrap_err();
    assert!(e.to_string().contains("CertificateRevoked"), "{e}");

    // A CRL signed by another CA with the same names (Python's
    // `cryptography` signs it with the foreign intermediate's key): not
    // trusted, counted, and the CRL in force stays.
    let foreign = Pki::init(&[]);
    let dir = foreign.ca_dir().to_owned();
    let empty = python_crl(
        &format!("{dir}/intermediate.crt"),
        &format!("{dir}/intermediate.key"),
        1_000_000,
        5,
        3600,
        &[],
    );
    replace_file(&file, &empty);
    gate.wait_metric(
        "ward_gate_crl_refresh_total",
        &[("result", "untrusted")],
        1.0,
    );
    assert!(
        a_full.get_once(gate.addr).is_err(),
        "the old CRL stays in force"
    );
    assert_eq!(b_full.get_once(gate.addr).unwrap(), 200);
    assert!(
        gate.stderr().contains("CRL not accepted"),
        "{}",
        gate.stderr()
    );

    // Garbage: malformed, the old CRL stays.
    replace_file(
        &file,
        b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
    );
    gate.wait_metric(
        "ward_gate_crl_refresh_total",
        &[("result", "malformed")],
        1.0,
    );
    assert!(a_full.get_once(gate.addr).is_err());

    // Our own CA's CRL, signed by Python with our intermediate's key and
    // listing nothing, replaces the CA's CRL only if its number is not older.
    let ours = |number: u64| {
        python_crl(
            &ca.file("intermediate.crt"),
            &ca.file("intermediate.key"),
            number,
            5,
            3600,
            &[],
        )
    };
    replace_file(&file, &ours(1));
    gate.wait_metric(
        "ward_gate_crl_refresh_total",
        &[("result", "rollback")],
        1.0,
    );
    assert!(a_full.get_once(gate.addr).is_err());
    // The CA's CRL numbers follow the clock in microseconds; 2^62 is later.
    replace_file(&file, &ours(1 << 62));
    wait_until("the newer empty CRL", || a_full.get_once(gate.addr).is_ok());
}

#[test]
fn past_next_update_the_gate_fails_closed_or_open_as_configured() {
    // CRLs valid for 6 s, re-signed every 4 s while the CA runs.
    let mut ca = CaServer::start(&[("crl_validity", "\"6s\""), ("crl_refresh", "\"2s\"")]);
    let echo = Echo::start();
    let crl = ca.crl_url();
    let closed = gate(
        &ca,
        &echo.url(),
        "closed",
        &["--crl", &crl, "--crl-refresh", "1s"],
    );
    let open = gate(
        &ca,
        &echo.url(),
        "open",
        &["--crl", &crl, "--crl-refresh", "1s", "--crl-fail-open"],
    );
    let a = ca.issue("a");
    let client = full(&ca, &a);
    assert_eq!(client.get_once(closed.addr).unwrap(), 200);
    assert_eq!(client.get_once(open.addr).unwrap(), 200);
    let mut keep = client.connect(closed.addr).unwrap();
    assert_eq!(keep.get("/").unwrap(), 200);

    ca.kill();
    let (_, e) = until_refused(&client, &closed, Duration::from_secs(12));
    assert!(!e.to_string().contains("CertificateRevoked"), "{e}");
    // The housekeeping tick (1 s) reports the staleness and closes open
    // connections.
    closed.wait_metric("ward_gate_crl_stale", &[], 1.0);
    let m = closed.metrics();
    assert!(
        m.sum(
            HANDSHAKES,
            &[("result", "failure"), ("reason", "crl_stale")]
        ) >= 1.0,
        "{}",
        m.0
    );
    assert!(m.sum("ward_gate_crl_next_update_seconds", &[]) < 0.0);
    assert!(m.sum("ward_gate_crl_refresh_total", &[("result", "fetch_failed")]) >= 1.0);
    // Open connections close too (fail-closed): condemned before the gauge
    // flips, closed by their own task a moment later.
    wait_until("the kept connection to close", || keep.get("/").is_err());
    assert!(
        closed.stderr().contains("fail-closed"),
        "{}",
        closed.stderr()
    );

    // The fail-open gate (its CRL may be a little younger) accepts, counts
    // and says so.
    open.wait_metric("ward_gate_crl_stale", &[], 1.0);
    assert_eq!(client.get_once(open.addr).unwrap(), 200);
    let m = open.metrics();
    assert!(
        m.sum("ward_gate_crl_stale_accepts_total", &[]) >= 1.0,
        "{}",
        m.0
    );
    assert!(open.stderr().contains("fail-open"), "{}", open.stderr());
}

#[test]
fn revoking_a_token_with_its_certificates_refuses_every_one_of_them() {
    let ca = CaServer::start(&[]);
    let echo = Echo::start();
    let crl = ca.crl_url();
    let gate = gate(
        &ca,
        &echo.url(),
        "gate",
        &["--crl", &crl, "--crl-refresh", "1s"],
    );
    let (token, id) = ca.token("spiffe://example.org/fn", &["--uses", "3"]);
    let clients: Vec<_> = (0..3)
        .map(|i| full(&ca, &ca.issue_with(&token, &format!("fn{i}"))))
        .collect();
    let other = full(&ca, &ca.issue("other"));
    for c in &clients {
        assert_eq!(c.get_once(gate.addr).unwrap(), 200);
    }
    ca.revoke_token_with_certificates(&id);
    let revoked = Instant::now();
    for c in &clients {
        let left = BOUND.saturating_sub(revoked.elapsed());
        until_refused(c, &gate, left);
        let e = c.get_once(gate.addr).unwrap_err();
        assert!(e.to_string().contains("CertificateRevoked"), "{e}");
    }
    assert_eq!(other.get_once(gate.addr).unwrap(), 200);
    assert_eq!(metric(&gate, "ward_gate_crl_entries", &[]), 3.0);
}

#[test]
fn a_revoked_client_is_refused_though_its_chain_is_in_the_chain_cache() {
    const CACHE: &str = "ward_gate_verify_cache_total";
    let ca = CaServer::start(&[]);
    let echo = Echo::start();
    let crl = ca.crl_url();
    let gate = gate(
        &ca,
        &echo.url(),
        "gate",
        &["--crl", &crl, "--crl-refresh", "1s"],
    );
    let a = ca.issue("a");
    let a_full = full(&ca, &a);
    for _ in 0..3 {
        assert_eq!(a_full.get_once(gate.addr).unwrap(), 200);
    }
    let m = gate.metrics();
    let misses = m.sum(CACHE, &[("result", "miss")]);
    assert_eq!(misses, 1.0, "the first handshake validates: {}", m.0);
    assert_eq!(m.sum(CACHE, &[("result", "hit")]), 2.0, "{}", m.0);

    ca.revoke(&a.serial);
    let _ = until_refused(&a_full, &gate, BOUND);
    // The refusal is the CRL's, on a cache hit: the chain is not validated
    // again, its revocation status is.
    let hits = metric(&gate, CACHE, &[("result", "hit")]);
    let e = a_full.get_once(gate.addr).unwrap_err();
    assert!(e.to_string().contains("CertificateRevoked"), "{e}");
    let m = gate.metrics();
    assert_eq!(m.sum(CACHE, &[("result", "hit")]), hits + 1.0, "{}", m.0);
    assert_eq!(m.sum(CACHE, &[("result", "miss")]), misses, "{}", m.0);
    assert!(m.sum(HANDSHAKES, &[("result", "failure"), ("reason", "revoked")]) >= 1.0);
    // Another client of the same CA is unaffected, and validated once.
    let b = ca.issue("b");
    assert_eq!(full(&ca, &b).get_once(gate.addr).unwrap(), 200);
    assert_eq!(metric(&gate, CACHE, &[("result", "miss")]), misses + 1.0);
}
