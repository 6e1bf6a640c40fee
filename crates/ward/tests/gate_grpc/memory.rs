//! A slow reader bounds the gate's memory, in both directions: a 1 GiB
//! response from nghttpd (a fast HTTP/2 server nobody here wrote) to a
//! client that stops reading, and a 1 GiB upload from curl to an upstream
//! that reads none of it. HTTP/2 flow control end to end must hold the
//! sender back; the gate's resident memory (VmRSS) stays within 64 MiB of
//! where it was.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{DEADLINE, Gate, crt, key};
use crate::support::{Py, Setup, python_has, script, tool};

const SIZE: u64 = 1 << 30;
const BOUND: u64 = 64 << 20;

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// The TCP port `pid` listens on, from /proc (nghttpd does not print the
/// port it bound for port 0); `None` until it listens.
fn listening_port(pid: u32) -> Option<u16> {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
        let link = std::fs::read_link(fd.ok()?.path()).ok()?;
        let link = link.to_string_lossy().into_owned();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            inodes.push(inode.to_owned());
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, st == 0A (LISTEN), inode
        (f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]))
            .then(|| f[1].rsplit_once(':'))
            .flatten()
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
    })
}

struct Nghttpd {
    child: Child,
    port: u16,
}

impl Nghttpd {
    fn start(docroot: &Path) -> Nghttpd {
        let bin = if Path::new("/usr/sbin/nghttpd").exists() {
            "/usr/sbin/nghttpd"
        } else {
            "nghttpd"
        };
        let child = Command::new(bin)
            .args(["--no-tls", "-a", "127.0.0.1", "-d"])
            .arg(docroot)
            .arg("0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nghttpd runs");
        let start = Instant::now();
        let port = loop {
            if let Some(port) = listening_port(child.id()) {
                break port;
            }
            assert!(start.elapsed() < DEADLINE, "nghttpd did not listen");
            std::thread::sleep(Duration::from_millis(20));
        };
        Nghttpd { child, port }
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_client_that_stops_reading_a_1_gib_http2_response_does_not_grow_the_gate() {
    // Debian installs nghttpd in /usr/sbin, which a user's PATH may lack.
    let nghttpd = Path::new("/usr/sbin/nghttpd").exists() || tool("nghttpd", "nghttp2-server");
    if !python_has(&["h2"]) || !nghttpd {
        return;
    }
    let setup = Setup::new();
    let docroot = setup.pki.path("htdocs");
    std::fs::create_dir_all(&docroot).unwrap();
    // Sparse: 1 GiB of zeros without writing 1 GiB.
    let big = std::fs::File::create(docroot.join("big")).unwrap();
    big.set_len(SIZE).unwrap();
    drop(big);
    let upstream = Nghttpd::start(&docroot);
    let routes = format!(
        r#"
[[tenants.routes]]
name = "big"
upstream = "http://127.0.0.1:{}"
protocol = "h2"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#,
        upstream.port
    );
    let gate = Gate::config(&setup.config(&routes, ""));
    let pid = gate.pid();
    let before = rss(pid);

    let mut client = Command::new("python3")
        .arg("-u")
        .arg(script("h2_client.py"))
        .args([&gate.port().to_string(), &setup.root()])
        .args([crt(&setup.app), key(&setup.app)])
        .args(["download", "/big", &(16u64 << 20).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let event = lines.next().unwrap().unwrap();
    assert_eq!(event, "EVENT stalled", "gate: {}", gate.stderr());
    // The client reads nothing now; nghttpd would send the rest in well
    // under a second if nothing held it back. Watch the gate meanwhile
    // (a measurement window, bounded, not a synchronisation).
    let mut peak = before;
    for _ in 0..30 {
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let stalled_peak = peak;
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    drop(stdin);
    // Reading at full speed now: sample until the client is done.
    let reader = std::thread::spawn(move || {
        let line = lines.next().unwrap().unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    });
    let start = Instant::now();
    while !reader.is_finished() {
        peak = peak.max(rss(pid));
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "download did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = reader.join().unwrap();
    assert!(client.wait().unwrap().success());
    assert_eq!(out["status"], "200", "{out}");
    assert_eq!(out["total"], SIZE, "{out}");
    println!(
        "gate VmRSS: {} MiB before, {} MiB peak while stalled, {} MiB peak overall",
        before >> 20,
        stalled_peak >> 20,
        peak >> 20
    );
    assert!(
        peak < before + BOUND,
        "the gate grew from {before} to {peak} bytes\n{}",
        gate.stderr()
    );
}

#[test]
fn a_1_gib_upload_to_an_upstream_that_reads_nothing_does_not_grow_the_gate() {
    if !python_has(&["h2"]) || !tool("curl", "curl") {
        return;
    }
    let setup = Setup::new();
    let upstream = Py::start("h2_sink.py", &[]);
    let routes = format!(
        r#"
[[tenants.routes]]
name = "sink"
upstream = "{}"
protocol = "h2"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
"#,
        upstream.url()
    );
    let gate = Gate::config(&setup.config(&routes, ""));
    let pid = gate.pid();
    let before = rss(pid);
    // Sparse: 1 GiB of zeros without writing 1 GiB; curl streams it (-T).
    let file = setup.pki.path("upload.bin");
    std::fs::File::create(&file).unwrap().set_len(SIZE).unwrap();
    let mut client = Command::new("curl")
        .args(["-sS", "--http2", "-o", "/dev/null", "-T"])
        .arg(&file)
        .args(["--cacert", &setup.root(), "--cert", &crt(&setup.app)])
        .args(["--key", &key(&setup.app)])
        .arg(format!("{}/upload", gate.url()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    upstream.wait_event("headers");
    // curl could send the whole gigabyte in about a second if nothing held
    // it back. Watch the gate meanwhile (a measurement window, bounded,
    // not a synchronisation).
    let mut peak = before;
    for _ in 0..30 {
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let still_uploading = client.try_wait().unwrap().is_none();
    let _ = client.kill();
    let _ = client.wait();
    let received: u64 = upstream
        .printed()
        .iter()
        .filter_map(|l| l.strip_prefix("RECEIVED "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0);
    println!(
        "gate VmRSS: {} MiB before, {} MiB peak; the upstream got {received} bytes",
        before >> 20,
        peak >> 20
    );
    assert!(
        still_uploading,
        "curl finished: the upload was not held back"
    );
    // The upstream's windows (64 KiB) are all it can have been sent.
    assert!(received <= 65_535, "the upstream got {received} bytes");
    assert!(
        peak < before + BOUND,
        "the gate grew from {before} to {peak} bytes\n{}",
        gate.stderr()
    );
}
