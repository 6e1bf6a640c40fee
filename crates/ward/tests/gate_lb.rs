//! End-to-end tests of routes with several upstreams (issue 19, item 3:
//! load balancing, health checks, ejection, retries, limits) against real
//! `ward gate serve` processes. The upstreams are real HTTP servers
//! (Python's http.server, `gate_lb/upstream.py`) started and killed as
//! processes; the client is Python's http.client over ssl
//! (`gate_lb/load.py`, also over plain TLS sockets for TCP tenants) or
//! curl. HTTP/2 upstreams are hyper's HTTP/2 server (prior knowledge), run
//! here. Metrics are read from the gate's admin listener.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

mod common;
#[allow(dead_code, unused_imports)] // shared with gate_extra: this binary uses part of it
#[path = "gate_extra/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Pki, sample};
use harness::{Proc, background, call, curl, line_echo, p, pki_with_gate};
use serde_json::Value;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/gate_lb")
        .join(name)
}

/// A Python HTTP upstream process; killed when dropped.
struct Upstream {
    child: Child,
    port: u16,
}

impl Upstream {
    /// Starts upstream `name` on `port` (0: any) and waits until it listens.
    fn start(name: &str, port: u16, state: &Path) -> Upstream {
        Upstream::start_with(name, port, state, &[])
    }

    /// [`Upstream::start`] with extra arguments (certificate and key: HTTPS).
    fn start_with(name: &str, port: u16, state: &Path, extra: &[String]) -> Upstream {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(script("upstream.py"))
            .args([name, &port.to_string(), &p(state)])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the upstream starts");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected upstream line {line:?}"));
        Upstream { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: open connections are reset, new ones refused.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three upstreams `a`, `b`, `c` and their health state directory.
fn three(pki: &Pki) -> (Vec<Upstream>, PathBuf) {
    let state = pki.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let ups = ["a", "b", "c"]
        .iter()
        .map(|n| Upstream::start(n, 0, &state))
        .collect();
    (ups, state)
}

/// Starts a gate with one tenant holding `routes` (TOML).
fn gate(pki: &Pki, gate: &Path, tenant: &str) -> (Proc, SocketAddr, SocketAddr) {
    gate_with(pki, gate, "", tenant)
}

/// [`gate`] with top-level TOML (`head`) before the tables.
fn gate_with(pki: &Pki, gate: &Path, head: &str, tenant: &str) -> (Proc, SocketAddr, SocketAddr) {
    let config = format!(
        r#"
audit_log = "off"
{head}
[listen]
address = "127.0.0.1:0"
admin = "127.0.0.1:0"
[[tenants]]
name = "api"
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}
{tenant}
"#,
        cert = p(&gate.with_extension("crt")),
        key = p(&gate.with_extension("key")),
        ca = p(&pki.root()),
    );
    let path = pki.path("gate.toml");
    std::fs::write(&path, config).unwrap();
    let proc = Proc::spawn(&["gate", "serve", "--config", &p(&path)]);
    let listen = proc.ready("ward gate: listening on ");
    let admin = proc.ready("ward gate: admin on ");
    (proc, listen, admin)
}

fn list(ups: &[&Upstream]) -> String {
    let urls: Vec<String> = ups.iter().map(|u| format!("{:?}", u.url())).collect();
    format!("[{}]", urls.join(", "))
}

