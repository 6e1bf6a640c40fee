//! `ward quickstart` from an empty directory: the curl command it prints
//! succeeds, the certificate-less one fails, Ctrl-C stops it cleanly, and a
//! second run on the same directory works with the same CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running quickstart and the two commands it printed.
struct Quickstart {
    child: Child,
    with_cert: String,
    without_cert: String,
    stderr: mpsc::Receiver<String>,
}

impl Quickstart {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["quickstart", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (err_tx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let (out_tx, out_rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        // The two commands are the only stdout lines; they come once ready.
        let deadline = Duration::from_secs(60);
        let with_cert = out_rx.recv_timeout(deadline).unwrap_or_else(|_| {
            let log: Vec<String> = stderr.try_iter().collect();
            panic!("quickstart printed no command; stderr:\n{}", log.join("\n"))
        });
        let without_cert = out_rx.recv_timeout(deadline).unwrap();
        Quickstart {
            child,
            with_cert,
            without_cert,
            stderr,
        }
    }

    /// SIGINT (Ctrl-C); returns the exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "quickstart did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a printed command with curl's status code appended.
fn curl(command: &str) -> (Option<i32>, String) {
    assert!(
        command.starts_with("curl "),
        "not a curl command: {command}"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{command} -sS --max-time 20 -w '\\n%{{http_code}}'"
        ))
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn quickstart_from_an_empty_directory_then_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");

    let qs = Quickstart::start(&dir);
    assert!(qs.with_cert.contains("--cert"), "{}", qs.with_cert);
    assert!(!qs.without_cert.contains("--cert"), "{}", qs.without_cert);

    let (code, out) = curl(&qs.with_cert);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with("\n200"), "{out}");
    assert!(
        out.contains("spiffe://quickstart.ward.test/quickstart/client"),
        "the upstream saw the caller's identity: {out}"
    );
    let (code, out) = curl(&qs.without_cert);
    assert_ne!(
        code,
        Some(0),
        "a request without a certificate must fail: {out}"
    );
    assert!(!out.contains("hello"), "{out}");

    // The key is private, the files are where the command says.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("client/svid_key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let status = qs.interrupt();
    assert!(status.success(), "Ctrl-C exits 0: {status}");

    // Again, on the directory the first run left.
    let qs = Quickstart::start(&dir);
    let log: Vec<String> = qs.stderr.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("using the CA")),
        "the second run reuses the CA: {log:?}"
    );
    let (code, out) = curl(&qs.with_cert);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with("\n200"), "{out}");
    assert!(qs.interrupt().success());
}
