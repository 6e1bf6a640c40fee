//! Proves each committed fixture is what `fixtures/README.md` says it is.
//!
//! The main oracle is the `openssl` command, which nobody here wrote; the
//! second is ward-pki's `verify`, which must report the matching
//! `VerifyError` for every hostile fixture. The last test regenerates the
//! fixtures into a temporary directory and compares their structure with the
//! committed ones, so the generator cannot rot unnoticed.

// Test code: a panic is how a helper reports a broken fixture. (clippy's
// allow-unwrap-in-tests covers `#[test]` functions, not their helpers.)
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use ward_pki::SpiffeIdPattern;
use ward_pki::inspect::CertInfo;
use ward_pki::verify::{Purpose, Verified, VerifyError, VerifyOptions, verify};
use ward_testkit::{fixture, fixtures_dir, read_certs, read_key, temp_copy};

const OPENSSL: &str = "/usr/bin/openssl";

/// Every leaf fixture: `NAME.crt` and `NAME.key`.
const LEAVES: &[&str] = &[
    "server",
    "client",
    "peer",
    "expired",
    "not-yet-valid",
    "server-only",
    "no-eku",
    "imposter",
    "missing-intermediate",
    "ca-leaf",
    "two-uris",
    "wrong-td",
    "rsa-1024",
    "sha1",
];

// ---------------------------------------------------------------- helpers

/// Runs openssl in `dir`; returns whether it succeeded and its whole output.
fn openssl_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {OPENSSL}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn openssl(args: &[&str]) -> (bool, String) {
    openssl_in(&fixtures_dir(), args)
}

/// `openssl verify -CAfile ROOT -untrusted NAME.crt -purpose PURPOSE [EXTRA] NAME.crt`.
fn openssl_verify(root: &str, name: &str, purpose: &str, extra: &[&str]) -> (bool, String) {
    let crt = format!("{name}.crt");
    let mut args = vec![
        "verify",
        "-CAfile",
        root,
        "-untrusted",
        &crt,
        "-purpose",
        purpose,
    ];
    args.extend_from_slice(extra);
    args.push(&crt);
    openssl(&args)
}

fn assert_openssl_ok(root: &str, name: &str, purpose: &str, extra: &[&str]) {
    let (ok, out) = openssl_verify(root, name, purpose, extra);
    assert!(ok, "{name} as {purpose} under {root} {extra:?}: {out}");
}

fn assert_openssl_fails(name: &str, purpose: &str, extra: &[&str], expected: &str) {
    let (ok, out) = openssl_verify("root.crt", name, purpose, extra);
    assert!(!ok, "{name} as {purpose} {extra:?} passed openssl: {out}");
    assert!(
        out.contains(expected),
        "{name} as {purpose} {extra:?}: expected {expected:?}, got: {out}"
    );
}

/// `openssl x509 -text` of the first certificate in `NAME.crt`.
fn openssl_text(name: &str) -> String {
    let (ok, out) = openssl(&["x509", "-noout", "-text", "-in", &format!("{name}.crt")]);
    assert!(ok, "{name}: {out}");
    out
}

fn ward_verify(
    name: &str,
    root: &str,
    purpose: Option<Purpose>,
    host: Option<&str>,
    spiffe_id: Option<&str>,
) -> Result<Verified, VerifyError> {
    let pattern: Option<SpiffeIdPattern> = spiffe_id.map(|p| p.parse().unwrap());
    let opts = VerifyOptions {
        purpose,
        name: host,
        spiffe_id: pattern.as_ref(),
        now: UnixTime::now(),
    };
    verify(
        &read_certs(&format!("{name}.crt")),
        &read_certs(root),
        &opts,
    )
}

/// Ward's verdict on `name` under the real root, for `purpose` only.
fn ward_err(name: &str, purpose: Option<Purpose>) -> VerifyError {
    ward_verify(name, "root.crt", purpose, None, None)
        .map(|v| panic!("{name} verified for {:?}", v.purposes))
        .unwrap_err()
}

// ------------------------------------------------------------- openssl

#[test]
fn openssl_accepts_good_leaves_for_their_purposes_only() {
    for (name, server, client) in [
        ("server", true, false),
        ("client", false, true),
        ("peer", true, true),
    ] {
        for (purpose, good) in [("sslserver", server), ("sslclient", client)] {
            if good {
                assert_openssl_ok("root.crt", name, purpose, &[]);
            } else {
                assert_openssl_fails(name, purpose, &[], "unsuitable certificate purpose");
            }
        }
    }
    assert_openssl_ok("root.crt", "intermediate", "any", &[]);
}

