use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use der::{Decode, Encode};
use time::OffsetDateTime;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use super::*;
use crate::KeyType;
use crate::issue::{CaSpec, LeafRequest, Profile, new_root};

struct Ca {
    root: Issuer,
    int: Issuer,
}

fn ca() -> Ca {
    let spec = CaSpec {
        name: "Test".into(),
        root_validity: Duration::from_secs(86_400 * 10),
        intermediate_validity: Duration::from_secs(86_400),
        permitted_dns: Vec::new(),
    };
    let now = OffsetDateTime::now_utc();
    let root_key = KeyType::EcdsaP256.generate().unwrap();
    let root = new_root(&spec, &root_key, now).unwrap();
    let root = Issuer::new(root.der, root_key).unwrap();
    let key = KeyType::EcdsaP256.generate().unwrap();
    let int = root.sign_intermediate(&spec, &key, now).unwrap();
    Ca {
        root,
        int: Issuer::new(int.der, key).unwrap(),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn basic(der: &[u8]) -> BasicOcspResponse {
    let resp = OcspResponse::from_der(der).unwrap();
    assert_eq!(resp.response_status, OcspResponseStatus::Successful);
    let bytes = resp.response_bytes.unwrap();
    BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap()
}

#[test]
fn refusals_are_bare_status_codes() {
    let der = refusal(Refusal::MalformedRequest);
    let resp = OcspResponse::from_der(&der).unwrap();
    assert_eq!(resp.response_status, OcspResponseStatus::MalformedRequest);
    assert!(resp.response_bytes.is_none());
    assert_eq!(refusal(Refusal::Unauthorized)[4], 6);
    assert_eq!(refusal(Refusal::TryLater)[4], 3);
}

#[test]
fn malformed_requests_are_refused_with_a_reason() {
    assert!(parse_request(b"").is_err());
    assert!(parse_request(b"garbage").is_err());
    assert!(parse_request(&[0x30, 0x80, 0x00, 0x00]).is_err());
    let big = vec![0x30; MAX_REQUEST + 1];
    assert!(parse_request(&big).unwrap_err().0.contains("larger"));
    // A well-formed request listing no certificate.
    let empty = build_request(&[], None).unwrap();
    assert!(
        parse_request(&empty)
            .unwrap_err()
            .0
            .contains("no certificate")
    );
    // Trailing bytes after the request.
    let ca = ca();
    let id = IssuerId::from_cert_der(ca.int.cert_der()).unwrap();
    let q = Query::new(
        &id,
        &Serial::random(OffsetDateTime::now_utc()).unwrap(),
        false,
    )
    .unwrap();
    let mut der = build_request(&[q], None).unwrap();
    der.push(0);
    assert!(parse_request(&der).is_err());
}

#[test]
fn too_many_queries_are_malformed() {
    let ca = ca();
    let id = IssuerId::from_cert_der(ca.int.cert_der()).unwrap();
    let qs: Vec<_> = (0..=MAX_QUERIES)
        .map(|_| {
            Query::new(
                &id,
                &Serial::random(OffsetDateTime::now_utc()).unwrap(),
                false,
            )
            .unwrap()
        })
        .collect();
    let der = build_request(&qs, None).unwrap();
    assert!(parse_request(&der).unwrap_err().0.contains("at most"));
}

#[test]
fn requests_round_trip_with_both_hashes_and_nonce() {
    let ca = ca();
    let int = IssuerId::from_cert_der(ca.int.cert_der()).unwrap();
    let root = IssuerId::from_cert_der(ca.root.cert_der()).unwrap();
    let serial = Serial::random(OffsetDateTime::now_utc()).unwrap();
    let q1 = Query::new(&int, &serial, false).unwrap();
    let q256 = Query::new(&int, &serial, true).unwrap();
    let der = build_request(&[q1, q256], Some(&[7u8; 16])).unwrap();
    let req = parse_request(&der).unwrap();
    assert!(req.has_nonce());
    assert_eq!(req.queries.len(), 2);
    for q in &req.queries {
        assert!(q.is_about(&int));
        assert!(!q.is_about(&root));
        assert_eq!(q.serial(), Some(serial.clone()));
    }
    // Nonces up to MAX_NONCE octets are echoed (the OCTET STRING's
    // header does not count); a longer one is not.
    for len in [1, 32, MAX_NONCE - 1, MAX_NONCE] {
        let der = build_request(&req.queries, Some(&vec![1u8; len])).unwrap();
        assert!(parse_request(&der).unwrap().has_nonce(), "{len} octets");
    }
    let der = build_request(&req.queries, Some(&[1u8; MAX_NONCE + 1])).unwrap();
    assert!(!parse_request(&der).unwrap().has_nonce());
}

/// A delegated responder (valid for an hour from `t`) and its key.
fn responder(ca: &Ca, t: OffsetDateTime) -> (Issued, PrivateKey) {
    let key = KeyType::EcdsaP256.generate().unwrap();
    let cert = issue_responder(
        &ca.int,
        &key,
        "Test",
        "OCSP Responder",
        Duration::from_secs(3600),
        t,
    )
    .unwrap();
    (cert, key)
}

#[test]
fn delegated_responder_signs_good_revoked_and_unknown() {
    let ca = ca();
    let t = now();
    let (responder, key) = responder(&ca, t);
    let (_, parsed) = X509Certificate::from_der(&responder.der).unwrap();
    let eku = parsed.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.ocsp_signing);
    assert!(!parsed.is_ca());
    assert!(
        parsed
            .extensions()
            .iter()
            .any(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.48.1.5")
    );
    let spki = parsed.public_key().subject_public_key.data.to_vec();
    let signer = Signer::new(
        &responder.der,
        key,
        &[responder.der.clone(), ca.int.cert_der().clone()],
    )
    .unwrap();
    assert_eq!(signer.not_after(), responder.not_after);

    let int = IssuerId::from_cert_der(ca.int.cert_der()).unwrap();
    let (a, b, c) = (
        Serial::random(OffsetDateTime::now_utc()).unwrap(),
        Serial::random(OffsetDateTime::now_utc()).unwrap(),
        Serial::random(OffsetDateTime::now_utc()).unwrap(),
    );
    let queries = vec![
        Query::new(&int, &a, false).unwrap(),
        Query::new(&int, &b, true).unwrap(),
        Query::new(&int, &c, false).unwrap(),
    ];
    let nonce = [9u8; 20];
    let req = parse_request(&build_request(&queries, Some(&nonce)).unwrap()).unwrap();
    let revoked_at = t - Duration::from_secs(60);
    let answers = vec![
        (req.queries[0].clone(), Status::Good),
        (
            req.queries[1].clone(),
            Status::Revoked {
                at: revoked_at,
                reason: Some(1),
            },
        ),
        (req.queries[2].clone(), Status::Unknown),
    ];
    let der = signer
        .respond(&req, &answers, t, t + Duration::from_secs(300))
        .unwrap();
    let basic = basic(&der);
    let tbs = &basic.tbs_response_data;
    assert_eq!(tbs.responses.len(), 3);
    assert!(matches!(tbs.responses[0].cert_status, CertStatus::Good(_)));
    match &tbs.responses[1].cert_status {
        CertStatus::Revoked(info) => {
            assert_eq!(
                info.revocation_time.0.to_unix_duration().as_secs() as i64,
                revoked_at.unix_timestamp()
            );
            assert_eq!(info.revocation_reason, Some(CrlReason::KeyCompromise));
        }
        other => panic!("expected revoked, got {other:?}"),
    }
    assert!(matches!(
        tbs.responses[2].cert_status,
        CertStatus::Unknown(_)
    ));
    assert_eq!(
        tbs.responses[0]
            .next_update
            .unwrap()
            .0
            .to_unix_duration()
            .as_secs() as i64,
        (t + Duration::from_secs(300)).unix_timestamp()
    );
    // The nonce extension is echoed byte for byte.
    let echoed = basic.nonce().unwrap();
    assert_eq!(echoed.0.as_bytes(), nonce);
    assert_eq!(basic.certs.as_ref().map(Vec::len), Some(2));
    // The signature over tbsResponseData verifies with the responder's key.
    let tbs_der = tbs.to_der().unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &spki)
        .verify(&tbs_der, basic.signature.raw_bytes())
        .unwrap();
    assert_eq!(
        basic.signature_algorithm.oid.to_string(),
        "1.2.840.10045.4.3.2"
    );
}

#[test]
fn every_key_type_signs_with_a_matching_algorithm() {
    let ca = ca();
    let id = IssuerId::from_cert_der(ca.int.cert_der()).unwrap();
    let req = parse_request(
        &build_request(
            &[Query::new(
                &id,
                &Serial::random(OffsetDateTime::now_utc()).unwrap(),
                false,
            )
            .unwrap()],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    for (kt, oid) in [
        (KeyType::EcdsaP384, "1.2.840.10045.4.3.3"),
        (KeyType::Ed25519, "1.3.101.112"),
        (KeyType::Rsa2048, "1.2.840.113549.1.1.11"),
    ] {
        let key = kt.generate().unwrap();
        let cert =
            issue_responder(&ca.int, &key, "T", "R", Duration::from_secs(60), now()).unwrap();
        let signer = Signer::new(&cert.der, key, &[]).unwrap();
        let t = now();
        let der = signer
            .respond(
                &req,
                &[(req.queries[0].clone(), Status::Good)],
                t,
                t + Duration::from_secs(60),
            )
            .unwrap();
        let b = basic(&der);
        assert_eq!(b.signature_algorithm.oid.to_string(), oid);
        assert!(b.certs.is_none());
        assert!(b.nonce().is_none());
    }
}

#[test]
fn signer_refuses_a_foreign_key_and_bad_windows() {
    let ca = ca();
    let key = KeyType::EcdsaP256.generate().unwrap();
    let cert = issue_responder(&ca.int, &key, "T", "R", Duration::from_secs(60), now()).unwrap();
    let other = KeyType::EcdsaP256.generate().unwrap();
    assert!(Signer::new(&cert.der, other, &[]).is_err());
    let signer = Signer::new(&cert.der, key, &[]).unwrap();
    let id = IssuerId::from_cert_der(ca.int.cert_der()).unwrap();
    let req = parse_request(
        &build_request(
            &[Query::new(
                &id,
                &Serial::random(OffsetDateTime::now_utc()).unwrap(),
                false,
            )
            .unwrap()],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let t = now();
    assert!(signer.respond(&req, &[], t, t).is_err());
}

#[test]
fn responder_validity_is_capped_by_the_issuer() {
    let ca = ca();
    let key = KeyType::EcdsaP256.generate().unwrap();
    let cert = issue_responder(
        &ca.int,
        &key,
        "T",
        "R",
        Duration::from_secs(86_400 * 400),
        now(),
    )
    .unwrap();
    assert_eq!(cert.not_after, ca.int.not_after());
}

#[test]
fn leaves_carry_the_ocsp_url_in_aia_and_pass_the_pre_issuance_lint() {
    let ca = ca();
    let key = KeyType::EcdsaP256.generate().unwrap();
    let t = OffsetDateTime::now_utc();
    let req = LeafRequest {
        profile: Profile::Client,
        spiffe_id: Some("spiffe://example.org/a".parse().unwrap()),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        common_name: None,
        ttl: Duration::from_secs(3600),
        clamp_to_issuer: true,
        serial: Serial::random(OffsetDateTime::now_utc()).unwrap(),
        crl_url: Some("http://127.0.0.1:1/v1/crl".into()),
        ocsp_url: Some("http://127.0.0.1:1/ocsp".into()),
    };
    let leaf = ca.int.sign_leaf(&key.public_key_der(), &req, t).unwrap();
    let (_, parsed) = X509Certificate::from_der(&leaf.der).unwrap();
    let urls: Vec<String> = parsed
        .extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => Some(
                aia.accessdescs
                    .iter()
                    .map(|d| format!("{} {:?}", d.access_method.to_id_string(), d.access_location))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(urls.len(), 1, "{urls:?}");
    assert!(urls[0].starts_with("1.3.6.1.5.5.7.48.1 "), "{urls:?}");
    assert!(urls[0].contains("http://127.0.0.1:1/ocsp"), "{urls:?}");
    let aia = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.1")
        .unwrap();
    assert!(!aia.critical);
    crate::lint::pre_issuance(
        &leaf.der,
        ca.int.cert_der(),
        &crate::lint::LintPolicy::default(),
        t,
    )
    .unwrap();
    let bad = LeafRequest {
        ocsp_url: Some("http://exämple/ocsp".into()),
        ..req
    };
    assert!(ca.int.sign_leaf(&key.public_key_der(), &bad, t).is_err());
}

/// A leaf of `ca.int` with a fresh serial.
fn leaf(ca: &Ca, t: OffsetDateTime) -> Issued {
    let key = KeyType::EcdsaP256.generate().unwrap();
    let req = LeafRequest {
        profile: Profile::Client,
        spiffe_id: Some("spiffe://example.org/a".parse().unwrap()),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        common_name: None,
        ttl: Duration::from_secs(3600),
        clamp_to_issuer: true,
        serial: Serial::random(t).unwrap(),
        crl_url: None,
        ocsp_url: None,
    };
    ca.int.sign_leaf(&key.public_key_der(), &req, t).unwrap()
}

#[test]
fn responses_validate_for_the_certificate_asked_about() {
    let ca = ca();
    let t = now();
    let algs = webpki::ALL_VERIFICATION_ALGS;
    let (responder, key) = responder(&ca, t);
    let signer = Signer::new(&responder.der, key, std::slice::from_ref(&responder.der)).unwrap();
    let (ours, other) = (leaf(&ca, t), leaf(&ca, t));
    let query = Query::for_certificate(&ours.der, ca.int.cert_der()).unwrap();
    // The request asks about the leaf's serial under the issuer.
    let req = parse_request(&build_request(std::slice::from_ref(&query), None).unwrap()).unwrap();
    assert_eq!(req.queries[0].serial(), Some(ours.serial.clone()));
    let id = IssuerId::from_cert_der(ca.int.cert_der()).unwrap();
    assert!(req.queries[0].is_about(&id));
    let next = t + Duration::from_secs(300);
    let revoked_at = t - Duration::from_secs(60);
    let answer = |status| signer.respond(&req, &[(req.queries[0].clone(), status)], t, next);

    let good = answer(Status::Good).unwrap();
    let unix = t.unix_timestamp();
    let v = validate_response(&good, &query, ca.int.cert_der(), unix, algs).unwrap();
    assert_eq!(v.state, CertState::Good);
    assert_eq!(v.this_update, unix);
    assert_eq!(v.next_update, Some(next.unix_timestamp()));
    let revoked = answer(Status::Revoked {
        at: revoked_at,
        reason: None,
    })
    .unwrap();
    assert_eq!(
        validate_response(&revoked, &query, ca.int.cert_der(), unix, algs)
            .unwrap()
            .state,
        CertState::Revoked {
            at: revoked_at.unix_timestamp()
        }
    );
    // About another certificate of the same issuer: says nothing about it.
    let theirs = Query::for_certificate(&other.der, ca.int.cert_der()).unwrap();
    assert_eq!(
        validate_response(&good, &theirs, ca.int.cert_der(), unix, algs),
        Err(ResponseError::OtherCertificate)
    );
    // The delegated responder counts only while it is valid, and only for
    // the issuer that certified it.
    let later = unix + 2 * 3600;
    assert_eq!(
        validate_response(&good, &query, ca.int.cert_der(), later, algs),
        Err(ResponseError::Untrusted)
    );
    assert_eq!(
        validate_response(&good, &query, ca.root.cert_der(), unix, algs),
        Err(ResponseError::Untrusted)
    );
    // No algorithm accepted, no signature accepted.
    assert_eq!(
        validate_response(&good, &query, ca.int.cert_der(), unix, &[]),
        Err(ResponseError::Untrusted)
    );
    // Refusals and garbage.
    assert!(matches!(
        validate_response(
            &refusal(Refusal::TryLater),
            &query,
            ca.int.cert_der(),
            unix,
            algs
        ),
        Err(ResponseError::Unsuccessful(_))
    ));
    assert!(matches!(
        validate_response(b"\x30\x00", &query, ca.int.cert_der(), unix, algs),
        Err(ResponseError::Malformed(_))
    ));
    // A leaf and an issuer that did not issue it make no request.
    assert!(Query::for_certificate(&ours.der, ca.root.cert_der()).is_err());
}
