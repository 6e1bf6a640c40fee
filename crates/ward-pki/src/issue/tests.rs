use std::time::Duration;

use rustls_pki_types::UnixTime;
use time::OffsetDateTime;

use super::*;
use crate::inspect::CertInfo;
use crate::verify::{Purpose, VerifyError, VerifyOptions, verify};
use crate::{KeyType, SpiffeIdPattern};

const HOUR: Duration = Duration::from_secs(3600);

struct Ca {
    root: Issued,
    intermediate: Issuer,
}

fn spec() -> CaSpec {
    CaSpec {
        name: "Test".into(),
        root_validity: 10 * 365 * 24 * HOUR,
        intermediate_validity: 365 * 24 * HOUR,
        permitted_dns: Vec::new(),
    }
}

fn ca(key_type: KeyType) -> Ca {
    let now = OffsetDateTime::now_utc();
    let root_key = key_type.generate().unwrap();
    let root = new_root(&spec(), &root_key, now).unwrap();
    let root_issuer = Issuer::new(root.der.clone(), root_key).unwrap();
    let int_key = key_type.generate().unwrap();
    let int = root_issuer
        .sign_intermediate(&spec(), &int_key, now)
        .unwrap();
    Ca {
        root,
        intermediate: Issuer::new(int.der, int_key).unwrap(),
    }
}

fn request(profile: Profile, id: &str) -> LeafRequest {
    LeafRequest {
        profile,
        spiffe_id: Some(id.parse().unwrap()),
        dns_names: vec!["svc.example.org".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        common_name: None,
        ttl: HOUR,
        clamp_to_issuer: false,
        serial: Serial::random(OffsetDateTime::now_utc()).unwrap(),
        crl_url: None,
        ocsp_url: None,
    }
}

fn opts(purpose: Option<Purpose>) -> VerifyOptions<'static> {
    VerifyOptions {
        purpose,
        name: None,
        spiffe_id: None,
        now: UnixTime::now(),
    }
}

#[test]
fn leaf_per_profile_validates_only_for_its_purpose() {
    let ca = ca(KeyType::EcdsaP256);
    let key = KeyType::EcdsaP256.generate().unwrap();
    let now = OffsetDateTime::now_utc();
    for (profile, good, bad) in [
        (
            Profile::Server,
            vec![Purpose::Server],
            Some(Purpose::Client),
        ),
        (
            Profile::Client,
            vec![Purpose::Client],
            Some(Purpose::Server),
        ),
        (Profile::Peer, vec![Purpose::Server, Purpose::Client], None),
    ] {
        let leaf = ca
            .intermediate
            .sign_leaf(
                &key.public_key_der(),
                &request(profile, "spiffe://td/a"),
                now,
            )
            .unwrap();
        let chain = [leaf.der.clone(), ca.intermediate.cert_der().clone()];
        let roots = [ca.root.der.clone()];
        let ok = verify(&chain, &roots, &opts(None)).unwrap();
        assert_eq!(ok.purposes, good, "{profile}");
        assert_eq!(ok.path_len, 3);
        assert_eq!(ok.spiffe_id.unwrap().as_str(), "spiffe://td/a");
        if let Some(bad) = bad {
            let err = verify(&chain, &roots, &opts(Some(bad))).unwrap_err();
            assert!(
                matches!(err, VerifyError::WrongEku { .. }),
                "{profile}: {err}"
            );
        }
        let info = CertInfo::from_der(&leaf.der, now).unwrap();
        assert!(!info.is_ca);
        assert_eq!(info.subject, "");
        assert_eq!(info.key_usage, vec!["Digital Signature"]);
    }
}

