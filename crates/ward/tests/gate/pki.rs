//! Certificates for the tests: minted with `ward cert create`, judged with
//! openssl and `ward cert inspect`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{OutputText, Pki, ward};

/// `ward cert create --ca-dir CA --profile P --spiffe-id ID --out DIR/NAME EXTRA…`;
/// returns the prefix (`.crt`/`.key` beside it).
pub(crate) fn mint(pki: &Pki, profile: &str, id: &str, name: &str, extra: &[&str]) -> PathBuf {
    let prefix = pki.path(name);
    let mut args = vec![
        "cert",
        "create",
        "--ca-dir",
        pki.ca_dir(),
        "--profile",
        profile,
        "--spiffe-id",
        id,
        "--out",
        prefix.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = ward(&args);
    assert!(out.status.success(), "cert create: {}", out.stderr_text());
    prefix
}

/// A server certificate for `localhost` and 127.0.0.1.
pub(crate) fn server_cert(pki: &Pki, id: &str, name: &str) -> PathBuf {
    mint(
        pki,
        "server",
        id,
        name,
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    )
}

/// `PREFIX.crt` / `PREFIX.key` as strings.
pub(crate) fn crt(prefix: &Path) -> String {
    prefix.with_extension("crt").to_str().unwrap().to_owned()
}

/// See [`crt`].
pub(crate) fn key(prefix: &Path) -> String {
    prefix.with_extension("key").to_str().unwrap().to_owned()
}

/// A path as a string.
pub(crate) fn s(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// SHA-256 of the leaf DER as openssl prints it, lowercased without colons.
pub(crate) fn openssl_fingerprint(chain: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", chain])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    let (_, hex) = text.trim().split_once('=').unwrap();
    hex.replace(':', "").to_ascii_lowercase()
}

/// The serial `ward cert inspect HOST:PORT` reports for the served leaf.
pub(crate) fn served_serial(addr: SocketAddr) -> String {
    let out = ward(&[
        "cert",
        "inspect",
        &addr.to_string(),
        "--sni",
        "localhost",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "inspect: {}", out.stderr_text());
    let v: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    v["certificates"][0]["serial"].as_str().unwrap().to_owned()
}

/// The serial of the leaf in a PEM file, from `ward cert inspect FILE`.
pub(crate) fn file_serial(chain: &str) -> String {
    let out = ward(&["cert", "inspect", chain, "--format", "json"]);
    assert!(out.status.success(), "inspect: {}", out.stderr_text());
    let v: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    v["certificates"][0]["serial"].as_str().unwrap().to_owned()
}
