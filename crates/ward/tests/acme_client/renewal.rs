//! Renewal against Pebble with short-lived certificates: under continuous
//! mTLS traffic (not one request may fail), and with the ACME server gone
//! (the current certificate stays in service; failures are retried with
//! backoff, logged and counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::acme_client::gate::{
    AcmeTenant, client_cert, curl, orders, served_serial, stop, wait_for, write_config,
};
use crate::acme_client::pebble::{Pebble, PebbleOptions, free_port, have};
use crate::harness::Gate;
use crate::upstream::Echo;

fn tools() -> bool {
    have("pebble") && have("pebble-challtestsrv") && have("curl") && have("openssl")
}

/// A gate with one tls-alpn-01 tenant `api` against a Pebble issuing
/// certificates valid for `validity` seconds; waits for the first one.
fn setup(validity: u64) -> (Pebble, Echo, tempfile::TempDir, Gate, u16) {
    let gate_port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        http_port: free_port(),
        tls_port: gate_port,
        validity: Some(validity),
    });
    let echo = Echo::start();
    let work = tempfile::tempdir().unwrap();
    let tenants = [AcmeTenant {
        name: "api",
        domain: "api.acme.test",
        challenge: "tls-alpn-01",
        extra: String::new(),
    }];
    let config = write_config(work.path(), gate_port, &pebble, &echo, &tenants);
    let gate = Gate::config(&config);
    crate::acme_client::gate::wait_orders(&gate, "api", "success", 1.0);
    (pebble, echo, work, gate, gate_port)
}

#[test]
fn renews_under_continuous_mtls_traffic_with_zero_failed_requests() {
    if !tools() {
        return;
    }
    // 20 s certificates: renewed 12–13.3 s after issuance.
    let (pebble, _echo, _work, gate, port) = setup(20);
    let root = pebble.issuing_root();
    let client = client_cert(&pebble);
    let first = served_serial(port, "api.acme.test");
    let done = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (done, ok, failed, failures) =
                (done.clone(), ok.clone(), failed.clone(), failures.clone());
            let (root, client) = (root.clone(), client.clone());
            std::thread::spawn(move || {
                // Every request is a new connection: a new handshake that
                // sees whatever certificate is in service at that moment.
                while !done.load(Ordering::SeqCst) {
                    let (code, status, _, err) =
                        curl(&root, Some(&client), "api.acme.test", port, "/t");
                    if code == 0 && status == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{code} {status} {err}"));
                    }
                }
            })
        })
        .collect();
    wait_for(
        &format!("the renewal: {}", gate.stderr()),
        Duration::from_secs(60),
        || orders(&gate.metrics(), "api", "success") >= 2.0,
    );
    let at_renewal = ok.load(Ordering::SeqCst);
    // Keep the traffic going over the new certificate for a while.
    wait_for(
        "requests after the renewal",
        Duration::from_secs(30),
        || ok.load(Ordering::SeqCst) >= at_renewal + 200,
    );
    done.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let second = served_serial(port, "api.acme.test");
    assert_ne!(first, second, "the served certificate did not change");
    let failed = failed.load(Ordering::SeqCst);
    assert_eq!(
        failed,
        0,
        "failed requests: {:?}\n{}",
        failures.lock().unwrap(),
        gate.stderr()
    );
    println!(
        "renewal under traffic: {} requests, {} before the renewal, 0 failed",
        ok.load(Ordering::SeqCst),
        at_renewal
    );
    stop(gate);
}

#[test]
fn the_acme_server_down_at_renewal_keeps_the_current_certificate_and_retries() {
    if !tools() {
        return;
    }
    // 40 s certificates: renewal is due 24–26.7 s after issuance.
    let (mut pebble, _echo, _work, gate, port) = setup(40);
    let root = pebble.issuing_root();
    let client = client_cert(&pebble);
    let serial = served_serial(port, "api.acme.test");
    pebble.kill();
    // Failed attempts are counted; the second one comes after a backoff.
    wait_for(
        &format!("two failed renewals: {}", gate.stderr()),
        Duration::from_secs(60),
        || orders(&gate.metrics(), "api", "failure") >= 2.0,
    );
    let (code, status, _, err) = curl(&root, Some(&client), "api.acme.test", port, "/still");
    assert_eq!((code, status), (0, 200), "{err}\n{}", gate.stderr());
    assert_eq!(served_serial(port, "api.acme.test"), serial);
    let log = gate.stderr();
    assert!(
        log.contains("ACME renewal failed; the current certificate stays in service"),
        "{log}"
    );
    assert!(log.contains("retry_in"), "{log}");
    // The audit log says so too.
    let audit = gate.audit_raw();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("\"acme_certificate\"") && l.contains("\"failed\"")),
        "{audit:?}"
    );
    assert_eq!(orders(&gate.metrics(), "api", "success"), 1.0);
    stop(gate);
}