#[test]
fn every_key_type_signs_and_validates() {
    for kt in [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
    ] {
        let ca = ca(kt);
        let key = kt.generate().unwrap();
        let leaf = ca
            .intermediate
            .sign_leaf(
                &key.public_key_der(),
                &request(Profile::Peer, "spiffe://td/k"),
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let chain = [leaf.der, ca.intermediate.cert_der().clone()];
        verify(
            &chain,
            std::slice::from_ref(&ca.root.der),
            &opts(Some(Purpose::Client)),
        )
        .unwrap_or_else(|e| panic!("{kt}: {e}"));
    }
}

#[test]
fn names_and_spiffe_ids_are_checked() {
    let ca = ca(KeyType::EcdsaP256);
    let key = KeyType::EcdsaP256.generate().unwrap();
    let leaf = ca
        .intermediate
        .sign_leaf(
            &key.public_key_der(),
            &request(Profile::Server, "spiffe://td/ns/web"),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let chain = [leaf.der, ca.intermediate.cert_der().clone()];
    let roots = [ca.root.der.clone()];
    let check = |name: Option<&str>, pattern: Option<&str>| {
        let pattern: Option<SpiffeIdPattern> = pattern.map(|p| p.parse().unwrap());
        let o = VerifyOptions {
            name,
            spiffe_id: pattern.as_ref(),
            ..opts(Some(Purpose::Server))
        };
        verify(&chain, &roots, &o).map(|_| ())
    };
    check(Some("svc.example.org"), None).unwrap();
    check(Some("127.0.0.1"), None).unwrap();
    assert!(matches!(
        check(Some("other.example.org"), None),
        Err(VerifyError::NameMismatch { .. })
    ));
    check(None, Some("spiffe://td/ns/web")).unwrap();
    check(None, Some("spiffe://td/ns/*")).unwrap();
    assert!(matches!(
        check(None, Some("spiffe://td/other")),
        Err(VerifyError::SpiffeIdMismatch { .. })
    ));
}

#[test]
fn missing_intermediate_and_foreign_root_are_unknown_issuer() {
    let ca1 = ca(KeyType::EcdsaP256);
    let ca2 = ca(KeyType::EcdsaP256); // same names, other keys
    let key = KeyType::EcdsaP256.generate().unwrap();
    let leaf = ca1
        .intermediate
        .sign_leaf(
            &key.public_key_der(),
            &request(Profile::Client, "spiffe://td/a"),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let alone = [leaf.der.clone()];
    assert_eq!(
        verify(&alone, std::slice::from_ref(&ca1.root.der), &opts(None)).unwrap_err(),
        VerifyError::UnknownIssuer
    );
    let chain = [leaf.der, ca1.intermediate.cert_der().clone()];
    let err = verify(&chain, std::slice::from_ref(&ca2.root.der), &opts(None)).unwrap_err();
    assert_eq!(err, VerifyError::SignatureMismatch);
    assert_eq!(err.code(), "unknown_issuer");
}

#[test]
fn lifetime_policy() {
    let ca = ca(KeyType::EcdsaP256);
    let key = KeyType::EcdsaP256.generate().unwrap();
    let now = OffsetDateTime::now_utc();
    let mut req = request(Profile::Client, "spiffe://td/a");

    req.ttl = Duration::from_secs(10);
    let short = ca
        .intermediate
        .sign_leaf(&key.public_key_der(), &req, now)
        .unwrap();
    assert_eq!((short.not_after - now).whole_seconds(), 10);
    assert!((now - short.not_before).whole_seconds() <= 30);
    assert!(short.not_before >= ca.intermediate.not_before());

    req.ttl = Duration::from_secs(9);
    let err = ca
        .intermediate
        .sign_leaf(&key.public_key_der(), &req, now)
        .unwrap_err();
    assert!(err.to_string().contains("below the minimum"), "{err}");

    req.ttl = 2 * 365 * 24 * HOUR;
    let err = ca
        .intermediate
        .sign_leaf(&key.public_key_der(), &req, now)
        .unwrap_err();
    assert!(err.to_string().contains("outlive the issuing CA"), "{err}");
    req.clamp_to_issuer = true;
    let clamped = ca
        .intermediate
        .sign_leaf(&key.public_key_der(), &req, now)
        .unwrap();
    assert_eq!(clamped.not_after, ca.intermediate.not_after());
}

#[test]
fn a_leaf_needs_a_name_and_valid_dns() {
    let ca = ca(KeyType::EcdsaP256);
    let key = KeyType::EcdsaP256.generate().unwrap();
    let now = OffsetDateTime::now_utc();
    let mut req = request(Profile::Server, "spiffe://td/a");
    req.spiffe_id = None;
    req.dns_names.clear();
    req.ip_addresses.clear();
    req.common_name = Some("only-a-cn".into());
    assert!(
        ca.intermediate
            .sign_leaf(&key.public_key_der(), &req, now)
            .is_err()
    );
    req.dns_names = vec!["bad_name.example".into()];
    assert!(
        ca.intermediate
            .sign_leaf(&key.public_key_der(), &req, now)
            .is_err()
    );
    req.dns_names = vec!["*.Example.ORG".into()];
    let ok = ca
        .intermediate
        .sign_leaf(&key.public_key_der(), &req, now)
        .unwrap();
    let info = CertInfo::from_der(&ok.der, now).unwrap();
    assert_eq!(info.sans.dns, vec!["*.example.org"]);
    assert_eq!(info.subject, "CN=only-a-cn");
}

#[test]
fn issuer_rejects_a_key_that_is_not_its_own() {
    let ca = ca(KeyType::EcdsaP256);
    let other = KeyType::EcdsaP256.generate().unwrap();
    let err = Issuer::new(ca.root.der.clone(), other).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
}

#[test]
fn ca_certificates_have_the_documented_shape() {
    let ca = ca(KeyType::EcdsaP256);
    let now = OffsetDateTime::now_utc();
    let root = CertInfo::from_der(&ca.root.der, now).unwrap();
    assert!(root.is_ca && root.path_len == Some(1) && root.self_issued);
    assert_eq!(root.key_usage, vec!["Key Cert Sign", "CRL Sign"]);
    let int = CertInfo::from_der(ca.intermediate.cert_der(), now).unwrap();
    assert!(int.is_ca && int.path_len == Some(0) && !int.self_issued);
    assert_eq!(
        int.key_usage,
        vec!["Digital Signature", "Key Cert Sign", "CRL Sign"]
    );
    assert_ne!(root.serial, int.serial);
}
