use std::process::Command;

use super::*;

/// A CSR made by the openssl command, as a user would.
fn openssl_csr(dir: &std::path::Path, subj: &str, sans: Option<&str>, extra: &[&str]) -> String {
    let key = dir.join("k.pem");
    let csr = dir.join("r.csr");
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .args(["-subj", subj])
        .args(
            sans.map(|s| vec!["-addext".to_owned(), format!("subjectAltName={s}")])
                .unwrap_or_default(),
        )
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(csr).unwrap()
}

#[test]
fn openssl_csr_parses_and_lists_names() {
    let dir = tempfile::tempdir().unwrap();
    let pem = openssl_csr(
        dir.path(),
        "/CN=web",
        Some("URI:spiffe://example.org/web,DNS:Web.Example.org,IP:10.0.0.1"),
        &["-addext", "basicConstraints=critical,CA:TRUE"],
    );
    let csr = parse_csr(&pem).unwrap();
    assert_eq!(csr.key, PublicKeyKind::Ecdsa { bits: 256 });
    assert_eq!(csr.requested.common_names, vec!["web"]);
    assert_eq!(csr.requested.uris, vec!["spiffe://example.org/web"]);
    assert_eq!(csr.requested.dns, vec!["web.example.org"]);
    assert_eq!(
        csr.requested.ips,
        vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn tampered_and_malformed_csrs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pem = openssl_csr(dir.path(), "/CN=a", None, &[]);
    // Flip one byte of the DER inside: the signature no longer verifies (or
    // the structure breaks).
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let mut der = block.contents.clone();
    let i = der.len() / 3;
    der[i] ^= 0x01;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let tampered =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
    let err = parse_csr(&tampered).unwrap_err();
    assert!(
        matches!(err, CsrError::BadSignature | CsrError::Malformed(_)),
        "{err:?}"
    );
    assert!(matches!(parse_csr("hello"), Err(CsrError::NotPem(_))));
    assert!(matches!(
        parse_csr(&"A".repeat(MAX_CSR_PEM + 1)),
        Err(CsrError::TooLarge)
    ));
    let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    assert!(matches!(parse_csr(cert), Err(CsrError::NotPem(_))));
}

#[test]
fn weak_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let csr = dir.path().join("r.csr");
    let out = Command::new("openssl")
        .args([
            "req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=x",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = parse_csr(&std::fs::read_to_string(csr).unwrap()).unwrap_err();
    assert!(matches!(err, CsrError::UnsupportedKey(_)), "{err:?}");
}

/// A CSR from `openssl req` for a new EC key on `curve`.
fn openssl_ec_csr(dir: &std::path::Path, curve: &str) -> String {
    let params = dir.join(format!("{curve}.param"));
    let out = Command::new("openssl")
        .args(["ecparam", "-name", curve, "-out"])
        .arg(&params)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csr = dir.join(format!("{curve}.csr"));
    let out = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=x", "-newkey"])
        .arg(format!("ec:{}", params.display()))
        .arg("-keyout")
        .arg(dir.join(format!("{curve}.key")))
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(csr).unwrap()
}

#[test]
fn unsupported_curves_are_named_not_called_bad_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse_csr(&openssl_ec_csr(dir.path(), "secp256k1")).unwrap_err();
    assert!(matches!(err, CsrError::UnsupportedKey(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("secp256k1") && text.contains("curve"),
        "{text}"
    );

    let err = parse_csr(&openssl_ec_csr(dir.path(), "secp521r1")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("ECDSA P-521"), "{text}");
    assert!(!text.contains("528"), "{text}");

    let csr = parse_csr(&openssl_ec_csr(dir.path(), "secp384r1")).unwrap();
    assert_eq!(csr.key, PublicKeyKind::Ecdsa { bits: 384 });
}
