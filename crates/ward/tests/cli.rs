//! End-to-end tests of the offline commands: real `ward` processes, real
//! files, and tools nobody here wrote (openssl, Python's `cryptography`,
//! rustls over TCP, the `spiffe` crate) judging the output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{OutputText, Pki, openssl_verify, ward};

const KEY_TYPES: [&str; 6] = [
    "ecdsa-p256",
    "ecdsa-p384",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
];

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Python's `cryptography` loads the chain and reads the extensions Ward
/// promises: CA:false critical, the SPIFFE ID as the only URI SAN, SAN
/// critical when the subject is empty, EKU per profile.
fn python_check(chain: &Path, spiffe_id: &str, ekus: &str) {
    let script = r#"
import sys
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, ExtendedKeyUsageOID
path, spiffe_id, want_ekus = sys.argv[1], sys.argv[2], sys.argv[3]
certs = x509.load_pem_x509_certificates(open(path, "rb").read())
assert len(certs) == 2, len(certs)
leaf = certs[0]
bc = leaf.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
assert bc.critical and not bc.value.ca, bc
san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
assert uris == [spiffe_id], uris
assert san.critical == (len(leaf.subject) == 0), (san.critical, leaf.subject)
eku = leaf.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
names = sorted({ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}[o] for o in eku)
assert ",".join(names) == want_ekus, names
leaf.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
assert leaf.serial_number > 0 and leaf.serial_number.bit_length() >= 64, leaf.serial_number
ca = certs[1].extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
assert ca.ca and ca.path_length == 0, ca
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(chain)
        .args([spiffe_id, ekus])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python cryptography rejected {}: {}",
        chain.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_key_type_and_profile_passes_openssl_for_its_purpose_only() {
    for key_type in KEY_TYPES {
        let pki = Pki::init(&["--key-type", key_type]);
        let ca = pki.ca_dir();
        for (profile, server_ok, client_ok, ekus) in [
            ("server", true, false, "server"),
            ("client", false, true, "client"),
            ("peer", true, true, "client,server"),
        ] {
            let id = format!("spiffe://example.org/{profile}");
            let prefix = pki.path(&format!("{key_type}-{profile}"));
            let out = ward(&[
                "cert",
                "create",
                "--ca-dir",
                ca,
                "--profile",
                profile,
                "--spiffe-id",
                &id,
                "--dns",
                "localhost",
                "--key-type",
                key_type,
                "--out",
                prefix.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{key_type}/{profile}: {}",
                out.stderr_text()
            );
            let crt = prefix.with_extension("crt");
            let key = prefix.with_extension("key");
            assert_eq!(mode(&key), 0o600, "{key_type}/{profile}");
            let root = pki.root();
            assert_eq!(
                openssl_verify(&root, &crt, "sslserver").0,
                server_ok,
                "{key_type}/{profile} as server"
            );
            assert_eq!(
                openssl_verify(&root, &crt, "sslclient").0,
                client_ok,
                "{key_type}/{profile} as client"
            );
            python_check(&crt, &id, ekus);
            // The key file is PKCS#8 and matches the certificate.
            let key_pem = fs::read_to_string(&key).unwrap();
            assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let ours = std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key)
                .output()
                .unwrap();
            let theirs = std::process::Command::new("openssl")
                .args(["x509", "-pubkey", "-noout", "-in"])
                .arg(&crt)
                .output()
                .unwrap();
            assert_eq!(
                ours.stdout, theirs.stdout,
                "{key_type}/{profile}: key mismatch"
            );
        }
        // The admin identity and the CA files themselves.
        assert!(openssl_verify(&pki.root(), &pki.path("ca/admin.crt"), "sslclient").0);
        assert_eq!(mode(&pki.path("ca/intermediate.key")), 0o600);
        assert_eq!(mode(&pki.path("ca/root.key")), 0o600);
        assert_eq!(mode(&pki.path("ca/admin.key")), 0o600);
    }
}

#[test]
fn ca_certificates_have_the_promised_shape() {
    let pki = Pki::init(&[]);
    let text = |file: &str| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(pki.path(file))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let root = text("ca/root.crt");
    assert!(root.contains("CA:TRUE, pathlen:1"), "{root}");
    assert!(root.contains("Certificate Sign, CRL Sign"), "{root}");
    assert!(root.contains("ASN1 OID: prime256v1"), "{root}");
    let int = text("ca/intermediate.crt");
    assert!(int.contains("CA:TRUE, pathlen:0"), "{int}");
    assert!(
        int.contains("Digital Signature, Certificate Sign, CRL Sign"),
        "{int}"
    );
    assert!(int.contains("Authority Key Identifier"), "{int}");
    // Ten years and one year by default.
    let days = |t: &str, field: &str| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-checkend"])
            .arg(t)
            .arg("-in")
            .arg(pki.path(field))
            .output()
            .unwrap();
        out.status.success()
    };
    assert!(days(&(3649 * 86_400).to_string(), "ca/root.crt"));
    assert!(!days(&(3651 * 86_400).to_string(), "ca/root.crt"));
    assert!(days(&(364 * 86_400).to_string(), "ca/intermediate.crt"));
    assert!(!days(&(366 * 86_400).to_string(), "ca/intermediate.crt"));
    let toml = fs::read_to_string(pki.path("ca/ca.toml")).unwrap();
    assert!(toml.contains("trust_domain = \"example.org\""), "{toml}");
}

