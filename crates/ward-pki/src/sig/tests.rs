//! ML-DSA end to end inside ward-pki: keys, a hierarchy per parameter set,
//! path validation (webpki), CRLs, OCSP, CSRs, mixed chains, tampering.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::crl::{CrlEntry, Trust, sign_crl, verify as verify_crl_der};
use crate::issue::{CaSpec, Issued, Issuer, LeafRequest, Profile, new_root};
use crate::ocsp::{Query, Signer, Status, build_request, parse_request, validate_response};
use crate::verify::{Purpose, VerifyOptions, verify as verify_chain};
use crate::{KeyType, PrivateKey, PublicKeyKind, Serial};

const PQ: [KeyType; 3] = [KeyType::MlDsa44, KeyType::MlDsa65, KeyType::MlDsa87];

fn spec() -> CaSpec {
    CaSpec {
        name: "PQ".into(),
        root_validity: Duration::from_secs(86_400 * 10),
        intermediate_validity: Duration::from_secs(86_400),
        permitted_dns: Vec::new(),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

/// Root and intermediate of `root_kt` / `int_kt`.
fn hierarchy(root_kt: KeyType, int_kt: KeyType) -> (Issued, Issuer) {
    let t = now();
    let root_key = root_kt.generate().unwrap();
    let root = new_root(&spec(), &root_key, t).unwrap();
    let root_issuer = Issuer::new(root.der.clone(), root_key).unwrap();
    let int_key = int_kt.generate().unwrap();
    let int = root_issuer.sign_intermediate(&spec(), &int_key, t).unwrap();
    (root, Issuer::new(int.der, int_key).unwrap())
}

fn leaf(int: &Issuer, key: &PrivateKey) -> Issued {
    let req = LeafRequest {
        profile: Profile::Peer,
        spiffe_id: Some("spiffe://example.org/pq".parse().unwrap()),
        dns_names: vec!["pq.example.org".into()],
        ip_addresses: Vec::new(),
        common_name: None,
        ttl: Duration::from_secs(3600),
        clamp_to_issuer: true,
        serial: Serial::random(now()).unwrap(),
        crl_url: None,
        ocsp_url: None,
    };
    int.sign_leaf(&key.public_key_der(), &req, now()).unwrap()
}

fn validate(leaf: &Issued, int: &Issuer, root: &Issued) -> Result<(), String> {
    let chain = [leaf.der.clone(), int.cert_der().clone()];
    let opts = VerifyOptions {
        purpose: Some(Purpose::Client),
        name: None,
        spiffe_id: None,
        now: UnixTime::now(),
    };
    verify_chain(&chain, std::slice::from_ref(&root.der), &opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn ml_dsa_keys_round_trip_through_pkcs8_pem_and_report_their_kind() {
    for (kt, level, pk_len) in [
        (KeyType::MlDsa44, 44, 1312),
        (KeyType::MlDsa65, 65, 1952),
        (KeyType::MlDsa87, 87, 2592),
    ] {
        assert!(kt.is_post_quantum());
        assert_eq!(kt.as_str().parse::<KeyType>().unwrap(), kt);
        let key = kt.generate().unwrap();
        assert_eq!(key.key_type().unwrap(), kt);
        let kind = PublicKeyKind::from_spki_der(&key.public_key_der()).unwrap();
        assert_eq!(kind, PublicKeyKind::MlDsa { level });
        assert_eq!(kind.to_string(), format!("ML-DSA-{level}"));
        let pem = key.to_pkcs8_pem().unwrap();
        let again = PrivateKey::from_pem(&pem).unwrap();
        assert_eq!(again.public_key_der(), key.public_key_der());
        assert_eq!(again.key_type().unwrap(), kt);
        // The SPKI: SEQUENCE { AlgorithmIdentifier { OID } (no parameters),
        // BIT STRING of the raw key } (RFC 9881 §4).
        let spki = key.public_key_der();
        let (_, parsed) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
        assert!(parsed.algorithm.parameters.is_none());
        assert_eq!(parsed.subject_public_key.data.len(), pk_len);
        assert!(!format!("{key:?}").contains(&pem.lines().nth(1).unwrap()[..20]));
    }
    // A truncated ML-DSA key reads as an unknown key, not as ML-DSA.
    let key = KeyType::MlDsa65.generate().unwrap();
    let mut spki = key.public_key_der();
    spki.truncate(spki.len() - 1);
    assert!(
        PublicKeyKind::from_spki_der(&spki).is_err() || {
            PublicKeyKind::from_spki_der(&spki).unwrap() == PublicKeyKind::Other
        }
    );
}

#[test]
fn every_parameter_set_makes_a_hierarchy_that_validates() {
    for kt in PQ {
        let (root, int) = hierarchy(kt, kt);
        let key = kt.generate().unwrap();
        let l = leaf(&int, &key);
        validate(&l, &int, &root).unwrap_or_else(|e| panic!("{kt}: {e}"));
        crate::verify::issued_by(&l.der, int.cert_der()).unwrap();
        crate::verify::issued_by(int.cert_der(), &root.der).unwrap();
        let (_, cert) = X509Certificate::from_der(&l.der).unwrap();
        let (_, issuer) = X509Certificate::from_der(int.cert_der()).unwrap();
        assert!(is_ml_dsa(&cert.signature_algorithm));
        assert!(cert.signature_algorithm.parameters.is_none());
        verify_cert(&cert, issuer.public_key()).unwrap();
        // The leaf's own key did not sign it.
        assert!(verify_cert(&cert, cert.public_key()).is_err());
    }
}

#[test]
fn a_tampered_ml_dsa_certificate_is_refused() {
    let (root, int) = hierarchy(KeyType::MlDsa65, KeyType::MlDsa65);
    let l = leaf(&int, &KeyType::MlDsa65.generate().unwrap());
    // Flip one bit inside the signed part (the serial's last byte, well
    // before the signature) and one in the signature itself.
    let (_, cert) = X509Certificate::from_der(&l.der).unwrap();
    let tbs_len = cert.tbs_certificate.as_ref().len();
    for at in [20, l.der.len() - 10] {
        assert!(at < tbs_len || at > tbs_len + 20);
        let mut bad = l.der.to_vec();
        bad[at] ^= 0x01;
        let bad = Issued {
            der: CertificateDer::from(bad),
            ..l.clone()
        };
        let err = validate(&bad, &int, &root).unwrap_err();
        assert!(!err.is_empty());
        assert!(crate::verify::issued_by(&bad.der, int.cert_der()).is_err());
    }
}

#[test]
fn mixed_chains_validate_but_each_signature_uses_its_signers_algorithm() {
    // An ML-DSA leaf under an ECDSA CA: valid, but only classically signed
    // (no post-quantum assurance; docs/post-quantum.md).
    let (root, int) = hierarchy(KeyType::EcdsaP256, KeyType::EcdsaP256);
    let l = leaf(&int, &KeyType::MlDsa65.generate().unwrap());
    validate(&l, &int, &root).unwrap();
    let (_, cert) = X509Certificate::from_der(&l.der).unwrap();
    assert!(!is_ml_dsa(&cert.signature_algorithm));
    // A classical leaf under an ML-DSA-87 root and ML-DSA-44 intermediate.
    let (root, int) = hierarchy(KeyType::MlDsa87, KeyType::MlDsa44);
    let l = leaf(&int, &KeyType::EcdsaP256.generate().unwrap());
    validate(&l, &int, &root).unwrap();
    let (_, cert) = X509Certificate::from_der(int.cert_der()).unwrap();
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "2.16.840.1.101.3.4.3.19"
    );
}

#[test]
fn a_signature_claiming_another_parameter_set_is_refused() {
    let (_, int) = hierarchy(KeyType::MlDsa65, KeyType::MlDsa65);
    let l = leaf(&int, &KeyType::EcdsaP256.generate().unwrap());
    let mut der = l.der.to_vec();
    // Rewrite both signatureAlgorithm OIDs (inner and outer) from ML-DSA-65
    // (…3.18) to ML-DSA-44 (…3.17): the key no longer matches the claim.
    let oid65 = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12];
    let mut n = 0;
    for i in 0..der.len() - oid65.len() {
        if der[i..i + oid65.len()] == oid65 {
            der[i + oid65.len() - 1] = 0x11;
            n += 1;
        }
    }
    assert_eq!(n, 2);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let (_, issuer) = X509Certificate::from_der(int.cert_der()).unwrap();
    assert_eq!(
        verify_cert(&cert, issuer.public_key()),
        Err(X509Error::SignatureUnsupportedAlgorithm)
    );
}

#[test]
fn crls_from_an_ml_dsa_ca_are_signed_with_ml_dsa_and_verify() {
    for kt in PQ {
        let (root, int) = hierarchy(kt, kt);
        let t = now();
        let revoked = Serial::random(t).unwrap();
        let entries = [CrlEntry {
            serial: revoked.clone(),
            revoked_at: t,
            reason: Some(1),
        }];
        let der = sign_crl(&int, &entries, 7, t, t + Duration::from_secs(600)).unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        assert!(is_ml_dsa(&crl.signature_algorithm), "{kt}");
        let (_, issuer) = X509Certificate::from_der(int.cert_der()).unwrap();
        verify_crl(&crl, issuer.public_key()).unwrap();
        // Through the CRL checker the gate uses: the intermediate is learned
        // from the root, then the CRL verifies.
        let mut trust = Trust::default();
        trust.set_roots(&[root.der.to_vec()]);
        assert!(trust.learn(int.cert_der(), t.unix_timestamp()));
        let verified = verify_crl_der(&der, &trust, t.unix_timestamp()).unwrap();
        assert_eq!(verified.number_display(), "7");
        let mut bad = der.clone();
        let n = bad.len();
        bad[n - 5] ^= 0x01;
        assert!(verify_crl_der(&bad, &trust, t.unix_timestamp()).is_err());
    }
}

#[test]
fn ocsp_responses_from_an_ml_dsa_ca_are_signed_with_ml_dsa_and_validate() {
    for (kt, oid) in [
        (KeyType::MlDsa44, "2.16.840.1.101.3.4.3.17"),
        (KeyType::MlDsa65, "2.16.840.1.101.3.4.3.18"),
        (KeyType::MlDsa87, "2.16.840.1.101.3.4.3.19"),
    ] {
        let (_, int) = hierarchy(kt, kt);
        let t = now();
        let l = leaf(&int, &KeyType::EcdsaP256.generate().unwrap());
        let query = Query::for_certificate(&l.der, int.cert_der()).unwrap();
        let req =
            parse_request(&build_request(std::slice::from_ref(&query), None).unwrap()).unwrap();
        // A delegated responder with its own ML-DSA key, loaded back from
        // PEM as ward-ca loads it.
        let key = PrivateKey::from_pem(&kt.generate().unwrap().to_pkcs8_pem().unwrap()).unwrap();
        let responder =
            crate::ocsp::issue_responder(&int, &key, "PQ", "OCSP", Duration::from_secs(600), t)
                .unwrap();
        let signer =
            Signer::new(&responder.der, key, std::slice::from_ref(&responder.der)).unwrap();
        let der = signer
            .respond(
                &req,
                &[(req.queries[0].clone(), Status::Good)],
                t,
                t + Duration::from_secs(300),
            )
            .unwrap();
        let v = validate_response(
            &der,
            &query,
            int.cert_der(),
            t.unix_timestamp(),
            webpki::ALL_VERIFICATION_ALGS,
        )
        .unwrap_or_else(|e| panic!("{kt}: {e}"));
        assert_eq!(v.state, crate::ocsp::CertState::Good);
        use der::Decode as _;
        let resp = x509_ocsp::OcspResponse::from_der(&der).unwrap();
        let basic = x509_ocsp::BasicOcspResponse::from_der(
            resp.response_bytes.unwrap().response.as_bytes(),
        )
        .unwrap();
        assert_eq!(basic.signature_algorithm.oid.to_string(), oid);
        assert!(basic.signature_algorithm.parameters.is_none());
    }
}

#[test]
fn ml_dsa_csrs_prove_possession() {
    for kt in PQ {
        let key = kt.generate().unwrap();
        let pem = key.csr_pem().unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, csr) = X509CertificationRequest::from_der(&block.contents).unwrap();
        verify_csr(&csr).unwrap();
        assert_eq!(
            csr.certification_request_info.subject_pki.raw,
            key.public_key_der().as_slice()
        );
        let mut bad = block.contents.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x01;
        let (_, csr) = X509CertificationRequest::from_der(&bad).unwrap();
        assert_eq!(verify_csr(&csr), Err(X509Error::SignatureVerificationError));
    }
}

fn lint_ids(der: &[u8], issuer: &[u8]) -> Vec<(String, crate::lint::Severity)> {
    let ctx = crate::lint::Context {
        role: crate::lint::Role::Leaf,
        issuer: Some(issuer),
        now: now(),
    };
    crate::lint::lint(der, &ctx, &crate::lint::LintPolicy::default())
        .into_iter()
        .map(|f| (f.id, f.severity))
        .collect()
}

#[test]
fn lint_knows_ml_dsa_keys_signatures_and_mixed_chains() {
    use crate::lint::Severity;
    // All ML-DSA-65: nothing about keys or signatures.
    let (_, int) = hierarchy(KeyType::MlDsa65, KeyType::MlDsa65);
    let l = leaf(&int, &KeyType::MlDsa65.generate().unwrap());
    let ids = lint_ids(&l.der, int.cert_der());
    assert!(
        ids.iter()
            .all(|(id, _)| !id.starts_with("wkey.") && !id.starts_with("wsig.")),
        "{ids:?}"
    );
    // A stronger leaf under a weaker ML-DSA issuer: a notice.
    let l = leaf(&int, &KeyType::MlDsa87.generate().unwrap());
    let ids = lint_ids(&l.der, int.cert_der());
    assert!(
        ids.contains(&("wkey.pq_issuer_weaker".into(), Severity::Notice)),
        "{ids:?}"
    );
    // An ML-DSA leaf under ECDSA: a warning, not an error (Ward issues it).
    let (_, ec) = hierarchy(KeyType::EcdsaP256, KeyType::EcdsaP256);
    let l = leaf(&ec, &KeyType::MlDsa44.generate().unwrap());
    let ids = lint_ids(&l.der, ec.cert_der());
    assert!(
        ids.contains(&("wkey.pq_signed_classically".into(), Severity::Warning)),
        "{ids:?}"
    );
    assert!(ids.iter().all(|(_, s)| *s != Severity::Error), "{ids:?}");
    // An ML-DSA key allowed to encipher: an error.
    let key = KeyType::MlDsa44.generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["x.example.org".into()]).unwrap();
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, int.rcgen_issuer()).unwrap();
    let ids = lint_ids(cert.der(), int.cert_der());
    assert!(
        ids.contains(&("wkey.ml_dsa_key_usage".into(), Severity::Error)),
        "{ids:?}"
    );
    assert!(
        !ids.iter().any(|(id, _)| id == "wsig.issuer_signature"),
        "{ids:?}"
    );
}
