//! Hot reload under load (file changes and SIGHUP), rejection of a garbage
//! certificate, and draining on SIGTERM.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clients::{RustClient, curl_as};
use crate::harness::{
    Gate, Pki, crt, file_serial, key, mint, s, served_serial, server_cert, wait_until,
};
use crate::upstream::Echo;

const RELOADS: &str = "ward_gate_reloads_total";

/// Replaces `to` atomically: write a sibling, then rename it over.
fn replace(to: &Path, contents: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = to.with_extension("new");
    // Private from the first byte, as a key must be for the gate to load it.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents))
        .unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// A client loop: a new TLS connection per request until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    serials: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(client: RustClient, addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let serials = Arc::new(Mutex::new(BTreeSet::new()));
        let (st, o, f, se) = (stop.clone(), ok.clone(), failures.clone(), serials.clone());
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            // Bounded: stops when told to, or after a minute at most.
            while !st.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                match client.get(addr, "/load") {
                    Ok(r) if r.status == 200 => {
                        se.lock().unwrap().insert(r.server_serial);
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => f.lock().unwrap().push(format!("status {}", r.status)),
                    Err(e) => f.lock().unwrap().push(e),
                }
            }
        });
        Load {
            stop,
            ok,
            failures,
            serials,
            thread: Some(thread),
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have succeeded.
    fn wait_more(&self, n: usize) {
        let target = self.ok() + n;
        wait_until(&format!("{target} successful requests"), || {
            let failures = self.failures.lock().unwrap();
            assert!(failures.is_empty(), "requests failed: {failures:?}");
            self.ok() >= target
        });
    }

    fn stop(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (self.ok(), self.failures.lock().unwrap().clone())
    }
}

