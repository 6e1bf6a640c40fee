//! Helpers shared by the end-to-end tests: run `ward`, make a CA, ask openssl.

#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers: a failure is a broken test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) mod acme_tools;
pub(crate) mod nginx;

/// Output with text accessors.
pub(crate) trait OutputText {
    /// stdout as UTF-8 (lossy).
    fn stdout_text(&self) -> String;
    /// stderr as UTF-8 (lossy).
    fn stderr_text(&self) -> String;
}

impl OutputText for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs the `ward` binary under test.
pub(crate) fn ward(args: &[&str]) -> Output {
    ward_env(args, &[])
}

/// Runs the `ward` binary under test with extra environment variables
/// (`SOFTHSM2_CONF` of a test's own token directory).
pub(crate) fn ward_env(args: &[&str], envs: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("the ward binary runs")
}

/// `openssl verify` of `chain`'s first certificate for `purpose`, using
/// the rest of `chain` as untrusted intermediates. Returns (ok, output).
pub(crate) fn openssl_verify(root: &Path, chain: &Path, purpose: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(chain)
        .args(["-purpose", purpose])
        .arg(chain)
        .output()
        .expect("openssl runs");
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    (out.status.success(), text)
}

/// A temporary directory holding a CA at `ca/`.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: String,
}

impl Pki {
    /// A temporary directory with no CA yet (`ca_dir()` names where it would go).
    pub(crate) fn empty() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir
            .path()
            .join("ca")
            .to_str()
            .expect("utf-8 path")
            .to_owned();
        Pki { dir, ca }
    }

    /// A fresh CA for trust domain example.org, with extra `ca init` flags.
    pub(crate) fn init(extra: &[&str]) -> Self {
        Pki::empty().init_here(extra, &[])
    }

    /// Creates the CA of this (empty) directory, running `ward ca init`
    /// with extra flags and environment variables.
    pub(crate) fn init_here(self, extra: &[&str], envs: &[(String, String)]) -> Self {
        let pki = self;
        let mut args = vec![
            "ca",
            "init",
            "--dir",
            &pki.ca,
            "--trust-domain",
            "example.org",
        ];
        args.extend_from_slice(extra);
        let out = ward_env(&args, envs);
        assert!(
            out.status.success(),
            "ca init failed: {}",
            out.stderr_text()
        );
        pki
    }

    /// The CA directory.
    pub(crate) fn ca_dir(&self) -> &str {
        &self.ca
    }

    /// A path inside the temporary directory.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The root certificate.
    pub(crate) fn root(&self) -> PathBuf {
        self.path("ca/root.crt")
    }

    /// Issues a certificate and returns its prefix (`.crt`/`.key` beside it).
    pub(crate) fn issue(&self, profile: &str, spiffe_id: &str, extra: &[&str]) -> PathBuf {
        let name = spiffe_id.rsplit('/').next().unwrap_or("leaf");
        let prefix = self.path(&format!("{profile}-{name}"));
        let mut args = vec![
            "cert",
            "create",
            "--ca-dir",
            &self.ca,
            "--profile",
            profile,
            "--spiffe-id",
            spiffe_id,
            "--out",
            prefix.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        let out = ward(&args);
        assert!(
            out.status.success(),
            "cert create failed: {}",
            out.stderr_text()
        );
        prefix
    }

    /// Every file under the directory, for "nothing was written" checks.
    pub(crate) fn listing(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
                let path = entry.path();
                out.push(path.clone());
                if path.is_dir() {
                    walk(&path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out.sort();
        out
    }
}

/// A metric sample's value from Prometheus text (`name{labels}`, exact).
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}
