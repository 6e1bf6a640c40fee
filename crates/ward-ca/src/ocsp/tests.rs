//! The responder against a real SQLite store, checked with the hand-written
//! OCSP reader of `ward check` (`ward_pki::lint::revocation`).

use std::net::{IpAddr, Ipv4Addr};

use ward_pki::lint::revocation::{Status as Seen, ocsp_request, ocsp_status};

use super::*;
use crate::authority::Policy;
use crate::authority::revocation::CrlSettings;
use crate::dir::{CaDir, InitOptions};

struct Fixture {
    _tmp: tempfile::TempDir,
    ca: CaDir,
    authority: Arc<Authority>,
}

async fn fixture(offline_root: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    ca.init(
        &InitOptions {
            trust_domain: "example.org".parse().unwrap(),
            name: "Test".into(),
            key_type: KeyType::EcdsaP256,
            root_validity: Duration::from_secs(10 * 365 * 86_400),
            intermediate_validity: Duration::from_secs(365 * 86_400),
            offline_root: offline_root.then(|| tmp.path().join("root.key")),
            permitted_dns: Vec::new(),
            database: None,
            pkcs11: None,
        },
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let store = ward_store::connect(tmp.path().join("ward.db").to_str().unwrap())
        .await
        .unwrap();
    let authority = Authority::new(
        Policy {
            trust_domain: "example.org".parse().unwrap(),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(86_400),
        },
        ca.intermediate_issuer().unwrap(),
        &ca.roots().unwrap(),
        store,
    )
    .with_revocation(CrlSettings::default());
    Fixture {
        _tmp: tmp,
        ca,
        authority: Arc::new(authority),
    }
}

fn responder(f: &Fixture, now: OffsetDateTime) -> Responder {
    Responder::new(
        f.authority.clone(),
        f.ca.root_ocsp_signer(now).unwrap(),
        "Test",
        OcspSettings::default(),
        now,
    )
    .unwrap()
}

async fn leaf(f: &Fixture, now: OffsetDateTime) -> (Vec<u8>, Serial) {
    let (issued, _) = f
        .authority
        .issue_server_identity(
            &["svc.example.org".to_owned()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Duration::from_secs(3600),
            now,
        )
        .await
        .unwrap();
    (issued.leaf_der.to_vec(), issued.serial)
}

#[tokio::test]
async fn good_then_revoked_at_once_with_reason() {
    let f = fixture(false).await;
    let now = OffsetDateTime::now_utc();
    let r = responder(&f, now);
    let (leaf, serial) = leaf(&f, now).await;
    let int = f.authority.intermediate_der().to_vec();
    let req = ocsp_request(&leaf, &int).unwrap();
    let answer = r.answer(&req, now).await;
    assert!(answer.successful);
    assert_eq!(answer.max_age, 300);
    let seen = ocsp_status(&answer.der, &leaf, &int, now).unwrap();
    assert_eq!(seen.status, Seen::Good);
    assert!(!seen.stale);

    f.authority
        .revoke_certificate(&serial, Some(1), now)
        .await
        .unwrap();
    let answer = r.answer(&req, now).await;
    let seen = ocsp_status(&answer.der, &leaf, &int, now).unwrap();
    assert!(matches!(seen.status, Seen::Revoked { .. }), "{seen:?}");
}

#[tokio::test]
async fn unknown_serials_and_foreign_issuers_are_unknown() {
    let f = fixture(false).await;
    let now = OffsetDateTime::now_utc();
    let r = responder(&f, now);
    let int_der = f.authority.intermediate_der().clone();
    let int = IssuerId::from_cert_der(&int_der).unwrap();
    let other = fixture(false).await;
    let foreign = IssuerId::from_cert_der(&other.authority.intermediate_der()).unwrap();
    let (_, serial) = leaf(&f, now).await;
    let queries = [
        Query::new(
            &int,
            &Serial::random(OffsetDateTime::now_utc()).unwrap(),
            false,
        )
        .unwrap(),
        Query::new(&foreign, &serial, true).unwrap(),
        Query::new(&int, &serial, true).unwrap(),
    ];
    let der = ocsp::build_request(&queries, Some(&[5u8; 16])).unwrap();
    let answer = r.answer(&der, now).await;
    assert!(answer.successful);
    // The hand-written reader needs a certificate; read the status tags of
    // one-query answers instead.
    let reader_view = |q: usize| {
        let one = ocsp::build_request(&queries[q..=q], None).unwrap();
        status_tag(&r, one, now)
    };
    assert_eq!(reader_view(0).await, 0x82); // unknown
    assert_eq!(reader_view(1).await, 0x82); // unknown
    assert_eq!(reader_view(2).await, 0x80); // good
}

/// The certStatus tag of the only SingleResponse in the answer.
async fn status_tag(r: &Responder, req: Vec<u8>, now: OffsetDateTime) -> u8 {
    let answer = r.answer(&req, now).await;
    assert!(answer.successful);
    let parsed = ocsp::parse_request(&req).unwrap();
    let serial = parsed.queries[0].serial().unwrap();
    // CertID ends with the serial INTEGER; the certStatus tag follows it.
    let mut int = vec![0x02];
    let mut bytes = serial.as_bytes().to_vec();
    if bytes[0] & 0x80 != 0 {
        bytes.insert(0, 0);
    }
    int.push(bytes.len() as u8);
    int.extend_from_slice(&bytes);
    let at = answer
        .der
        .windows(int.len())
        .position(|w| w == int.as_slice())
        .unwrap();
    answer.der[at + int.len()]
}

#[tokio::test]
async fn the_intermediate_is_answered_by_the_root_side() {
    let f = fixture(false).await;
    let now = OffsetDateTime::now_utc();
    let r = responder(&f, now);
    let int = f.authority.intermediate_der().to_vec();
    let root = f.ca.roots().unwrap()[0].to_vec();
    let req = ocsp_request(&int, &root).unwrap();
    let answer = r.answer(&req, now).await;
    // Signed by the root-issued delegated responder: verifies against the root.
    let seen = ocsp_status(&answer.der, &int, &root, now).unwrap();
    assert_eq!(seen.status, Seen::Good);
    // The leaf responder (issued by the intermediate) is not what signed it.
    assert!(ocsp_status(&answer.der, &int, &int, now).is_err());
}

#[tokio::test]
async fn offline_root_without_a_responder_refuses_intermediate_questions() {
    let f = fixture(true).await;
    std::fs::remove_file(f.ca.root_ocsp_cert_path()).unwrap();
    let now = OffsetDateTime::now_utc();
    let r = responder(&f, now);
    let int = f.authority.intermediate_der().to_vec();
    let root = f.ca.roots().unwrap()[0].to_vec();
    let answer = r.answer(&ocsp_request(&int, &root).unwrap(), now).await;
    assert!(!answer.successful);
    assert_eq!(answer.der, ocsp::refusal(Refusal::Unauthorized));
    // Leaves are still answered.
    let (leaf, _) = leaf(&f, now).await;
    let answer = r.answer(&ocsp_request(&leaf, &int).unwrap(), now).await;
    assert!(answer.successful);
}

#[tokio::test]
async fn garbage_is_malformed_and_rotation_changes_the_signer() {
    let f = fixture(false).await;
    let now = OffsetDateTime::now_utc();
    let r = responder(&f, now);
    let answer = r.answer(b"\x30\x03garbage", now).await;
    assert_eq!(answer.der, ocsp::refusal(Refusal::MalformedRequest));
    assert!(r.renews_at() > now + Duration::from_secs(15 * 3600));
    assert!(r.renews_at() < now + Duration::from_secs(17 * 3600));

    let (leaf, _) = leaf(&f, now).await;
    let int = f.authority.intermediate_der().to_vec();
    let req = ocsp_request(&leaf, &int).unwrap();
    let old = r.responder_cert().to_vec();
    let contains = |der: &[u8], cert: &[u8]| der.windows(cert.len()).any(|w| w == cert);
    assert!(contains(&r.answer(&req, now).await.der, &old));
    let later = now + Duration::from_secs(17 * 3600);
    r.rotate(later).await.unwrap();
    assert!(r.renews_at() > later);
    let new = r.responder_cert().to_vec();
    assert_ne!(old, new);
    let after = r.answer(&req, later).await.der;
    // The new responder certificate is embedded, and the answer verifies.
    assert!(contains(&after, &new));
    assert!(!contains(&after, &old));
    assert_eq!(
        ocsp_status(&after, &leaf, &int, later).unwrap().status,
        Seen::Good
    );
}

/// After `rotate root`, R2's own responder answers about I2; R1's still
/// answers about I1; R1 does not vouch for I2; and without R2's responder
/// (nor its key) questions about I2 are refused, not signed by R1.
#[tokio::test]
async fn each_root_answers_about_its_own_intermediates() {
    let f = fixture(false).await;
    let now = OffsetDateTime::now_utc();
    let r = responder(&f, now);
    let done =
        f.ca.rotate_root(
            f.authority.store().as_ref(),
            &crate::dir::roots::RootRotateOptions {
                overlap: Duration::from_secs(3600),
                validity: None,
                intermediate_validity: None,
                root_key: None,
            },
            now,
        )
        .await
        .unwrap();
    let fp = &done.root.fingerprint;
    let sub = f.ca.path().join(crate::dir::roots::ROOTS);
    let key_file = sub.join(format!("{fp}-ocsp.key"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let on_disk = crate::dir::read_certs(&sub.join(format!("{fp}-ocsp.crt"))).unwrap();
    assert_eq!(on_disk[0], done.ocsp_responder);
    // Recorded like every certificate the CA signs.
    let (_, parsed) = x509_parser::parse_x509_certificate(&done.ocsp_responder).unwrap();
    let serial = Serial::from_be_bytes(parsed.raw_serial()).unwrap();
    let record = f.authority.store().certificate(&serial).await.unwrap();
    assert_eq!(record.unwrap().origin, Origin::OcspResponder);

    let r1 = f.ca.roots().unwrap()[0].to_vec();
    let r2 = done.root.der.clone();
    let i1 = f.authority.intermediate_der().to_vec();
    let i2 = done.intermediate.der.clone();
    let i2_issuer = Arc::new(f.ca.load_intermediate(&done.intermediate).unwrap());
    r.follow(&[f.authority.signing().issuer.clone(), i2_issuer], now)
        .await
        .unwrap();
    let known = [
        CertificateDer::from(r1.clone()),
        CertificateDer::from(r2.clone()),
    ];
    let row = done.root.clone();
    r.follow_roots(&known, now, |_| f.ca.rotated_root_ocsp_signer(&row, now))
        .unwrap();

    // I2 under R2: good, signed by R2's responder (embedded), verified
    // under R2 only.
    let answer = r.answer(&ocsp_request(&i2, &r2).unwrap(), now).await;
    assert!(answer.successful);
    let contains = |der: &[u8], cert: &[u8]| der.windows(cert.len()).any(|w| w == cert);
    assert!(contains(&answer.der, &done.ocsp_responder));
    assert_eq!(
        ocsp_status(&answer.der, &i2, &r2, now).unwrap().status,
        Seen::Good
    );
    // I1 under R1: still R1's responder.
    let answer = r.answer(&ocsp_request(&i1, &r1).unwrap(), now).await;
    assert!(!contains(&answer.der, &done.ocsp_responder));
    assert_eq!(
        ocsp_status(&answer.der, &i1, &r1, now).unwrap().status,
        Seen::Good
    );
    // I2's serial asked under R1: R1 did not sign it.
    let answer = r.answer(&ocsp_request(&i2, &r1).unwrap(), now).await;
    assert_eq!(
        ocsp_status(&answer.der, &i2, &r1, now).unwrap().status,
        Seen::Unknown
    );

    // No responder and no key for R2: refused, on a fresh responder and
    // on one that learns R2 only now.
    std::fs::remove_file(sub.join(format!("{fp}-ocsp.crt"))).unwrap();
    std::fs::remove_file(sub.join(format!("{fp}.key"))).unwrap();
    let bare = responder(&f, now);
    bare.follow_roots(&known, now, |_| f.ca.rotated_root_ocsp_signer(&row, now))
        .unwrap();
    let answer = bare.answer(&ocsp_request(&i2, &r2).unwrap(), now).await;
    assert_eq!(answer.der, ocsp::refusal(Refusal::Unauthorized));
    // Before it knows R2 at all, the question is about an unknown issuer:
    // `unknown` from the intermediate's responder, never R1's signature.
    let fresh = responder(&f, now);
    let answer = fresh.answer(&ocsp_request(&i2, &r2).unwrap(), now).await;
    assert!(answer.successful);
    let r1_responder = crate::dir::read_certs(&f.ca.root_ocsp_cert_path()).unwrap();
    assert!(!contains(&answer.der, &r1_responder[0]));
    assert!(ocsp_status(&answer.der, &i2, &r2, now).is_err());
}