#[test]
fn reload_under_load_fails_no_request_and_a_garbage_certificate_is_rejected() {
    let echo = Echo::start();
    let (pki, other) = (Pki::init(&[]), Pki::init(&[]));
    let first = server_cert(&pki, "spiffe://example.org/gate", "first");
    let second = server_cert(&pki, "spiffe://example.org/gate", "second");
    let client = mint(&pki, "client", "spiffe://example.org/ns/app", "app", &[]);
    let newcomer = mint(
        &other,
        "client",
        "spiffe://example.org/ns/newcomer",
        "newcomer",
        &[],
    );
    let live = pki.path("live");
    std::fs::create_dir(&live).unwrap();
    let (live_crt, live_key, live_ca) = (
        live.join("server.crt"),
        live.join("server.key"),
        live.join("clients.pem"),
    );
    std::fs::copy(first.with_extension("crt"), &live_crt).unwrap();
    std::fs::copy(first.with_extension("key"), &live_key).unwrap();
    std::fs::copy(pki.root(), &live_ca).unwrap();
    let up = echo.url();
    let gate = Gate::flags(&[
        "--cert",
        &s(&live_crt),
        "--key",
        &s(&live_key),
        "--client-ca",
        &s(&live_ca),
        "--upstream",
        &up,
        "--allow-spiffe-id",
        "spiffe://example.org/ns/*",
    ]);
    let (first_serial, second_serial) = (file_serial(&crt(&first)), file_serial(&crt(&second)));
    assert_eq!(served_serial(gate.addr), first_serial);

    let load = Load::start(
        RustClient::new(&pki.root(), &crt(&client), &key(&client)),
        gate.addr,
    );
    load.wait_more(20);

    // 1. A new server certificate and key, each renamed over the old file.
    replace(
        &live_key,
        &std::fs::read(second.with_extension("key")).unwrap(),
    );
    replace(
        &live_crt,
        &std::fs::read(second.with_extension("crt")).unwrap(),
    );
    wait_until("the new server certificate to be served", || {
        served_serial(gate.addr) == second_serial
    });
    wait_until("the load loop to see the new serial", || {
        load.serials.lock().unwrap().contains(&second_serial)
    });
    load.wait_more(20);

    // 2. A client CA bundle that adds another CA and keeps the clients' root.
    let newcomer_client = RustClient::new(&pki.root(), &crt(&newcomer), &key(&newcomer));
    assert!(
        newcomer_client.get(gate.addr, "/").is_err(),
        "another CA's client got in before the reload"
    );
    let bundle = [
        std::fs::read(pki.root()).unwrap(),
        std::fs::read(other.root()).unwrap(),
    ]
    .concat();
    replace(&live_ca, &bundle);
    wait_until(
        "the new client CA bundle to admit the other CA's client",
        || {
            newcomer_client
                .get(gate.addr, "/")
                .is_ok_and(|r| r.status == 200)
        },
    );
    load.wait_more(20);

    // 3. SIGHUP.
    let reloaded = gate.metrics().sum(RELOADS, &[("result", "success")]);
    assert!(reloaded >= 2.0, "{reloaded}");
    gate.signal("HUP");
    gate.wait_metric(RELOADS, &[("result", "success")], reloaded + 1.0);
    load.wait_more(20);

    // 4. Garbage in place of the certificate: rejected on change and on
    // SIGHUP, counted, logged, and the old certificate stays in force.
    let failed = gate.metrics().sum(RELOADS, &[("result", "failure")]);
    replace(
        &live_crt,
        b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
    );
    gate.wait_metric(RELOADS, &[("result", "failure")], failed + 1.0);
    gate.signal("HUP");
    gate.wait_metric(RELOADS, &[("result", "failure")], failed + 2.0);
    load.wait_more(20);
    assert_eq!(served_serial(gate.addr), second_serial);
    let r = curl_as(
        &s(&pki.root()),
        &crt(&client),
        &key(&client),
        &[&gate.url()],
    );
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert!(
        gate.stderr().contains("reload rejected"),
        "{}",
        gate.stderr()
    );

    let (ok, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(ok >= 100, "{ok}");
    eprintln!("reload under load: {ok} requests, 0 failed");
    gate.finish();
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_and_exits_zero() {
    let echo = Echo::start();
    let pki = Pki::init(&[]);
    let server = server_cert(&pki, "spiffe://example.org/gate", "gate");
    let client = mint(&pki, "client", "spiffe://example.org/ns/app", "app", &[]);
    let (c, k, r, up) = (crt(&server), key(&server), s(&pki.root()), echo.url());
    let mut gate = Gate::flags(&[
        "--cert",
        &c,
        "--key",
        &k,
        "--client-ca",
        &r,
        "--upstream",
        &up,
        "--allow-spiffe-id",
        "spiffe://example.org/ns/*",
    ]);
    let slow_url = format!("{}/slow", gate.url());
    let (cc, ck, root) = (crt(&client), key(&client), r.clone());
    let slow = std::thread::spawn(move || curl_as(&root, &cc, &ck, &[&slow_url]));
    echo.wait_slow_started();

    gate.signal("TERM");
    // Draining: the listener closes while the slow request is still open.
    wait_until("the listener to close", || {
        std::net::TcpStream::connect(gate.addr).is_err()
    });
    assert!(gate.running(), "the gate exited with a request in flight");
    echo.release_slow();
    let done = slow.join().unwrap();
    assert_eq!((done.code, done.status), (0, 200), "{done:?}");
    assert_eq!(done.json()["path"], "/slow");
    let status = gate.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", gate.stderr());
    let audit = gate.audit_lines();
    assert!(
        audit
            .iter()
            .any(|v| v["event"] == "request" && v["path"] == "/slow" && v["status"] == 200),
        "{audit:?}"
    );
}

/// One version of a Kubernetes Secret volume: `..TIMESTAMP/` with the files.
fn secret_version(dir: &Path, stamp: &str, pair: &Path) {
    let version = dir.join(stamp);
    std::fs::create_dir(&version).unwrap();
    std::fs::copy(pair.with_extension("crt"), version.join("tls.crt")).unwrap();
    std::fs::copy(pair.with_extension("key"), version.join("tls.key")).unwrap();
}

/// Issue 14 item 4 (ARCHITECTURE.md trap 16): kubelet never touches the
/// visible files of a mounted Secret; `tls.crt` and `tls.key` are symlinks
/// through `..data`, and an update renames a new `..data` symlink over the
/// old one. The gate must serve the new certificate within 2 s, with no
/// failed request from a client hammering it meanwhile.
#[test]
fn a_kubernetes_secret_swap_is_served_within_two_seconds_without_a_failed_request() {
    let echo = Echo::start();
    let pki = Pki::init(&[]);
    let first = server_cert(&pki, "spiffe://example.org/gate", "first");
    let second = server_cert(&pki, "spiffe://example.org/gate", "second");
    let client = mint(&pki, "client", "spiffe://example.org/ns/app", "app", &[]);
    let secret = pki.path("secret");
    std::fs::create_dir(&secret).unwrap();
    let (old, new) = (
        "..2026_12_07_10_00_00.000000001",
        "..2026_12_07_10_05_00.000000002",
    );
    secret_version(&secret, old, &first);
    std::os::unix::fs::symlink(old, secret.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), secret.join(name)).unwrap();
    }
    let up = echo.url();
    let root = s(&pki.root());
    let gate = Gate::flags(&[
        "--cert",
        &s(&secret.join("tls.crt")),
        "--key",
        &s(&secret.join("tls.key")),
        "--client-ca",
        &root,
        "--upstream",
        &up,
        "--allow-spiffe-id",
        "spiffe://example.org/ns/*",
    ]);
    let (first_serial, second_serial) = (file_serial(&crt(&first)), file_serial(&crt(&second)));
    assert_eq!(served_serial(gate.addr), first_serial);
    let load = Load::start(
        RustClient::new(&pki.root(), &crt(&client), &key(&client)),
        gate.addr,
    );
    load.wait_more(20);

    // kubelet's update: new directory, `..data_tmp` → it, renamed over
    // `..data`, the old directory removed.
    secret_version(&secret, new, &second);
    std::os::unix::fs::symlink(new, secret.join("..data_tmp")).unwrap();
    let swapped = Instant::now();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    std::fs::remove_dir_all(secret.join(old)).unwrap();
    while !load.serials.lock().unwrap().contains(&second_serial) {
        assert!(
            swapped.elapsed() < Duration::from_secs(2),
            "the new certificate was not served within 2 s: {}",
            gate.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = swapped.elapsed();
    assert_eq!(served_serial(gate.addr), second_serial);
    load.wait_more(20);
    let (ok, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    eprintln!("secret swap: new serial served after {took:?}; {ok} requests, 0 failed");
    gate.finish();
}