#[test]
fn openssl_rejects_hostile_leaves_with_the_expected_error() {
    let cases: &[(&str, &str, &[&str], &str)] = &[
        ("expired", "sslserver", &[], "certificate has expired"),
        (
            "not-yet-valid",
            "sslserver",
            &[],
            "certificate is not yet valid",
        ),
        (
            "server-only",
            "sslclient",
            &[],
            "unsuitable certificate purpose",
        ),
        (
            "missing-intermediate",
            "sslserver",
            &[],
            "error 20 at 0 depth lookup: unable to get local issuer certificate",
        ),
        // OpenSSL matches the imposter intermediate's authorityKeyIdentifier
        // against the real root's subjectKeyIdentifier before it would check
        // a signature, so it reports no issuer at depth 1 (webpki, which
        // ignores key identifiers, gets as far as the signature: see below).
        (
            "imposter",
            "sslserver",
            &[],
            "error 20 at 1 depth lookup: unable to get local issuer certificate",
        ),
        (
            "rsa-1024",
            "sslserver",
            &["-auth_level", "2"],
            "EE certificate key too weak",
        ),
        (
            "sha1",
            "sslserver",
            &["-auth_level", "1"],
            "CA signature digest algorithm too weak",
        ),
    ];
    for (name, purpose, extra, expected) in cases {
        assert_openssl_fails(name, purpose, extra, expected);
    }
}

/// These are hostile only to checks OpenSSL does not make (EKU presence, CA
/// as a leaf, SPIFFE rules, key strength at the default level). OpenSSL
/// accepting them shows their one defect is the only one.
#[test]
fn openssl_accepts_leaves_whose_only_defect_it_does_not_check() {
    for name in ["no-eku", "ca-leaf", "two-uris", "wrong-td", "rsa-1024"] {
        for purpose in ["sslserver", "sslclient"] {
            assert_openssl_ok("root.crt", name, purpose, &[]);
        }
    }
    assert_openssl_ok("root.crt", "server-only", "sslserver", &[]);
    assert_openssl_ok("other-root.crt", "imposter", "sslserver", &[]);
    // The sha1 leaf is fine apart from its signature algorithm.
    assert_openssl_ok("root.crt", "sha1", "sslserver", &["-auth_level", "0"]);
}

#[test]
fn openssl_text_shows_each_defect() {
    let eku = "X509v3 Extended Key Usage";
    assert!(openssl_text("peer").contains(eku));
    assert!(!openssl_text("no-eku").contains(eku));

    assert!(openssl_text("peer").contains("CA:FALSE"));
    let ca_leaf = openssl_text("ca-leaf");
    assert!(ca_leaf.contains("CA:TRUE"), "{ca_leaf}");
    assert!(ca_leaf.contains("Certificate Sign"), "{ca_leaf}");

    let two = openssl_text("two-uris");
    assert!(
        two.contains("URI:spiffe://example.org/two-uris/a, URI:spiffe://example.org/two-uris/b"),
        "{two}"
    );
    assert_eq!(two.matches("URI:").count(), 2);
    let td = openssl_text("wrong-td");
    assert!(td.contains("URI:spiffe://evil.example/x"), "{td}");
    assert_eq!(td.matches("URI:").count(), 1);

    let server_only = openssl_text("server-only");
    assert!(server_only.contains("TLS Web Server Authentication"));
    assert!(!server_only.contains("TLS Web Client Authentication"));

    let rsa = openssl_text("rsa-1024");
    assert!(rsa.contains("Public-Key: (1024 bit)"), "{rsa}");
    assert!(rsa.contains("Signature Algorithm: sha256WithRSAEncryption"));
    let sha1 = openssl_text("sha1");
    assert!(
        sha1.contains("Signature Algorithm: sha1WithRSAEncryption"),
        "{sha1}"
    );

    let expired = openssl_text("expired");
    assert!(
        expired.contains("Not After : Jan  2 00:00:00 2021 GMT"),
        "{expired}"
    );
    let future = openssl_text("not-yet-valid");
    assert!(
        future.contains("Not Before: Dec 31 23:59:30 2099 GMT"),
        "{future}"
    );
    let good = openssl_text("server");
    assert!(
        good.contains("Not After : Jan  1 00:00:00 2120 GMT"),
        "{good}"
    );
}

