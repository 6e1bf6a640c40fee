//! Revocation and CRL publication against a real SQLite store.

use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::*;
use crate::authority::Policy;
use crate::dir::{CaDir, InitOptions};

async fn authority(tmp: &std::path::Path, crl_url: Option<String>) -> Authority {
    let ca = CaDir::new(tmp.join("ca"));
    ca.init(
        &InitOptions {
            trust_domain: "example.org".parse().unwrap(),
            name: "Test".into(),
            key_type: ward_pki::KeyType::EcdsaP256,
            root_validity: Duration::from_secs(10 * 365 * 86_400),
            intermediate_validity: Duration::from_secs(365 * 86_400),
            offline_root: None,
            permitted_dns: Vec::new(),
            database: None,
            pkcs11: None,
        },
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let store = ward_store::connect(tmp.join("ward.db").to_str().unwrap())
        .await
        .unwrap();
    Authority::new(
        Policy {
            trust_domain: "example.org".parse().unwrap(),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(86_400),
        },
        ca.intermediate_issuer().unwrap(),
        &ca.roots().unwrap(),
        store,
    )
    .with_certificate_urls(crl_url, None)
    .with_revocation(CrlSettings::default())
}

fn listed(crl: &PublishedCrl) -> Vec<(Vec<u8>, Option<u8>)> {
    let (_, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
    parsed
        .iter_revoked_certificates()
        .map(|r| (r.raw_serial().to_vec(), r.reason_code().map(|(_, c)| c.0)))
        .collect()
}

#[tokio::test]
async fn revoke_is_idempotent_and_resigns_the_crl() {
    let tmp = tempfile::tempdir().unwrap();
    let a = authority(tmp.path(), None).await;
    let now = OffsetDateTime::now_utc();
    let first = a.refresh_crl(now).await.unwrap();
    assert_eq!(first.entries, 0);
    // Nothing changed: the same CRL is kept, no CRL number is burnt.
    let again = a.refresh_crl(now).await.unwrap();
    assert_eq!(again.number, first.number);

    let (issued, _) = a
        .issue_server_identity(&["localhost".into()], &[], Duration::from_secs(600), now)
        .await
        .unwrap();
    let r = a
        .revoke_certificate(&issued.serial, Some(1), now)
        .await
        .unwrap();
    assert!(r.newly_revoked);
    assert_eq!(r.reason, Some(1));
    let crl = a.current_crl().unwrap();
    assert!(crl.number > first.number);
    assert_eq!(
        listed(&crl),
        vec![(issued.serial.as_bytes().to_vec(), Some(1))]
    );
    assert!(crl.pem.starts_with(b"-----BEGIN X509 CRL-----\n"));
    assert_eq!(crl.next_update - crl.this_update, time::Duration::hours(1));

    let later = now + Duration::from_secs(5);
    let r2 = a
        .revoke_certificate(&issued.serial, Some(4), later)
        .await
        .unwrap();
    assert!(!r2.newly_revoked);
    assert_eq!(r2.reason, Some(1), "the first reason is kept");
    assert_eq!(
        r2.revoked_at.unix_timestamp(),
        r.revoked_at.unix_timestamp()
    );

    let unknown = Serial::random(OffsetDateTime::now_utc()).unwrap();
    assert!(matches!(
        a.revoke_certificate(&unknown, None, now).await,
        Err(AuthorityError::NotFound(_))
    ));

    // Half of the validity later the CRL is re-signed even if unchanged.
    let aged = a
        .refresh_crl(now + Duration::from_secs(1900))
        .await
        .unwrap();
    assert!(aged.number > crl.number);
    // Once the certificate expired it is dropped from the CRL.
    let expired = a
        .refresh_crl(now + Duration::from_secs(3 * 3600))
        .await
        .unwrap();
    assert_eq!(expired.entries, 0);
}

#[tokio::test]
async fn crl_url_lands_in_issued_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let a = authority(tmp.path(), Some("http://ca.test/v1/crl".into())).await;
    let (issued, _) = a
        .issue_server_identity(
            &["localhost".into()],
            &[],
            Duration::from_secs(600),
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let (_, cert) = x509_parser::prelude::X509Certificate::from_der(&issued.leaf_der).unwrap();
    let text = format!("{:?}", cert.extensions());
    assert!(text.contains("http://ca.test/v1/crl"), "{text}");
}

#[tokio::test]
async fn tools_that_do_not_publish_only_record() {
    let tmp = tempfile::tempdir().unwrap();
    let published = authority(tmp.path(), None).await;
    let now = OffsetDateTime::now_utc();
    let (issued, _) = published
        .issue_server_identity(&["localhost".into()], &[], Duration::from_secs(600), now)
        .await
        .unwrap();
    // A second authority on the same database, as `ward revoke --dir` builds it.
    let ca = CaDir::new(tmp.path().join("ca"));
    let store = ward_store::connect(tmp.path().join("ward.db").to_str().unwrap())
        .await
        .unwrap();
    let tool = Authority::new(
        published.policy().clone(),
        ca.intermediate_issuer().unwrap(),
        &ca.roots().unwrap(),
        store,
    );
    tool.revoke_certificate(&issued.serial, Some(5), now)
        .await
        .unwrap();
    assert!(tool.current_crl().is_none(), "no CRL signed");
    // The serving authority sees it at its next refresh; CRL numbers are
    // never below the clock in microseconds (so never go back).
    let floor = u64::try_from(now.unix_timestamp_nanos() / 1000).unwrap();
    let crl = published.refresh_crl(now).await.unwrap();
    assert!(crl.number >= floor, "{} < {floor}", crl.number);
    assert_eq!(
        listed(&crl),
        vec![(issued.serial.as_bytes().to_vec(), Some(5))]
    );
}
