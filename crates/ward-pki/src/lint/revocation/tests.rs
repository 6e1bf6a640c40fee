//! Revocation answers: CRLs made with rcgen, OCSP responses made by
//! `openssl ocsp` (an oracle nobody here wrote) from requests built here.

use std::process::Command;

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::pem;

fn fixture_path(name: &str) -> String {
    format!(
        "{}/../ward-testkit/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn fixture(name: &str) -> Vec<u8> {
    pem::parse_certs(&std::fs::read(fixture_path(name)).unwrap()).unwrap()[0].to_vec()
}

fn crl(revoked: &[u8], next_update: OffsetDateTime) -> Vec<u8> {
    let key =
        KeyPair::from_pem(&std::fs::read_to_string(fixture_path("intermediate.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&fixture("intermediate.crt").into(), key).unwrap();
    let (_, leaf) = X509Certificate::from_der(revoked).unwrap();
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update,
        crl_number: SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from_slice(leaf.raw_serial()),
            revocation_time: now - time::Duration::minutes(5),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(&issuer).unwrap().der().to_vec()
}

#[test]
fn crl_answers_revoked_good_stale_and_refuses_strangers() {
    let now = OffsetDateTime::now_utc();
    let int = fixture("intermediate.crt");
    let list = crl(&fixture("peer.crt"), now + time::Duration::days(1));
    let peer = crl_status(&list, &fixture("peer.crt"), &int, now).unwrap();
    assert!(matches!(peer.status, Status::Revoked { .. }), "{peer:?}");
    assert!(!peer.stale);
    let server = crl_status(&list, &fixture("server.crt"), &int, now).unwrap();
    assert_eq!(server.status, Status::Good);
    let old = crl(&fixture("peer.crt"), now - time::Duration::minutes(1));
    assert!(
        crl_status(&old, &fixture("server.crt"), &int, now)
            .unwrap()
            .stale
    );
    // Signed by someone else's key: the imposter chain's intermediate has
    // the same name but another key.
    let imposter_int = pem::parse_certs(&std::fs::read(fixture_path("imposter.crt")).unwrap())
        .unwrap()[1]
        .to_vec();
    let err = crl_status(&list, &fixture("server.crt"), &imposter_int, now).unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    assert!(crl_status(b"junk", &fixture("server.crt"), &int, now).is_err());
}

fn serial_hex(cert: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", &fixture_path(cert)])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

fn openssl_answer(dir: &std::path::Path, leaf: &str) -> Vec<u8> {
    let req = dir.join(format!("{leaf}.req"));
    let resp = dir.join(format!("{leaf}.resp"));
    std::fs::write(
        &req,
        ocsp_request(&fixture(leaf), &fixture("intermediate.crt")).unwrap(),
    )
    .unwrap();
    let out = Command::new("openssl")
        .args(["ocsp", "-index"])
        .arg(dir.join("index.txt"))
        .args(["-CA", &fixture_path("intermediate.crt")])
        .args(["-rsigner", &fixture_path("intermediate.crt")])
        .args(["-rkey", &fixture_path("intermediate.key")])
        .arg("-reqin")
        .arg(&req)
        .arg("-respout")
        .arg(&resp)
        .args(["-ndays", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(resp).unwrap()
}

#[test]
fn ocsp_requests_are_understood_and_answers_read() {
    let dir = tempfile::tempdir().unwrap();
    let index = format!(
        "R\t991231235959Z\t240101000000Z\t{}\tunknown\t/CN=peer\nV\t991231235959Z\t\t{}\tunknown\t/CN=server\n",
        serial_hex("peer.crt"),
        serial_hex("server.crt"),
    );
    std::fs::write(dir.path().join("index.txt"), index).unwrap();
    let now = OffsetDateTime::now_utc();
    let int = fixture("intermediate.crt");
    let peer = ocsp_status(
        &openssl_answer(dir.path(), "peer.crt"),
        &fixture("peer.crt"),
        &int,
        now,
    )
    .unwrap();
    assert_eq!(
        peer.status,
        Status::Revoked {
            at: "2024-01-01T00:00:00Z".into()
        }
    );
    let server_resp = openssl_answer(dir.path(), "server.crt");
    let server = ocsp_status(&server_resp, &fixture("server.crt"), &int, now).unwrap();
    assert_eq!(server.status, Status::Good);
    assert!(server.next_update.is_some() && !server.stale);
    // An answer about another certificate says nothing about this one.
    let err = ocsp_status(&server_resp, &fixture("peer.crt"), &int, now).unwrap_err();
    assert!(err.contains("nothing about"), "{err}");
    // A changed producedAt (the first GeneralizedTime) breaks the signature.
    let mut forged = server_resp.clone();
    let at = forged.windows(2).position(|w| w == [0x18, 0x0f]).unwrap() + 15;
    forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
    assert!(ocsp_status(&forged, &fixture("server.crt"), &int, now).is_err());
}
