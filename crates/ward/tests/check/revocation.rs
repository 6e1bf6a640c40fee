//! `ward check` asks the leaf's CRL distribution point: a CRL served by a
//! test HTTP server, signed by the fixture intermediate, says one leaf is
//! revoked (exit 1, `wrev.revoked`) and another is good.

use ward_testkit::fixture;

use crate::servers::{HttpFile, RustlsServer, certs};
use crate::{check, errors, path_str, set};

#[tokio::test(flavor = "multi_thread")]
async fn revocation_through_the_crl_distribution_point() {
    use rcgen::{CertificateParams, CrlDistributionPoint, KeyPair};
    let int_der = certs(&fixture("intermediate.crt")).remove(0);
    let int_key =
        KeyPair::from_pem(&std::fs::read_to_string(fixture("intermediate.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&int_der, int_key).unwrap();
    let http = HttpFile::start().await;
    let crl_addr = http.addr;
    let now = time::OffsetDateTime::now_utc();
    let leaf = |serial: u8| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".into()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[serial; 16]));
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = now + time::Duration::days(30);
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![format!("http://{crl_addr}/crl")],
        }];
        let der = p.signed_by(&key, &issuer).unwrap().der().clone();
        (vec![der, int_der.clone()], key)
    };
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&[0x22; 16]),
            revocation_time: now - time::Duration::minutes(10),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    http.set_body(crl.der().to_vec());
    let root = fixture("root.crt");
    for (serial, want_status, want_errors) in [
        (0x11u8, "good", &[][..]),
        (0x22, "revoked", &["wrev.revoked"][..]),
    ] {
        let (chain, key) = leaf(serial);
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = RustlsServer::start_with(chain, key).await;
        let (code, report) = check(&[
            &server.target(),
            "--sni",
            "localhost",
            "--roots",
            path_str(&root),
        ])
        .await;
        assert_eq!(report["revocation"]["status"], want_status, "{report:#}");
        assert_eq!(report["revocation"]["source"], "crl");
        assert_eq!(errors(&report), set(want_errors), "{report:#}");
        assert_eq!(code, i32::from(!want_errors.is_empty()));
    }
    drop(http);
}
