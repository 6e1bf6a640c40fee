use std::os::unix::fs::PermissionsExt;

use super::*;

fn opts() -> InitOptions {
    InitOptions {
        trust_domain: "example.org".parse().unwrap(),
        name: "Test".into(),
        key_type: KeyType::EcdsaP256,
        root_validity: Duration::from_secs(10 * 365 * 86_400),
        intermediate_validity: Duration::from_secs(365 * 86_400),
        offline_root: None,
        permitted_dns: Vec::new(),
        database: None,
        pkcs11: None,
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_every_file_with_the_right_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    let report = ca.init(&opts(), OffsetDateTime::now_utc()).unwrap();
    assert_eq!(report.files.len(), 9);
    // jwt.key is made by the first `ca serve` (so directories made before
    // JWT-SVIDs gain one), not by init.
    assert!(!ca.file(JWT_KEY).exists());
    ca.jwt_signer().unwrap();
    for name in CA_FILES.into_iter().filter(|n| *n != DATABASE) {
        let p = ca.file(name);
        let want = if name.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&p), want, "{name}");
    }
    assert_eq!(mode(ca.path()), 0o700);
    assert_eq!(report.admin_spiffe_id, "spiffe://example.org/ward/admin");
    assert_eq!(ca.config().unwrap().ca.trust_domain.as_str(), "example.org");
    ca.intermediate_issuer().unwrap();
    assert_eq!(
        Fingerprint::of_der(&ca.roots().unwrap()[0]),
        report.root_fingerprint
    );
}

#[test]
fn init_refuses_an_existing_ca_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path());
    ca.init(&opts(), OffsetDateTime::now_utc()).unwrap();
    let before = fs::read(ca.file(INTERMEDIATE_KEY)).unwrap();
    let err = ca.init(&opts(), OffsetDateTime::now_utc()).unwrap_err();
    assert!(err.to_string().contains("already holds a CA"), "{err}");
    assert_eq!(fs::read(ca.file(INTERMEDIATE_KEY)).unwrap(), before);
}

#[test]
fn offline_root_goes_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    let offline = tmp.path().join("offline-root.key");
    let o = InitOptions {
        offline_root: Some(offline.clone()),
        ..opts()
    };
    ca.init(&o, OffsetDateTime::now_utc()).unwrap();
    assert!(!ca.file(ROOT_KEY).exists());
    assert_eq!(mode(&offline), 0o600);
    assert!(ca.config().unwrap().ca.offline_root);
}

#[test]
fn failure_part_way_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    // The offline root's directory does not exist: the last write fails.
    let o = InitOptions {
        offline_root: Some(tmp.path().join("missing-dir/root.key")),
        ..opts()
    };
    assert!(ca.init(&o, OffsetDateTime::now_utc()).is_err());
    assert!(!ca.path().exists(), "the CA directory was left behind");
}

#[test]
fn garbled_or_foreign_intermediate_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path());
    ca.init(&opts(), OffsetDateTime::now_utc()).unwrap();
    let key_path = ca.file(INTERMEDIATE_KEY);
    fs::write(
        &key_path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = ca.intermediate_issuer().unwrap_err().to_string();
    assert!(err.contains("intermediate.key"), "{err}");
    let foreign = KeyType::EcdsaP256.generate().unwrap();
    fs::write(&key_path, foreign.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let err = ca.intermediate_issuer().unwrap_err().to_string();
    assert!(err.contains("does not belong"), "{err}");
}

#[test]
fn root_ocsp_signer_prefers_the_delegated_responder_and_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let ca = CaDir::new(tmp.path().join("ca"));
    ca.init(&opts(), now).unwrap();
    assert_eq!(mode(&ca.file(ROOT_OCSP_KEY)), 0o600);
    assert!(matches!(
        ca.root_ocsp_signer(now).unwrap(),
        RootOcspSigner::Delegated(_)
    ));
    // A directory from before the OCSP responder: the root key signs.
    fs::remove_file(ca.file(ROOT_OCSP_CRT)).unwrap();
    fs::remove_file(ca.file(ROOT_OCSP_KEY)).unwrap();
    assert!(matches!(
        ca.root_ocsp_signer(now).unwrap(),
        RootOcspSigner::RootKey(_)
    ));
    // Offline root and no responder: nobody may answer about the intermediate.
    let off = CaDir::new(tmp.path().join("off"));
    let o = InitOptions {
        offline_root: Some(tmp.path().join("offline-root.key")),
        ..opts()
    };
    off.init(&o, now).unwrap();
    assert!(matches!(
        off.root_ocsp_signer(now).unwrap(),
        RootOcspSigner::Delegated(_)
    ));
    let later = now + Duration::from_secs(2 * 365 * 86_400);
    assert!(matches!(
        off.root_ocsp_signer(later).unwrap(),
        RootOcspSigner::None
    ));
    fs::remove_file(off.file(ROOT_OCSP_CRT)).unwrap();
    assert!(matches!(
        off.root_ocsp_signer(now).unwrap(),
        RootOcspSigner::None
    ));
}

