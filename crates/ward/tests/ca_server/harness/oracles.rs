//! openssl and curl: tools nobody here wrote, judging what the CA returns.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::common::OutputText;

/// Certificates of a PEM file.
pub(crate) fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A serial in one canonical form: lowercase hex, no colons, no leading zeros.
pub(crate) fn canon_serial(s: &str) -> String {
    let hex: String = s
        .trim()
        .trim_start_matches("serial=")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// Asserts there is no duplicate in `serials` and returns them as a set.
pub(crate) fn distinct(serials: &[String]) -> HashSet<String> {
    let set: HashSet<String> = serials.iter().map(|s| canon_serial(s)).collect();
    assert_eq!(set.len(), serials.len(), "duplicate serials");
    set
}

/// `openssl ARGS…` (stdin closed); returns (success, stdout, stderr).
pub(crate) fn openssl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    (out.status.success(), out.stdout_text(), out.stderr_text())
}

/// `openssl x509 -in PATH -noout ARGS…`, which must succeed.
pub(crate) fn x509(path: &Path, args: &[&str]) -> String {
    let mut all = vec!["x509", "-in", path.to_str().unwrap(), "-noout"];
    all.extend_from_slice(args);
    let (ok, out, err) = openssl(&all);
    assert!(ok, "openssl x509 {args:?}: {err}");
    out
}

/// The subjectAltName entries of a certificate, as openssl prints them
/// (`URI:…`, `DNS:…`).
pub(crate) fn sans(path: &Path) -> Vec<String> {
    let text = x509(path, &["-ext", "subjectAltName"]);
    text.lines()
        .skip(1)
        .flat_map(|l| l.split(", "))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The notAfter of a certificate.
pub(crate) fn not_after(path: &Path) -> OffsetDateTime {
    let text = x509(path, &["-enddate", "-dateopt", "iso_8601"]);
    let value = text.trim().trim_start_matches("notAfter=");
    // "2026-03-05 12:00:00Z"
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::PrimitiveDateTime::parse(value, format)
        .unwrap_or_else(|e| panic!("{value}: {e}"))
        .assume_utc()
}

/// The public key of a certificate, PEM.
pub(crate) fn cert_pubkey(path: &Path) -> String {
    x509(path, &["-pubkey"])
}

/// The public key of a private key file, PEM.
pub(crate) fn key_pubkey(path: &Path) -> String {
    let (ok, out, err) = openssl(&["pkey", "-in", path.to_str().unwrap(), "-pubout"]);
    assert!(ok, "openssl pkey: {err}");
    out
}

/// `curl -sS` against a server, trusting `root`, with extra arguments;
/// returns (status, body).
pub(crate) fn curl(root: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(root)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {}", out.stderr_text());
    let text = out.stdout_text();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}
