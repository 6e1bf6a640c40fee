use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::*;
use crate::KeyType;
use crate::issue::{CaSpec, Issuer, new_root};

fn intermediate() -> Issuer {
    let spec = CaSpec {
        name: "Test".into(),
        root_validity: Duration::from_secs(86_400 * 10),
        intermediate_validity: Duration::from_secs(86_400),
        permitted_dns: Vec::new(),
    };
    let now = OffsetDateTime::now_utc();
    let root_key = KeyType::EcdsaP256.generate().unwrap();
    let root = new_root(&spec, &root_key, now).unwrap();
    let root_issuer = Issuer::new(root.der, root_key).unwrap();
    let key = KeyType::EcdsaP256.generate().unwrap();
    let int = root_issuer.sign_intermediate(&spec, &key, now).unwrap();
    Issuer::new(int.der, key).unwrap()
}

#[test]
fn reasons_parse_by_name_any_case_and_code() {
    assert_eq!(parse_reason("keyCompromise").unwrap(), 1);
    assert_eq!(parse_reason("KEY-COMPROMISE").unwrap(), 1);
    assert_eq!(parse_reason("cessation_of_operation").unwrap(), 5);
    assert_eq!(parse_reason("4").unwrap(), 4);
    assert_eq!(parse_reason("aACompromise").unwrap(), 10);
    assert!(parse_reason("certificateHold").is_err());
    assert!(parse_reason("removeFromCRL").is_err());
    assert!(parse_reason("bogus").is_err());
    assert!(parse_reason("7").is_err());
    assert_eq!(reason_name(9), Some("privilegeWithdrawn"));
}

#[test]
fn crl_lists_entries_with_number_reason_and_aki() {
    let issuer = intermediate();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let a = Serial::random(OffsetDateTime::now_utc()).unwrap();
    let b = Serial::random(OffsetDateTime::now_utc()).unwrap();
    let entries = [
        CrlEntry {
            serial: a.clone(),
            revoked_at: now,
            reason: Some(1),
        },
        CrlEntry {
            serial: b.clone(),
            revoked_at: now,
            reason: None,
        },
    ];
    let der = sign_crl(&issuer, &entries, 42, now, now + Duration::from_secs(3600)).unwrap();
    let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
    assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("42".into()));
    assert_eq!(
        crl.next_update().map(|t| t.to_datetime()),
        Some(now + Duration::from_secs(3600))
    );
    let serials: Vec<_> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    assert_eq!(serials, vec![a.as_bytes().to_vec(), b.as_bytes().to_vec()]);
    let first = crl.iter_revoked_certificates().next().unwrap();
    assert_eq!(first.reason_code().map(|(_, r)| r.0), Some(1));
    let second = crl.iter_revoked_certificates().nth(1).unwrap();
    assert!(second.reason_code().is_none());
    // AKI equals the intermediate's SKI, and the signature verifies.
    let (_, int) = X509Certificate::from_der(issuer.cert_der()).unwrap();
    let ski = int
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    let aki = crl
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    assert!(ski.is_some());
    assert_eq!(aki, ski);
    assert_eq!(crl.issuer(), int.subject());
}

#[test]
fn crl_refuses_bad_window() {
    let issuer = intermediate();
    let now = OffsetDateTime::now_utc();
    assert!(sign_crl(&issuer, &[], 1, now, now).is_err());
    let der = sign_crl(&issuer, &[], 1, now, now + Duration::from_secs(60)).unwrap();
    assert!(CertificateRevocationList::from_der(&der).is_ok());
}
