//! Revocation with a generated PKI (root → intermediate → leaves), CRLs
//! signed by the intermediate, and a same-named foreign CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

use super::crl::{self, CrlError, LeafRef, Trust};
use super::*;

struct Ca {
    root: CertifiedIssuer<'static, KeyPair>,
    int: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Ca {
    fn new() -> Ca {
        let root =
            CertifiedIssuer::self_signed(ca_params("Test Root"), KeyPair::generate().unwrap())
                .unwrap();
        let int = CertifiedIssuer::signed_by(
            ca_params("Test Intermediate"),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        Ca { root, int }
    }

    fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    fn int_der(&self) -> Vec<u8> {
        self.int.der().to_vec()
    }

    /// A client leaf with `serial`, optionally with an AKI.
    fn leaf(&self, serial: u64, aki: bool) -> Vec<u8> {
        let mut p = CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        p.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = aki;
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, &self.int).unwrap().der().to_vec()
    }

    /// A CRL from the intermediate listing `serials`, valid from `this`
    /// for `validity` seconds.
    fn crl(&self, serials: &[u64], number: u64, this: i64, validity: i64) -> Vec<u8> {
        let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).unwrap();
        CertificateRevocationListParams {
            this_update: at(this),
            next_update: at(this + validity),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&s.to_be_bytes()),
                    revocation_time: at(this),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.int)
        .unwrap()
        .der()
        .to_vec()
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn trust_of(roots: &[Vec<u8>]) -> Trust {
    let mut t = Trust::default();
    t.set_roots(roots);
    t
}

#[test]
fn a_crl_from_the_intermediate_waits_for_the_intermediate() {
    let ca = Ca::new();
    let der = ca.crl(&[7], 1, now() - 10, 3600);
    let mut trust = trust_of(&[ca.root_der()]);
    assert!(matches!(
        crl::verify(&der, &trust, now()),
        Err(CrlError::UnknownIssuer(_))
    ));
    assert!(trust.learn(&ca.int_der(), now()));
    assert!(!trust.learn(&ca.int_der(), now()), "learned once");
    let v = crl::verify(&der, &trust, now()).unwrap();
    assert!(v.revoked.contains(&vec![7u8]));
    assert_eq!(v.number_display(), "1");
}

#[test]
fn the_bundle_may_carry_the_intermediate() {
    let ca = Ca::new();
    let trust = trust_of(&[ca.root_der(), ca.int_der()]);
    crl::verify(&ca.crl(&[], 3, now(), 60), &trust, now()).unwrap();
}

#[test]
fn a_same_named_foreign_ca_is_not_trusted() {
    let ours = Ca::new();
    let foreign = Ca::new();
    let mut trust = trust_of(&[ours.root_der()]);
    assert!(trust.learn(&ours.int_der(), now()));
    // Same names, other keys: the foreign intermediate does not chain to our root.
    assert!(!trust.learn(&foreign.int_der(), now()));
    let err = crl::verify(&foreign.crl(&[1], 9, now(), 60), &trust, now()).unwrap_err();
    assert!(matches!(err, CrlError::BadSignature(_)), "{err:?}");
    assert_eq!(err.label(), "untrusted");
}

#[test]
fn leaves_and_garbage_are_not_learned() {
    let ca = Ca::new();
    let mut trust = trust_of(&[ca.root_der()]);
    assert!(trust.learn(&ca.int_der(), now()));
    assert!(!trust.learn(&ca.leaf(5, true), now()), "a leaf is no CA");
    assert!(!trust.learn(b"not a certificate", now()));
}

#[test]
fn malformed_and_future_crls_are_refused() {
    let ca = Ca::new();
    let trust = trust_of(&[ca.root_der(), ca.int_der()]);
    assert!(matches!(
        crl::verify(b"\x30\x03\x02\x01\x00", &trust, now()),
        Err(CrlError::Malformed(_))
    ));
    let mut der = ca.crl(&[], 1, now(), 60);
    der.push(0);
    assert!(matches!(
        crl::verify(&der, &trust, now()),
        Err(CrlError::Malformed(_))
    ));
    let future = ca.crl(&[], 1, now() + 3600, 60);
    assert_eq!(
        crl::verify(&future, &trust, now()).unwrap_err(),
        CrlError::NotYetValid
    );
    // A flipped bit in the signature.
    let mut bad = ca.crl(&[], 1, now(), 60);
    let last = bad.len() - 2;
    bad[last] ^= 1;
    assert!(matches!(
        crl::verify(&bad, &trust, now()),
        Err(CrlError::BadSignature(_))
    ));
}

#[test]
fn pem_crls_decode_and_numbers_order() {
    let ca = Ca::new();
    let trust = trust_of(&[ca.root_der(), ca.int_der()]);
    let der = ca.crl(&[1], 2, now(), 60);
    let pem = ward_pki::crl::crl_to_pem(&der);
    assert_eq!(crl::decode(pem.as_bytes()).unwrap(), der);
    assert_eq!(crl::decode(&der).unwrap(), der);
    let two = crl::verify(&der, &trust, now()).unwrap();
    let one = crl::verify(&ca.crl(&[], 1, now(), 60), &trust, now()).unwrap();
    let big = crl::verify(&ca.crl(&[], 256, now(), 60), &trust, now()).unwrap();
    assert!(one.older_than(&two));
    assert!(!two.older_than(&one));
    assert!(two.older_than(&big));
}

fn snapshot(crls: Vec<VerifiedCrl>, fail_open: bool, unavailable: bool) -> Snapshot {
    let mut map: HashMap<Vec<u8>, Vec<Arc<VerifiedCrl>>> = HashMap::new();
    for c in crls {
        map.entry(c.issuer_name.clone())
            .or_default()
            .push(Arc::new(c));
    }
    Snapshot {
        enabled: true,
        fail_open,
        unavailable,
        crls: map,
        ..Snapshot::default()
    }
}

#[test]
fn statuses_follow_the_crl_and_the_fail_mode() {
    let ca = Ca::new();
    let other = Ca::new();
    let trust = trust_of(&[ca.root_der(), ca.int_der()]);
    let t = now();
    let fresh = crl::verify(&ca.crl(&[7], 1, t - 10, 3600), &trust, t).unwrap();
    let stale = crl::verify(&ca.crl(&[7], 1, t - 100, 50), &trust, t).unwrap();
    for aki in [true, false] {
        let revoked = LeafRef::from_der(&ca.leaf(7, aki)).unwrap();
        let good = LeafRef::from_der(&ca.leaf(8, aki)).unwrap();
        let s = snapshot(vec![fresh.clone()], false, false);
        assert_eq!(s.check(&revoked, t), Status::Revoked);
        assert_eq!(s.check(&good, t), Status::Good);
        let s = snapshot(vec![stale.clone()], false, false);
        assert_eq!(s.check(&revoked, t), Status::Revoked, "listed stays listed");
        assert_eq!(s.check(&good, t), Status::Stale);
        let s = snapshot(vec![stale.clone()], true, false);
        assert_eq!(s.check(&good, t), Status::StaleAccepted);
    }
    // A same-named CA's leaf with a listed serial is not ours to refuse.
    let s = snapshot(vec![fresh.clone()], false, false);
    let stranger = LeafRef::from_der(&other.leaf(7, false)).unwrap();
    assert_eq!(s.check(&stranger, t), Status::Unchecked);
    // A source without a CRL: fail-closed refuses what no CRL covers.
    let s = snapshot(vec![], false, true);
    assert_eq!(s.check(&stranger, t), Status::Unknown);
    let s = snapshot(vec![], true, true);
    assert_eq!(s.check(&stranger, t), Status::Unchecked);
    assert_eq!(Status::Revoked.refusal(), Some("revoked"));
    assert!(Status::Good.error().is_none());
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_crl_update_closes_tracked_connections() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.crl");
    write_atomically(&file, &ca.crl(&[], 1, now() - 5, 3600));
    let registry = ward_telemetry::Registry::new();
    let metrics = GateMetrics::register(&registry).unwrap();
    let revocation = Revocation::new(metrics);
    let settings = RevocationConfig {
        crl: vec![file.display().to_string()],
        crl_refresh: crate::config::Dur(Duration::from_millis(100)),
        ..RevocationConfig::default()
    };
    revocation.configure(&settings, vec![ca.root_der()]);
    revocation.first_round(Duration::from_secs(5)).await;
    let leaf = CertificateDer::from(ca.leaf(42, true));
    // The CRL waits for its issuer: fail-closed refuses meanwhile.
    assert_eq!(
        revocation.track(std::slice::from_ref(&leaf)).unwrap_err(),
        "revocation_unknown"
    );
    revocation.learn(&[CertificateDer::from(ca.int_der())]);
    let mut tracking = revocation.track(std::slice::from_ref(&leaf)).unwrap();
    assert_eq!(revocation.conns().len(), 1);

    write_atomically(&file, &ca.crl(&[42], 2, now() - 1, 3600));
    let reason = tokio::time::timeout(Duration::from_secs(10), tracking.revoked())
        .await
        .expect("the connection is closed after the CRL update");
    assert_eq!(reason, "revoked");
    assert_eq!(
        revocation.track(std::slice::from_ref(&leaf)).unwrap_err(),
        "revoked"
    );
    // An older CRL does not roll the revocation back.
    write_atomically(&file, &ca.crl(&[], 1, now() - 1, 3600));
    let text = || registry.render();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !text().contains("result=\"rollback\"") {
        assert!(std::time::Instant::now() < deadline, "{}", text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        revocation.track(std::slice::from_ref(&leaf)).unwrap_err(),
        "revoked"
    );
    drop(tracking);
    assert!(revocation.conns().is_empty());
    revocation.shutdown();
}