#[test]
fn imposter_ca_has_the_real_names_and_other_keys() {
    let field = |file: &str, flag: &str| {
        let (ok, out) = openssl(&["x509", "-noout", flag, "-in", file]);
        assert!(ok, "{file} {flag}: {out}");
        out
    };
    assert_eq!(
        field("root.crt", "-subject"),
        field("other-root.crt", "-subject")
    );
    assert_ne!(
        field("root.crt", "-pubkey"),
        field("other-root.crt", "-pubkey")
    );
    let [leaf, int] = read_certs("imposter.crt").try_into().unwrap();
    let real_int = &read_certs("intermediate.crt")[0];
    let now = OffsetDateTime::now_utc();
    let info = |der: &CertificateDer<'_>| CertInfo::from_der(der, now).unwrap();
    assert_eq!(info(&int).subject, info(real_int).subject);
    assert_eq!(info(&int).issuer, info(real_int).issuer);
    assert_ne!(
        info(&int).sha256_fingerprint,
        info(real_int).sha256_fingerprint
    );
    assert_eq!(info(&leaf).issuer, info(real_int).subject);
    assert_eq!(
        info(&leaf).spiffe_id.as_deref(),
        Some("spiffe://example.org/server")
    );
}

#[test]
fn chains_and_keys_have_the_documented_shape() {
    for name in LEAVES {
        let certs = read_certs(&format!("{name}.crt"));
        let want = if *name == "missing-intermediate" {
            1
        } else {
            2
        };
        assert_eq!(certs.len(), want, "{name}.crt");
        if want == 2 && *name != "imposter" {
            assert_eq!(certs[1], read_certs("intermediate.crt")[0], "{name}.crt");
        }
    }
    for name in ["root", "intermediate"] {
        assert_eq!(read_certs(&format!("{name}.crt")).len(), 1);
    }
    let keys = LEAVES.iter().copied().chain(["root", "intermediate"]);
    for name in keys {
        let key = format!("{name}.key");
        let pem = fs::read_to_string(fixture(&key)).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{key} is not PKCS#8"
        );
        let _ = read_key(&key);
        let (ok1, from_key) = openssl(&["pkey", "-pubout", "-in", &key]);
        let (ok2, from_cert) =
            openssl(&["x509", "-noout", "-pubkey", "-in", &format!("{name}.crt")]);
        assert!(ok1 && ok2, "{from_key}{from_cert}");
        assert_eq!(from_key, from_cert, "{key} does not match {name}.crt");
    }
}

// ------------------------------------------------------------ ward-pki

#[test]
fn ward_accepts_good_leaves() {
    let server = ward_verify(
        "server",
        "root.crt",
        Some(Purpose::Server),
        Some("localhost"),
        Some("spiffe://example.org/server"),
    )
    .unwrap();
    assert_eq!(server.purposes, [Purpose::Server]);
    assert_eq!(server.path_len, 3);
    ward_verify("server", "root.crt", None, Some("127.0.0.1"), None).unwrap();
    let client = ward_verify(
        "client",
        "root.crt",
        Some(Purpose::Client),
        None,
        Some("spiffe://example.org/client"),
    )
    .unwrap();
    assert_eq!(client.purposes, [Purpose::Client]);
    let peer = ward_verify(
        "peer",
        "root.crt",
        None,
        Some("localhost"),
        Some("spiffe://example.org/peer"),
    )
    .unwrap();
    assert_eq!(peer.purposes, [Purpose::Server, Purpose::Client]);
    // The imposter is well formed: only trusting its own root makes it pass.
    ward_verify(
        "imposter",
        "other-root.crt",
        Some(Purpose::Server),
        Some("localhost"),
        None,
    )
    .unwrap();
}