#[tokio::test]
async fn init_with_store_records_the_admin_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    let now = OffsetDateTime::now_utc();
    let report = ca.init_with_store(&opts(), now).await.unwrap();
    assert_eq!(mode(&ca.file(DATABASE)), 0o600);
    let config = ca.config().unwrap();
    let store = ca.open_store(&config, None).await.unwrap();
    let serial = {
        let (_, c) = x509_parser::parse_x509_certificate(&report.admin_certificate).unwrap();
        Serial::from_be_bytes(c.raw_serial()).unwrap()
    };
    let record = store.certificate(&serial).await.unwrap().unwrap();
    assert_eq!(record.origin, Origin::Admin);
    assert_eq!(
        record.spiffe_id.as_ref().map(ward_pki::SpiffeId::as_str),
        Some("spiffe://example.org/ward/admin")
    );
    assert_eq!(record.der, report.admin_certificate.as_ref());
    // Recording the directory's certificates again changes nothing.
    ca.record_own_certificates(store.as_ref(), now)
        .await
        .unwrap();
    assert_eq!(store.count_certificates().await.unwrap(), 1);
    store.close().await;
}

#[tokio::test]
async fn init_with_an_unusable_store_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    let o = InitOptions {
        database: Some("mysql://nowhere/ward".into()),
        ..opts()
    };
    let err = ca
        .init_with_store(&o, OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("store"), "{err}");
    assert!(!ca.path().exists(), "{:?}", fs::read_dir(ca.path()).ok());
}

#[tokio::test]
async fn a_missing_store_is_refused_and_init_store_makes_one() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    let now = OffsetDateTime::now_utc();
    ca.init_with_store(&opts(), now).await.unwrap();
    fs::remove_file(ca.file(DATABASE)).unwrap();
    let config = ca.config().unwrap();
    let Err(err) = ca.open_store(&config, None).await else {
        panic!("a missing store was opened");
    };
    assert!(
        err.to_string()
            .contains(&ca.file(DATABASE).display().to_string()),
        "{err}"
    );
    assert!(!ca.file(DATABASE).exists());
    let store = ca.init_store(&config, None, now).await.unwrap();
    assert_eq!(store.count_certificates().await.unwrap(), 1);
    store.close().await;
}

/// `ward ca intermediate install` accepts an intermediate issued by a root
/// made by `ward ca rotate root`, not only by root.crt's.
#[tokio::test]
async fn an_intermediate_signed_by_a_rotated_root_installs() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    let now = OffsetDateTime::now_utc();
    ca.init(&opts(), now).unwrap();
    let store = ward_store::connect(tmp.path().join("ward.db").to_str().unwrap())
        .await
        .unwrap();
    let done = ca
        .rotate_root(
            store.as_ref(),
            &roots::RootRotateOptions {
                overlap: Duration::ZERO,
                validity: None,
                intermediate_validity: None,
                root_key: None,
            },
            now,
        )
        .await
        .unwrap();
    ca.intermediate_csr().unwrap();
    let pending = ca
        .read_key(&ca.path().join("intermediates").join(rotation::PENDING_KEY))
        .unwrap();
    let r2_key = ca
        .read_key(
            &ca.path()
                .join(format!("roots/{}.key", done.root.fingerprint)),
        )
        .unwrap();
    let r2 = Issuer::new(CertificateDer::from(done.root.der.clone()), r2_key).unwrap();
    let spec = CaSpec {
        name: "Test".into(),
        root_validity: Duration::from_secs(10 * 365 * 86_400),
        intermediate_validity: Duration::from_secs(86_400),
        permitted_dns: Vec::new(),
    };
    let issued = r2.sign_intermediate(&spec, &pending, now).unwrap();
    let file = tmp.path().join("next.crt");
    fs::write(&file, pem::cert_to_pem(&issued.der)).unwrap();
    let later = now + Duration::from_secs(1);
    let next = ca
        .install_intermediate(store.as_ref(), &file, Duration::from_secs(60), later)
        .await
        .unwrap();
    assert_eq!(next.der, issued.der.to_vec());
}
