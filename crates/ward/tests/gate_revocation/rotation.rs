//! A gate that polls only the CA's `/v1/crl` keeps checking revocation
//! across an intermediate rotation: the CA names the CRL of the next
//! intermediate (`Link: </v1/crl/<sha256>>; rel="related"`) from the moment
//! it is published, so the gate holds that CRL before the first certificate
//! of the new intermediate reaches it. Without this, certificates of a
//! rotated intermediate were accepted unchecked (issuer covered by no CRL).

use super::ca::{CaServer, Issued};
use super::support::{BOUND, full, gate, until_refused};
use crate::harness::wait_until;
use crate::upstream::Echo;

/// SHA-256 (lowercase hex) of the intermediate in an issued chain file.
fn issuer_sha256(issued: &Issued) -> String {
    let pem = std::fs::read(&issued.crt).unwrap();
    let certs = ward_pki::pem::parse_certs(&pem).unwrap();
    ward_pki::Fingerprint::of_der(&certs[1])
        .to_string()
        .replace(':', "")
        .to_lowercase()
}

#[test]
fn a_gate_polling_v1_crl_checks_the_certificates_of_a_rotated_intermediate() {
    let ca = CaServer::start(&[]);
    let echo = Echo::start();
    let crl = ca.crl_url();
    // Polls every second: learns the next intermediate's CRL during the overlap.
    let polling = gate(
        &ca,
        &echo.url(),
        "gate",
        &["--crl", &crl, "--crl-refresh", "1s"],
    );
    // Polls hourly: finds it only because a new intermediate makes it ask.
    let hourly = gate(
        &ca,
        &echo.url(),
        "hourly",
        &["--crl", &crl, "--crl-refresh", "1h"],
    );
    let before = ca.issue("before");
    let initial = issuer_sha256(&before);
    assert_eq!(full(&ca, &before).get_once(polling.addr).unwrap(), 200);

    let out = ca.local(&["ca", "rotate", "intermediate", "--overlap", "4s"]);
    let next = out
        .lines()
        .find_map(|l| l.strip_prefix("Next intermediate: "))
        .expect("the fingerprint is printed")
        .trim()
        .to_owned();
    let sibling = format!("{crl}/{next}");
    // Published before it signs: the gate polls its CRL already.
    polling.wait_metric("ward_gate_crl_refresh_total", &[("source", &sibling)], 1.0);
    assert!(
        polling
            .stderr()
            .contains("CRL source named by its CA; polling it too"),
        "{}",
        polling.stderr()
    );

    // After the switch, a certificate of the new intermediate is revoked
    // before it ever reaches a gate.
    let mut switched = None;
    wait_until("the switch to the next intermediate", || {
        let issued = ca.issue("revoked");
        let done = issuer_sha256(&issued) == next;
        switched = done.then_some(issued);
        done
    });
    let revoked = switched.expect("issued after the switch");
    assert_ne!(next, initial);
    ca.revoke(&revoked.serial);
    let fine = ca.issue("fine");
    assert_eq!(issuer_sha256(&fine), next);

    // The polling gate refuses it (its CRL arrives within a refresh), and
    // the fine one passes, its issuer's CRL in force.
    let (took, e) = until_refused(&full(&ca, &revoked), &polling, BOUND);
    assert!(
        e.to_string().contains("CertificateRevoked"),
        "{took:?}: {e}"
    );
    assert_eq!(full(&ca, &fine).get_once(polling.addr).unwrap(), 200);
    let m = polling.metrics();
    assert!(
        m.sum(
            "ward_gate_crl_refresh_total",
            &[("source", &sibling), ("result", "updated")]
        ) >= 1.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.sum("ward_gate_crl_stale", &[("source", &sibling)]),
        0.0,
        "{}",
        m.0
    );

    // The hourly gate: the first certificate of the new intermediate makes
    // it ask the CA, which names the new CRL; the revoked one is refused
    // well before the next hourly poll.
    assert_eq!(full(&ca, &fine).get_once(hourly.addr).unwrap(), 200);
    let (took, e) = until_refused(&full(&ca, &revoked), &hourly, BOUND);
    assert!(
        e.to_string().contains("CertificateRevoked"),
        "{took:?}: {e}"
    );
    // The old intermediate's certificates are still checked against its CRL.
    ca.revoke(&before.serial);
    let (_, e) = until_refused(&full(&ca, &before), &polling, BOUND);
    assert!(e.to_string().contains("CertificateRevoked"), "{e}");
}