fn metrics(admin: SocketAddr) -> String {
    let (status, body) = curl(&[&format!("http://{admin}/metrics")]);
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (polling the metrics, at most `within`) until `series` is `want`.
fn wait_metric(admin: SocketAddr, series: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let text = metrics(admin);
        if sample(&text, series) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is not {want} after {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healthy(route: &str, up: &Upstream) -> String {
    format!(
        "ward_gate_endpoint_healthy{{route=\"{route}\",endpoint=\"{}\"}}",
        up.url()
    )
}

/// `n` sequential GETs of `path` by the client at `client` over one
/// keep-alive connection: (bodies by count, failures).
fn count(
    pki: &Pki,
    gate: SocketAddr,
    client: &Path,
    path: &str,
    n: usize,
) -> (BTreeMap<String, u64>, Vec<String>) {
    let out = Command::new("python3")
        .arg(script("load.py"))
        .args([
            &gate.to_string(),
            &p(&pki.root()),
            &p(&client.with_extension("crt")),
            &p(&client.with_extension("key")),
            path,
            "count",
            &n.to_string(),
        ])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    let bodies = v["bodies"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    let failures = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    (bodies, failures)
}

/// Continuous load from `load.py run`: every result line, as it comes.
struct Load {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    done: Receiver<()>,
}

impl Load {
    fn start(pki: &Pki, gate: SocketAddr, client: &Path, path: &str, threads: usize) -> Load {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(script("load.py"))
            .args([
                &gate.to_string(),
                &p(&pki.root()),
                &p(&client.with_extension("crt")),
                &p(&client.with_extension("key")),
                path,
                "run",
                &threads.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let (tx, done) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "done" {
                    let _ = tx.send(());
                    break;
                }
                seen.lock().unwrap().push(line);
            }
        });
        Load {
            child,
            stdin,
            lines,
            done,
        }
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits until a line after the first `from` satisfies `what`.
    fn wait_for(&self, from: usize, what: impl Fn(&str) -> bool, within: Duration) {
        let deadline = Instant::now() + within;
        let found = || {
            let lines = self.lines.lock().unwrap();
            lines[from.min(lines.len())..].iter().any(|l| what(l))
        };
        while !found() {
            assert!(
                Instant::now() < deadline,
                "no such result within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` results are in.
    fn wait_until_len(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} results after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients and returns every result line.
    fn stop(mut self) -> Vec<String> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        self.done
            .recv_timeout(Duration::from_secs(30))
            .expect("the load stops");
        let _ = self.child.wait();
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CHECKED: &str = r#"
[tenants.routes.balance]
retries = 2
[tenants.routes.balance.health]
path = "/healthz"
interval = "200ms"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 2
[tenants.routes.balance.ejection]
consecutive_failures = 3
ejection_time = "2s"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#;

#[test]
fn one_of_three_killed_under_load_no_request_fails_and_it_returns() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let (mut ups, state) = three(&pki);
    let routes = format!(
        "[[tenants.routes]]\nname = \"api\"\nupstreams = {}\n{CHECKED}",
        list(&ups.iter().collect::<Vec<_>>())
    );
    let (_gate, addr, admin) = gate(&pki, &gate_id, &routes);

    let load = Load::start(&pki, addr, &client, "/id", 4);
    load.wait_for(0, |l| l == "ok b", Duration::from_secs(20));
    load.wait_for(0, |l| l == "ok c", Duration::from_secs(20));

    // b dies under load: its open connections are reset, new ones refused.
    let port = ups[1].port;
    ups[1].kill();
    wait_metric(
        admin,
        &healthy("api", &ups[1]),
        0.0,
        Duration::from_secs(10),
    );
    let out = load.len();
    load.wait_until_len(out + 200, Duration::from_secs(30));
    load.wait_for(out, |l| l == "ok a", Duration::from_secs(10));
    load.wait_for(out, |l| l == "ok c", Duration::from_secs(10));

    // b comes back on its port: health checks put it back into rotation.
    let restart = load.len();
    ups[1] = Upstream::start("b", port, &state);
    wait_metric(
        admin,
        &healthy("api", &ups[1]),
        1.0,
        Duration::from_secs(10),
    );
    let back = load.len();
    load.wait_for(back, |l| l == "ok b", Duration::from_secs(10));
    let lines = load.stop();

    let failures: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok ")).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        lines.len()
    );
    let during: Vec<&String> = lines[out..restart].iter().collect();
    assert!(!during.is_empty());
    assert!(during.iter().all(|l| *l != "ok b"), "b answered while dead");
    let text = metrics(admin);
    let retries = sample(&text, "ward_gate_endpoint_retries_total{route=\"api\"}").unwrap_or(0.0);
    let b_failed: f64 = ["connect_failure", "failure"]
        .iter()
        .filter_map(|r| {
            sample(
                &text,
                &format!(
                    "ward_gate_endpoint_requests_total{{route=\"api\",endpoint=\"{}\",result=\"{r}\"}}",
                    ups[1].url()
                ),
            )
        })
        .sum();
    eprintln!(
        "{} requests, {} while b was down, {retries} retried, {b_failed} failed at b",
        lines.len(),
        during.len()
    );
    // Requests that met the dead b before the checks took it out were
    // sent again to another endpoint: as many retries as failures at b.
    assert!(b_failed >= 1.0, "no request met the dead endpoint:\n{text}");
    assert!(
        retries >= b_failed,
        "{retries} retries for {b_failed} failures"
    );
}

#[test]
fn without_health_checks_a_dead_endpoint_is_ejected_and_retried_around() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let (mut ups, state) = three(&pki);
    let routes = format!(
        r#"
[[tenants.routes]]
name = "api"
upstreams = {}
[tenants.routes.balance.ejection]
consecutive_failures = 2
ejection_time = "1s"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#,
        list(&ups.iter().collect::<Vec<_>>())
    );
    let (_gate, addr, admin) = gate(&pki, &gate_id, &routes);
    let ejected = format!(
        "ward_gate_endpoint_ejected{{route=\"api\",endpoint=\"{}\"}}",
        ups[1].url()
    );
    let load = Load::start(&pki, addr, &client, "/id", 4);
    load.wait_for(0, |l| l == "ok b", Duration::from_secs(20));
    let port = ups[1].port;
    ups[1].kill();
    // Two connection failures in a row eject b; every request that met
    // it was sent again to a or c.
    wait_metric(admin, &ejected, 1.0, Duration::from_secs(10));
    let out = load.len();
    load.wait_until_len(out + 200, Duration::from_secs(30));
    ups[1] = Upstream::start("b", port, &state);
    // Once its ejection is over, b takes requests again.
    let back = load.len();
    load.wait_for(back, |l| l == "ok b", Duration::from_secs(15));
    let lines = load.stop();
    let failures: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok ")).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        lines.len()
    );
    let text = metrics(admin);
    let ejections = format!(
        "ward_gate_endpoint_ejections_total{{route=\"api\",endpoint=\"{}\"}}",
        ups[1].url()
    );
    assert!(sample(&text, &ejections).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(
        sample(&text, "ward_gate_endpoint_retries_total{route=\"api\"}").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    assert_eq!(sample(&text, &ejected), Some(0.0), "{text}");
}

#[test]
fn round_robin_spreads_evenly_and_hash_keeps_each_caller_on_one_endpoint() {
    let (pki, gate_id) = pki_with_gate();
    let (ups, _state) = three(&pki);
    let all = list(&ups.iter().collect::<Vec<_>>());
    let routes = format!(
        r#"
[[tenants.routes]]
name = "rr"
path_prefix = "/rr"
upstreams = {all}
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
[[tenants.routes]]
name = "hash"
path_prefix = "/hash"
upstreams = {all}
[tenants.routes.balance]
policy = "hash_spiffe_id"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    );
    let (_gate, addr, admin) = gate(&pki, &gate_id, &routes);
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);

    let (bodies, failures) = count(&pki, addr, &client, "/rr/x", 30);
    assert!(failures.is_empty(), "{failures:?}");
    let want: BTreeMap<String, u64> = [("a", 10), ("b", 10), ("c", 10)]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    assert_eq!(bodies, want);
    for up in &ups {
        let series = format!(
            "ward_gate_endpoint_requests_total{{route=\"rr\",endpoint=\"{}\",result=\"success\"}}",
            up.url()
        );
        assert_eq!(sample(&metrics(admin), &series), Some(10.0), "{series}");
    }

    // Twelve callers: each always reaches one endpoint, and they spread
    // (all twelve on one of three endpoints: p = 3^-11).
    let mut used = BTreeMap::new();
    for i in 0..12 {
        let caller = pki.issue("client", &format!("spiffe://example.org/ns/caller{i}"), &[]);
        let (bodies, failures) = count(&pki, addr, &caller, "/hash/x", 10);
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(bodies.len(), 1, "caller{i} moved: {bodies:?}");
        let (endpoint, n) = bodies.into_iter().next().unwrap();
        assert_eq!(n, 10);
        *used.entry(endpoint).or_insert(0) += 1;
    }
    assert!(used.len() >= 2, "every caller on one endpoint: {used:?}");
}

#[test]
fn a_full_endpoint_answers_503_with_a_clear_message() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let state = pki.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let up = Upstream::start("a", 0, &state);
    let routes = format!(
        r#"
[[tenants.routes]]
name = "slow"
upstreams = [{:?}]
[tenants.routes.balance]
max_connections = 1
max_pending = 0
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#,
        up.url()
    );
    let (_gate, addr, admin) = gate(&pki, &gate_id, &routes);
    let active = format!(
        "ward_gate_endpoint_active_requests{{route=\"slow\",endpoint=\"{}\"}}",
        up.url()
    );

    let first = {
        let (root, cert, key) = (
            p(&pki.root()),
            p(&client.with_extension("crt")),
            p(&client.with_extension("key")),
        );
        std::thread::spawn(move || {
            curl(&[
                "--cacert",
                &root,
                "--cert",
                &cert,
                "--key",
                &key,
                &format!("https://{addr}/slow?s=3"),
            ])
        })
    };
    wait_metric(admin, &active, 1.0, Duration::from_secs(10));
    let (status, body) = call(&pki, addr, &client, "GET", "/id", &[]);
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "upstream_overloaded", "{body}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("max_connections") && message.contains("\"slow\""),
        "{message}"
    );
    assert!(
        !message.contains("127.0.0.1"),
        "the address leaks: {message}"
    );
    assert_eq!(first.join().unwrap(), (200, "a".to_owned()));
    wait_metric(admin, &active, 0.0, Duration::from_secs(10));
    assert_eq!(
        call(&pki, addr, &client, "GET", "/id", &[]),
        (200, "a".to_owned())
    );
    let overflow = format!(
        "ward_gate_endpoint_requests_total{{route=\"slow\",endpoint=\"{}\",result=\"overflow\"}}",
        up.url()
    );
    assert_eq!(sample(&metrics(admin), &overflow), Some(1.0));
}

#[test]
fn a_failing_health_check_marks_the_endpoint_down_and_takes_it_out() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let (ups, state) = three(&pki);
    let routes = format!(
        "[[tenants.routes]]\nname = \"api\"\nupstreams = {}\n{CHECKED}",
        list(&ups.iter().collect::<Vec<_>>())
    );
    let (_gate, addr, admin) = gate(&pki, &gate_id, &routes);
    wait_metric(admin, &healthy("api", &ups[0]), 1.0, Duration::from_secs(5));

    // a answers 503 on /healthz (it still serves /id).
    std::fs::write(state.join("a.down"), "").unwrap();
    wait_metric(
        admin,
        &healthy("api", &ups[0]),
        0.0,
        Duration::from_secs(10),
    );
    let (bodies, failures) = count(&pki, addr, &client, "/id", 30);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(bodies.get("a"), None, "a is out of rotation: {bodies:?}");
    assert_eq!((bodies.get("b"), bodies.get("c")), (Some(&15), Some(&15)));

    std::fs::remove_file(state.join("a.down")).unwrap();
    wait_metric(
        admin,
        &healthy("api", &ups[0]),
        1.0,
        Duration::from_secs(10),
    );
    let (bodies, failures) = count(&pki, addr, &client, "/id", 30);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(bodies.get("a"), Some(&10), "{bodies:?}");
}

#[test]
fn a_tcp_tenant_connects_past_a_dead_endpoint() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (one, _) = line_echo();
    let (two, _) = line_echo();
    let tenant = format!(
        r#"tcp_upstreams = ["tcp://{dead}", "tcp://{one}", "tcp://{two}"]
[tenants.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    );
    let (gate_proc, addr, admin) = gate(&pki, &gate_id, &tenant);
    let out = Command::new("python3")
        .arg(script("load.py"))
        .args([
            &addr.to_string(),
            &p(&pki.root()),
            &p(&client.with_extension("crt")),
            &p(&client.with_extension("key")),
            "-",
            "tcp",
            "6",
        ])
        .output()
        .expect("python3 runs");
    let got: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}\ngate:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            gate_proc.stderr()
        )
    });
    let want: Vec<String> = (0..6).map(|i| format!("hello {i}")).collect();
    assert_eq!(got, want, "gate:\n{}", gate_proc.stderr());
    let text = metrics(admin);
    let series = |up: &str, result: &str| {
        sample(
            &text,
            &format!(
                "ward_gate_endpoint_requests_total{{route=\"api\",endpoint=\"tcp://{up}\",result=\"{result}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(
        series(&dead.to_string(), "connect_failure") >= 1.0,
        "{text}"
    );
    assert_eq!(
        series(&one.to_string(), "success") + series(&two.to_string(), "success"),
        6.0,
        "{text}"
    );
}

/// An HTTP/2 (prior knowledge) upstream answering `name` to everything.
fn h2_named(name: &'static str) -> SocketAddr {
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    background(move |listener| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // Reads the whole request body before answering, as a real
                // service does: an answer sent while the client is still
                // uploading races the client's upload (the gate closes the
                // HTTP/1.1 connection with unread bytes, and the reset can
                // overtake the answer), which is not what these tests are
                // about.
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<Incoming>| async move {
                        use http_body_util::BodyExt;
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(name),
                        )))
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

#[test]
fn h2_upstreams_share_the_load_and_a_dead_one_is_retried_around() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (x, y) = (h2_named("x"), h2_named("y"));
    let routes = format!(
        r#"
[[tenants.routes]]
name = "grpcish"
protocol = "h2"
upstreams = ["http://{dead}", "http://{x}", "http://{y}"]
[tenants.routes.balance]
policy = "least_request"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    );
    let (_gate, addr, admin) = gate(&pki, &gate_id, &routes);
    let (bodies, failures) = count(&pki, addr, &client, "/any", 30);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(bodies.values().sum::<u64>(), 30, "{bodies:?}");
    assert!(
        bodies.contains_key("x") && bodies.contains_key("y"),
        "{bodies:?}"
    );
    let text = metrics(admin);
    let series = |up: SocketAddr, result: &str| {
        sample(
            &text,
            &format!(
                "ward_gate_endpoint_requests_total{{route=\"grpcish\",endpoint=\"http://{up}\",result=\"{result}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(series(dead, "connect_failure") >= 1.0, "{text}");
    assert_eq!(series(x, "success") + series(y, "success"), 30.0, "{text}");
    // Over curl's own HTTP/2 too.
    let (status, body) = call(&pki, addr, &client, "GET", "/any", &["--http2"]);
    assert_eq!(status, 200);
    assert!(body == "x" || body == "y", "{body}");
}

/// An upstream that switches any request to protocol `echo` and then
/// answers each line as `name:line`.
fn upgrade_named(name: &'static str) -> SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    background(move |listener| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut io = tokio::io::BufReader::new(tcp);
                let mut line = String::new();
                loop {
                    line.clear();
                    match io.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let head = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
                if io.get_mut().write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    line.clear();
                    match io.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let out = format!("{name}:{line}");
                            if io.get_mut().write_all(out.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

#[test]
fn upgrades_on_a_balanced_route_go_to_the_chosen_endpoint() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let (one, two) = (upgrade_named("u1"), upgrade_named("u2"));
    let routes = format!(
        r#"
[[tenants.routes]]
name = "tunnels"
upstreams = ["http://{one}", "http://{two}"]
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    );
    let (_gate, addr, _admin) = gate(&pki, &gate_id, &routes);
    let out = Command::new("python3")
        .arg(script("load.py"))
        .args([
            &addr.to_string(),
            &p(&pki.root()),
            &p(&client.with_extension("crt")),
            &p(&client.with_extension("key")),
            "/tunnel",
            "upgrade",
            "4",
        ])
        .output()
        .expect("python3 runs");
    let got: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut echoed: Vec<&str> = got
        .iter()
        .map(|(status, echo)| {
            assert!(status.starts_with("HTTP/1.1 101"), "{status}");
            echo.as_str()
        })
        .collect();
    echoed.sort_unstable();
    assert_eq!(echoed, ["u1:ping", "u1:ping", "u2:ping", "u2:ping"]);
}

#[test]
fn https_endpoints_are_checked_over_tls_and_balanced() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let server = pki.issue(
        "server",
        "spiffe://example.org/upstream",
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    );
    let state = pki.path("state");
    std::fs::create_dir_all(&state).unwrap();
    // s1 starts failing its checks: it can only come back by passing them
    // over TLS.
    std::fs::write(state.join("s1.down"), "").unwrap();
    let tls = [
        p(&server.with_extension("crt")),
        p(&server.with_extension("key")),
    ];
    let ups: Vec<Upstream> = ["s1", "s2"]
        .iter()
        .map(|n| Upstream::start_with(n, 0, &state, &tls))
        .collect();
    let urls: Vec<String> = ups
        .iter()
        .map(|u| format!("\"https://127.0.0.1:{}\"", u.port))
        .collect();
    let routes = format!(
        "[[tenants.routes]]\nname = \"secure\"\nupstreams = [{}]\n{CHECKED}",
        urls.join(", ")
    );
    let head = format!("[upstream_tls]\nca = {:?}\n", p(&pki.root()));
    let (_gate, addr, admin) = gate_with(&pki, &gate_id, &head, &routes);
    let healthy = |u: &Upstream| {
        format!(
            "ward_gate_endpoint_healthy{{route=\"secure\",endpoint=\"https://127.0.0.1:{}\"}}",
            u.port
        )
    };
    wait_metric(admin, &healthy(&ups[0]), 0.0, Duration::from_secs(10));
    let (bodies, failures) = count(&pki, addr, &client, "/id", 6);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(bodies.get("s2"), Some(&6), "{bodies:?}");

    std::fs::remove_file(state.join("s1.down")).unwrap();
    wait_metric(admin, &healthy(&ups[0]), 1.0, Duration::from_secs(10));
    assert_eq!(sample(&metrics(admin), &healthy(&ups[1])), Some(1.0));
    let (bodies, failures) = count(&pki, addr, &client, "/id", 10);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!((bodies.get("s1"), bodies.get("s2")), (Some(&5), Some(&5)));
}

#[test]
fn a_held_body_is_sent_again_after_a_connect_failure_and_a_large_one_is_not() {
    let (pki, gate_id) = pki_with_gate();
    let client = pki.issue("client", "spiffe://example.org/ns/app", &[]);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let x = h2_named("x");
    // Round robin over [dead, x]: consecutive requests alternate.
    let routes = format!(
        r#"
[[tenants.routes]]
name = "post"
protocol = "h2"
upstreams = ["http://{dead}", "http://{x}"]
[tenants.routes.balance]
retry_body_limit = 1024
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#
    );
    let (_gate, addr, admin) = gate(&pki, &gate_id, &routes);
    let small = pki.path("small.bin");
    std::fs::write(&small, vec![b'a'; 1000]).unwrap();
    let large = pki.path("large.bin");
    std::fs::write(&large, vec![b'b'; 100_000]).unwrap();
    // HTTP/1.1: an HTTP/2 client whose streamed body could not be sent
    // sees its stream reset after the 502 (as on a single-upstream route).
    let post = |file: &Path| {
        call(
            &pki,
            addr,
            &client,
            "POST",
            "/post",
            &["--http1.1", "--data-binary", &format!("@{}", p(file))],
        )
    };
    // Small bodies are held: the one that meets the dead endpoint is
    // sent again to x.
    for _ in 0..2 {
        assert_eq!(post(&small), (200, "x".to_owned()));
    }
    // Large bodies stream: the one that meets the dead endpoint fails.
    let mut statuses = vec![post(&large).0, post(&large).0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502]);
    let text = metrics(admin);
    assert_eq!(
        sample(&text, "ward_gate_endpoint_retries_total{route=\"post\"}"),
        Some(1.0),
        "{text}"
    );
    let failed = format!(
        "ward_gate_endpoint_requests_total{{route=\"post\",endpoint=\"http://{dead}\",result=\"connect_failure\"}}"
    );
    assert_eq!(sample(&text, &failed), Some(2.0), "{text}");
}
