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

/// A CA's CRL endpoint: `/v1/crl` answers with `a`'s CRL and, while
/// `advertise` is set, names `/v1/crl/b` in a `Link` header; `/v1/crl/b`
/// answers with `b`'s CRL. With `up`, `/v1/crl` also names `/v1/int` as
/// its issuer's certificate, which answers `up`. Plain HTTP/1.1, one
/// request per connection.
struct CrlServer {
    url: String,
    advertise: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

impl CrlServer {
    async fn start(a: Vec<u8>, b: Vec<u8>, advertise: bool) -> CrlServer {
        CrlServer::start_with(a, b, advertise, None).await
    }

    async fn start_with(a: Vec<u8>, b: Vec<u8>, advertise: bool, up: Option<Vec<u8>>) -> CrlServer {
        use std::sync::atomic::AtomicBool;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/crl", listener.local_addr().unwrap());
        let flag = Arc::new(AtomicBool::new(advertise));
        let advertise = flag.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (a, b, flag, up) = (a.clone(), b.clone(), flag.clone(), up.clone());
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&req);
                    let path = line.split_whitespace().nth(1).unwrap_or("");
                    let mut link = String::new();
                    let body = match path {
                        "/v1/crl" => {
                            if flag.load(Ordering::SeqCst) {
                                link.push_str("Link: </v1/crl/b>; rel=\"related\"; type=\"application/pkix-crl\"\r\n");
                            }
                            if up.is_some() {
                                link.push_str("Link: </v1/int>; rel=\"up\"; type=\"application/pkix-cert\"\r\n");
                            }
                            a
                        }
                        "/v1/crl/b" => b,
                        "/v1/int" => up.unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n{link}Connection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tcp.write_all(head.as_bytes()).await;
                    let _ = tcp.write_all(&body).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        CrlServer {
            url,
            advertise,
            task,
        }
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `f` every 20 ms until it holds, for at most 10 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn revocation_for(url: &str, refresh: Duration, roots: Vec<Vec<u8>>) -> Arc<Revocation> {
    let metrics = GateMetrics::register(&ward_telemetry::Registry::new()).unwrap();
    let revocation = Revocation::new(metrics);
    let settings = RevocationConfig {
        crl: vec![url.to_owned()],
        crl_refresh: crate::config::Dur(refresh),
        ..RevocationConfig::default()
    };
    revocation.configure(&settings, roots);
    revocation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_named_by_the_polled_source_is_followed_and_retired_with_it() {
    let (a, b) = (Ca::new(), Ca::new());
    let server = CrlServer::start(
        a.crl(&[], 1, now() - 5, 3600),
        b.crl(&[9], 1, now() - 5, 3600),
        true,
    )
    .await;
    let revocation = revocation_for(
        &server.url,
        Duration::from_millis(100),
        vec![a.root_der(), b.root_der()],
    );
    revocation.first_round(Duration::from_secs(5)).await;
    // a's CRL is in force once its intermediate is known.
    revocation.learn(&[CertificateDer::from(a.int_der())]);
    revocation.learn(&[CertificateDer::from(b.int_der())]);
    let revoked = CertificateDer::from(b.leaf(9, true));
    let good = CertificateDer::from(b.leaf(10, true));
    eventually("b's CRL, named by a's answer, is in force", || {
        revocation.track(std::slice::from_ref(&revoked)).err() == Some("revoked")
    })
    .await;
    assert!(revocation.track(std::slice::from_ref(&good)).is_ok());
    let sources = || {
        revocation
            .lock()
            .sources
            .iter()
            .filter(|s| !s.retired)
            .map(|s| s.label.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(sources(), [server.url.clone(), format!("{}/b", server.url)]);

    // The source stops naming it: b's CRL leaves the snapshot (its
    // certificates are unchecked again, not refused: nothing condemns them).
    server.advertise.store(false, Ordering::SeqCst);
    eventually("b's CRL is retired", || {
        revocation.track(std::slice::from_ref(&revoked)).is_ok()
    })
    .await;
    assert_eq!(sources(), std::slice::from_ref(&server.url));
    // Named again: followed again.
    server.advertise.store(true, Ordering::SeqCst);
    eventually("b's CRL is followed again", || {
        revocation.track(std::slice::from_ref(&revoked)).err() == Some("revoked")
    })
    .await;
    revocation.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_intermediate_makes_the_gate_ask_its_ca_at_once() {
    let (a, b) = (Ca::new(), Ca::new());
    let server = CrlServer::start(
        a.crl(&[], 1, now() - 5, 3600),
        b.crl(&[9], 1, now() - 5, 3600),
        false,
    )
    .await;
    // An hour between polls: only the early refresh can find b's CRL.
    let revocation = revocation_for(
        &server.url,
        Duration::from_secs(3600),
        vec![a.root_der(), b.root_der()],
    );
    revocation.first_round(Duration::from_secs(5)).await;
    revocation.learn(&[CertificateDer::from(a.int_der())]);
    eventually("a's CRL is in force", || {
        revocation.snapshot().crls.len() == 1
    })
    .await;
    server.advertise.store(true, Ordering::SeqCst);
    let revoked = CertificateDer::from(b.leaf(9, true));
    // Before b's intermediate is seen, its certificates are unchecked.
    assert!(revocation.track(std::slice::from_ref(&revoked)).is_ok());
    revocation.learn(&[CertificateDer::from(b.int_der())]);
    eventually("b's CRL is found right after its intermediate", || {
        revocation.track(std::slice::from_ref(&revoked)).err() == Some("revoked")
    })
    .await;
    revocation.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_whose_issuer_no_client_showed_is_verified_with_the_certificate_its_source_names() {
    let a = Ca::new();
    let server = CrlServer::start_with(
        a.crl(&[9], 1, now() - 5, 3600),
        Vec::new(),
        false,
        Some(a.int_der()),
    )
    .await;
    let revocation = revocation_for(&server.url, Duration::from_millis(100), vec![a.root_der()]);
    // No client chain has carried a's intermediate: its certificate comes
    // from the source, and the CRL is in force.
    eventually("a's CRL is verified with the named issuer", || {
        revocation.snapshot().crls.len() == 1
    })
    .await;
    let revoked = CertificateDer::from(a.leaf(9, true));
    assert_eq!(
        revocation
            .track(std::slice::from_ref(&revoked))
            .unwrap_err(),
        "revoked"
    );
    assert!(
        revocation
            .track(&[CertificateDer::from(a.leaf(10, true))])
            .is_ok()
    );
    revocation.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_issuer_from_another_root_is_not_trusted() {
    let (a, evil) = (Ca::new(), Ca::new());
    // The CRL is evil's, and so is the certificate named as its issuer;
    // only a's root is trusted.
    let server = CrlServer::start_with(
        evil.crl(&[], 1, now() - 5, 3600),
        Vec::new(),
        false,
        Some(evil.int_der()),
    )
    .await;
    let revocation = revocation_for(&server.url, Duration::from_millis(100), vec![a.root_der()]);
    revocation.first_round(Duration::from_secs(5)).await;
    // Several rounds: the CRL never verifies, so fail-closed refuses.
    let rounds = || revocation.lock().sources[0].issuer_warned;
    eventually("the named issuer was looked at and refused", rounds).await;
    assert!(revocation.snapshot().crls.is_empty());
    assert_eq!(
        revocation
            .track(&[CertificateDer::from(a.leaf(1, true))])
            .unwrap_err(),
        "revocation_unknown"
    );
    revocation.shutdown();
}