#[test]
fn offline_root_keeps_the_root_key_out_of_the_directory() {
    let pki = Pki::empty();
    let offline = pki.path("vault/root.key");
    fs::create_dir(pki.path("vault")).unwrap();
    let out = ward(&[
        "ca",
        "init",
        "--dir",
        pki.ca_dir(),
        "--trust-domain",
        "example.org",
        "--offline-root",
        offline.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(!pki.path("ca/root.key").exists());
    assert_eq!(mode(&offline), 0o600);
    // The intermediate still signs without the root key present.
    let out = ward(&[
        "cert",
        "create",
        "--ca-dir",
        pki.ca_dir(),
        "--profile",
        "client",
        "--spiffe-id",
        "spiffe://example.org/x",
        "--out",
        pki.path("x").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
}

/// Bad input: exit 2, one line on stderr, and no file written.
fn assert_refused(pki: &Pki, args: &[&str], reason: &str) {
    let before = pki.listing();
    let out = ward(args);
    let stderr = out.stderr_text();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.contains(reason),
        "{args:?}: expected {reason:?} in {stderr}"
    );
    assert_eq!(pki.listing(), before, "{args:?} left files behind");
}

#[test]
fn bad_input_exits_2_with_one_line_and_leaves_nothing() {
    let pki = Pki::init(&[]);
    let ca = pki.ca_dir();
    let out = pki.path("leaf");
    let out = out.to_str().unwrap();
    let create = |extra: &[&str]| {
        let mut v = vec![
            "cert",
            "create",
            "--ca-dir",
            ca,
            "--profile",
            "client",
            "--out",
            out,
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let refuse = |extra: &[&str], reason: &str| {
        let args = create(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(&pki, &args, reason);
    };
    refuse(
        &["--spiffe-id", "spiffe://example.org/a//b"],
        "empty segment",
    );
    refuse(&["--spiffe-id", "spiffe://EXAMPLE.org/a"], "lowercase");
    refuse(&["--spiffe-id", "https://example.org/a"], "spiffe://");
    refuse(
        &["--spiffe-id", "spiffe://other.org/a"],
        "outside this CA's trust domain",
    );
    refuse(
        &["--spiffe-id", "spiffe://example.org/a", "--ttl", "400d"],
        "outlive the issuing CA",
    );
    refuse(
        &["--spiffe-id", "spiffe://example.org/a", "--ttl", "5s"],
        "below the minimum",
    );
    refuse(
        &["--spiffe-id", "spiffe://example.org/a", "--ttl", "soon"],
        "invalid duration",
    );
    refuse(
        &[
            "--spiffe-id",
            "spiffe://example.org/a",
            "--key-type",
            "rsa-1024",
        ],
        "unknown key type",
    );
    refuse(&["--dns", "bad_name.example"], "invalid DNS name");
    refuse(&[], "at least one SPIFFE ID");

    // A garbled, then a missing, intermediate key.
    let key = pki.path("ca/intermediate.key");
    let good = fs::read(&key).unwrap();
    fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAAAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    refuse(
        &["--spiffe-id", "spiffe://example.org/a"],
        "intermediate.key",
    );
    fs::write(&key, "not even pem").unwrap();
    refuse(
        &["--spiffe-id", "spiffe://example.org/a"],
        "intermediate.key",
    );
    fs::remove_file(&key).unwrap();
    refuse(
        &["--spiffe-id", "spiffe://example.org/a"],
        "intermediate.key",
    );
    fs::write(&key, &good).unwrap();
    // A CA directory that is not one.
    let not_ca = pki.path("empty");
    fs::create_dir(&not_ca).unwrap();
    assert_refused(
        &pki,
        &[
            "cert",
            "create",
            "--ca-dir",
            not_ca.to_str().unwrap(),
            "--profile",
            "client",
            "--spiffe-id",
            "spiffe://example.org/a",
            "--out",
            out,
        ],
        "does not hold a Ward CA",
    );

    // ca init over an existing CA, with a bad trust domain, a bad key type.
    assert_refused(
        &pki,
        &["ca", "init", "--dir", ca, "--trust-domain", "example.org"],
        "already holds a CA",
    );
    let fresh = pki.path("fresh");
    let fresh = fresh.to_str().unwrap();
    assert_refused(
        &pki,
        &["ca", "init", "--dir", fresh, "--trust-domain", "Bad.Domain"],
        "lowercase",
    );
    assert_refused(
        &pki,
        &[
            "ca",
            "init",
            "--dir",
            fresh,
            "--trust-domain",
            "example.org",
            "--key-type",
            "dsa",
        ],
        "unknown key type",
    );
    // An offline root path that cannot be written: the CA directory must
    // not be left half-made.
    assert_refused(
        &pki,
        &[
            "ca",
            "init",
            "--dir",
            fresh,
            "--trust-domain",
            "example.org",
            "--offline-root",
            pki.path("no/such/dir/root.key").to_str().unwrap(),
        ],
        "root.key",
    );
    // The CA still works after all of that.
    let ok = ward(
        &create(&["--spiffe-id", "spiffe://example.org/a"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(ok.status.success(), "{}", ok.stderr_text());
}

#[test]
fn inspect_never_prints_private_keys() {
    let pki = Pki::init(&[]);
    let prefix = pki.issue("client", "spiffe://example.org/c", &[]);
    let key = fs::read_to_string(prefix.with_extension("key")).unwrap();
    let both = pki.path("both.pem");
    let mut combined = fs::read_to_string(prefix.with_extension("crt")).unwrap();
    combined.push_str(&key);
    fs::write(&both, combined).unwrap();
    let key_body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for format in ["text", "json"] {
        let out = ward(&[
            "cert",
            "inspect",
            both.to_str().unwrap(),
            "--format",
            format,
        ]);
        assert!(out.status.success(), "{}", out.stderr_text());
        let stdout = out.stdout_text();
        assert!(!stdout.contains("PRIVATE KEY-----"), "{stdout}");
        for line in &key_body {
            assert!(!stdout.contains(line), "key material in {format} output");
        }
        assert!(stdout.contains("spiffe://example.org/c"));
    }
    let out = ward(&[
        "cert",
        "inspect",
        both.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(json["private_key_present"], true);
    let leaf = &json["certificates"][0];
    assert_eq!(leaf["spiffe_id"], "spiffe://example.org/c");
    assert_eq!(leaf["extended_key_usage"][0], "clientAuth");
    assert_eq!(leaf["key"]["type"], "ecdsa");
    assert_eq!(leaf["status"], "valid");
    assert_eq!(json["certificates"][1]["is_ca"], true);
    // The fingerprint is what openssl computes.
    let fp = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(prefix.with_extension("crt"))
        .output()
        .unwrap();
    let fp = String::from_utf8(fp.stdout).unwrap();
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(leaf["sha256_fingerprint"], fp.as_str());
    // Unreadable input is a usage error.
    let out = ward(&["cert", "inspect", pki.path("nope.pem").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let junk = pki.path("junk.pem");
    fs::write(&junk, "hello").unwrap();
    let out = ward(&["cert", "inspect", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `ward` with standard output a pipe whose reader is already gone,
/// as under `ward … | head -1` once head has exited.
fn ward_into_closed_pipe(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_standard_output_is_no_panic_and_keeps_the_exit_status() {
    let pki = Pki::init(&[]);
    let prefix = pki.issue("server", "spiffe://example.org/web", &[]);
    let crt = prefix.with_extension("crt");
    let crt = crt.to_str().unwrap();
    let root = pki.root();
    let root = root.to_str().unwrap();
    let cases: [(&[&str], i32); 3] = [
        (&["cert", "inspect", crt], 0),
        (&["cert", "verify", crt, "--roots", root], 0),
        (
            &[
                "cert",
                "verify",
                crt,
                "--roots",
                root,
                "--purpose",
                "client",
            ],
            1,
        ),
    ];
    for (args, code) in cases {
        let out = ward_into_closed_pipe(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            out.stderr_text()
        );
        assert!(
            !out.stderr_text().contains("panicked"),
            "{args:?}: {}",
            out.stderr_text()
        );
    }
}

#[test]
fn verify_names_the_precise_reason() {
    let pki = Pki::init(&[]);
    let server = pki.issue(
        "server",
        "spiffe://example.org/ns/web",
        &["--dns", "web.example.org"],
    );
    let crt = server.with_extension("crt");
    let crt = crt.to_str().unwrap();
    let root = pki.root();
    let root = root.to_str().unwrap();
    let check = |extra: &[&str], code: Option<&str>| {
        let mut args = vec!["cert", "verify", crt, "--roots", root, "--format", "json"];
        args.extend_from_slice(extra);
        let out = ward(&args);
        let json: serde_json::Value = serde_json::from_str(&out.stdout_text())
            .unwrap_or_else(|e| panic!("{extra:?}: {e}: {}", out.stderr_text()));
        match code {
            None => {
                assert_eq!(out.status.code(), Some(0), "{extra:?}: {json}");
                assert_eq!(json["valid"], true);
            }
            Some(code) => {
                assert_eq!(out.status.code(), Some(1), "{extra:?}: {json}");
                assert_eq!(json["code"], code, "{extra:?}: {json}");
            }
        }
    };
    check(&[], None);
    check(&["--purpose", "server", "--dns", "web.example.org"], None);
    check(&["--spiffe-id", "spiffe://example.org/ns/*"], None);
    check(&["--purpose", "client"], Some("wrong_eku"));
    check(&["--dns", "db.example.org"], Some("name_mismatch"));
    check(
        &["--spiffe-id", "spiffe://example.org/ns/db"],
        Some("spiffe_id_mismatch"),
    );
    // Another CA with the same names: its root does not vouch for us.
    let other = Pki::init(&[]);
    let other_root = other.root();
    let out = ward(&[
        "cert",
        "verify",
        crt,
        "--roots",
        other_root.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout_text().contains("unknown issuer"),
        "{}",
        out.stdout_text()
    );
    // The leaf alone, without its intermediate.
    let leaf_only = pki.path("leaf-only.pem");
    let chain = fs::read_to_string(crt).unwrap();
    let first_end = chain.find("-----END CERTIFICATE-----").unwrap() + 26;
    fs::write(&leaf_only, &chain[..first_end]).unwrap();
    let out = ward(&[
        "cert",
        "verify",
        leaf_only.to_str().unwrap(),
        "--roots",
        root,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout_text().contains("unknown issuer"),
        "{}",
        out.stdout_text()
    );
    // Unusable input is exit 2.
    let out = ward(&[
        "cert",
        "verify",
        crt,
        "--roots",
        pki.path("missing").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_reports_hostile_fixtures_by_reason() {
    use ward_testkit::fixture;
    let root = fixture("root.crt");
    let root = root.to_str().unwrap();
    for (name, purpose, code) in [
        ("expired", None, "expired"),
        ("not-yet-valid", None, "not_yet_valid"),
        ("server-only", Some("client"), "wrong_eku"),
        ("no-eku", None, "wrong_eku"),
        ("missing-intermediate", None, "unknown_issuer"),
        ("imposter", None, "unknown_issuer"),
        ("ca-leaf", None, "ca_as_leaf"),
        ("rsa-1024", None, "weak_key"),
        ("sha1", None, "weak_signature"),
    ] {
        let crt = fixture(&format!("{name}.crt"));
        let mut args = vec![
            "cert",
            "verify",
            crt.to_str().unwrap(),
            "--roots",
            root,
            "--format",
            "json",
        ];
        if let Some(p) = purpose {
            args.extend(["--purpose", p]);
        }
        let out = ward(&args);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", out.stdout_text());
        let json: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
        assert_eq!(json["code"], code, "{name}: {json}");
        assert_eq!(json["valid"], false);
    }
    let crt = fixture("peer.crt");
    let out = ward(&["cert", "verify", crt.to_str().unwrap(), "--roots", root]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout_text());
    assert!(
        out.stdout_text()
            .starts_with("OK: valid for server and client")
    );
}

#[test]
fn inspect_names_p521_and_unsupported_curves() {
    let dir = tempfile::tempdir().unwrap();
    for (curve, shown) in [("secp521r1", "ECDSA P-521"), ("secp256k1", "secp256k1")] {
        let crt = dir.path().join(format!("{curve}.crt"));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-subj", "/CN=x", "-days", "1"])
            .args(["-newkey", "ec", "-pkeyopt"])
            .arg(format!("ec_paramgen_curve:{curve}"))
            .arg("-keyout")
            .arg(dir.path().join(format!("{curve}.key")))
            .arg("-out")
            .arg(&crt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", out.stderr_text());
        let out = ward(&["cert", "inspect", crt.to_str().unwrap()]);
        assert!(out.status.success(), "{}", out.stderr_text());
        let text = out.stdout_text();
        assert!(text.contains(shown), "{curve}: {text}");
        assert!(!text.contains("P-528"), "{curve}: {text}");
    }
}