#[test]
fn ward_rejects_hostile_leaves_with_the_matching_error() {
    assert_eq!(
        ward_err("expired", None),
        VerifyError::Expired {
            not_after: "2021-01-02T00:00:00Z".into()
        }
    );
    assert_eq!(
        ward_err("not-yet-valid", None),
        VerifyError::NotYetValid {
            not_before: "2099-12-31T23:59:30Z".into()
        }
    );
    assert_eq!(
        ward_err("server-only", Some(Purpose::Client)),
        VerifyError::WrongEku {
            purpose: "client".into()
        }
    );
    ward_verify("server-only", "root.crt", Some(Purpose::Server), None, None).unwrap();
    for purpose in [Some(Purpose::Server), Some(Purpose::Client), None] {
        assert!(
            matches!(ward_err("no-eku", purpose), VerifyError::WrongEku { .. }),
            "no-eku for {purpose:?}"
        );
    }
    assert_eq!(ward_err("imposter", None), VerifyError::SignatureMismatch);
    assert_eq!(
        ward_err("missing-intermediate", None),
        VerifyError::UnknownIssuer
    );
    assert_eq!(ward_err("ca-leaf", None), VerifyError::CaAsLeaf);

    // Not an X509-SVID: no identity is reported, and asking for one fails.
    let ok = ward_verify("two-uris", "root.crt", None, None, None).unwrap();
    assert_eq!(ok.spiffe_id, None);
    let err = ward_verify(
        "two-uris",
        "root.crt",
        None,
        None,
        Some("spiffe://example.org/*"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, VerifyError::NotAnSvid(m) if m.contains("exactly one URI SAN")),
        "{err:?}"
    );
    let err = ward_verify(
        "wrong-td",
        "root.crt",
        None,
        None,
        Some("spiffe://example.org/x"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError::SpiffeIdMismatch {
            expected: "spiffe://example.org/x".into(),
            found: "spiffe://evil.example/x".into()
        }
    );

    let err = ward_err("sha1", None);
    assert!(
        matches!(&err, VerifyError::WeakSignature { algorithm } if algorithm == "SHA-1"),
        "{err:?}"
    );
}

/// The path of the RSA-1024 leaf has only strong signatures; the key itself
/// is what must be refused.
#[test]
fn ward_rejects_a_weak_leaf_key() {
    let err = ward_verify("rsa-1024", "root.crt", None, None, None).unwrap_err();
    assert!(
        matches!(&err, VerifyError::WeakKey { detail } if detail.contains("RSA 1024")),
        "{err:?}"
    );
    assert_eq!(err.code(), "weak_key");
}

// ------------------------------------------------------------ generator

/// What must not change between two runs of the generator: everything but
/// keys, serials and signatures (and, for the openssl-made leaves, dates).
fn shape(dir: &Path, file: &str) -> String {
    let pem = fs::read(dir.join(file)).unwrap();
    if file.ends_with(".key") {
        let text = String::from_utf8(pem).unwrap();
        return text.lines().next().unwrap().to_owned();
    }
    let legacy = file == "rsa-1024.crt" || file == "sha1.crt";
    let now = OffsetDateTime::now_utc();
    let certs = ward_pki::pem::parse_certs(&pem).unwrap();
    let mut out = String::new();
    for (i, der) in certs.iter().enumerate() {
        let mut info = CertInfo::from_der(der, now).unwrap();
        info.serial.clear();
        info.sha256_fingerprint.clear();
        info.seconds_left = 0;
        if legacy && i == 0 {
            info.not_before.clear();
            info.not_after.clear();
        }
        out.push_str(&format!("{info:?}\n"));
    }
    out
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "gen-legacy.sh")
        .collect()
}

#[test]
fn regenerating_yields_the_same_structure() {
    let tmp = temp_copy(&[]);
    let status = Command::new(env!("CARGO_BIN_EXE_gen-fixtures"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(status.success(), "gen-fixtures failed: {status}");

    let committed = file_names(&fixtures_dir());
    let fresh = file_names(tmp.path());
    assert_eq!(
        committed, fresh,
        "regenerate with `cargo run -p ward-testkit --bin gen-fixtures`"
    );
    assert_eq!(
        fs::read_to_string(fixture("README.md")).unwrap(),
        fs::read_to_string(tmp.path().join("README.md")).unwrap(),
        "fixtures/README.md is stale: regenerate it"
    );
    for file in fresh
        .iter()
        .filter(|f| f.ends_with(".crt") || f.ends_with(".key"))
    {
        assert_eq!(
            shape(&fixtures_dir(), file),
            shape(tmp.path(), file),
            "{file} changed shape"
        );
        // Keys are random, so the generator must have made new ones.
        if file.ends_with(".key") {
            assert_ne!(
                fs::read(fixture(file)).unwrap(),
                fs::read(tmp.path().join(file)).unwrap(),
                "{file}"
            );
        }
    }
    #[cfg(unix)]
    for file in fresh.iter().filter(|f| f.ends_with(".key")) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(tmp.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

// -------------------------------------------------------------- helpers

#[test]
fn helpers_find_and_copy_fixtures() {
    assert!(fixtures_dir().join("README.md").is_file());
    assert_eq!(fixture("root.crt"), fixtures_dir().join("root.crt"));
    assert_eq!(read_certs("peer.crt").len(), 2);
    let tmp = temp_copy(&["peer.crt", "peer.key"]);
    assert_eq!(
        fs::read(tmp.path().join("peer.key")).unwrap(),
        fs::read(fixture("peer.key")).unwrap()
    );
    let path = tmp.path().to_owned();
    drop(tmp);
    assert!(!path.exists());
}

#[test]
#[should_panic(expected = "no-such-file.crt")]
fn read_certs_names_the_missing_file() {
    let _ = read_certs("no-such-file.crt");
}
