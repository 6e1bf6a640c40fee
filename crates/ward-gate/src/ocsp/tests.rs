//! Response validation against answers from an independent responder:
//! `openssl ocsp` with an index file, signing as the issuer, as a delegated
//! responder, or as impostors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use x509_ocsp::{BasicOcspResponse, OcspRequest, OcspResponse};

use super::*;

const SERIAL: u64 = 0x1234;

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// AuthorityInfoAccess with one OCSP URI, DER by hand.
fn aia(url: &str) -> CustomExtension {
    let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    let mut gn = vec![0x86, u8::try_from(url.len()).unwrap()];
    gn.extend_from_slice(url.as_bytes());
    let mut desc = vec![0x30, u8::try_from(oid.len() + gn.len()).unwrap()];
    desc.extend_from_slice(&oid);
    desc.extend_from_slice(&gn);
    let mut seq = vec![0x30, u8::try_from(desc.len()).unwrap()];
    seq.extend_from_slice(&desc);
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], seq)
}

struct Pki {
    dir: tempfile::TempDir,
    int: CertifiedIssuer<'static, KeyPair>,
    chain: Vec<CertificateDer<'static>>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let root =
            CertifiedIssuer::self_signed(ca_params("Root"), KeyPair::generate().unwrap()).unwrap();
        let int_key = KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("int.key"), int_key.serialize_pem()).unwrap();
        let int = CertifiedIssuer::signed_by(ca_params("Intermediate"), int_key, &root).unwrap();
        std::fs::write(dir.path().join("int.pem"), int.pem()).unwrap();
        let mut p = CertificateParams::new(vec!["gate.test".to_owned()]).unwrap();
        p.serial_number = Some(SerialNumber::from_slice(&SERIAL.to_be_bytes()));
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.custom_extensions = vec![aia("http://ocsp.test/ocsp")];
        let leaf = p.signed_by(&KeyPair::generate().unwrap(), &int).unwrap();
        let chain = vec![leaf.der().clone(), int.der().clone()];
        Pki { dir, int, chain }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// A responder certificate issued by `issuer`, with or without the
    /// OCSPSigning EKU; written as NAME.pem / NAME.key.
    fn responder(&self, name: &str, issuer: &CertifiedIssuer<'static, KeyPair>, eku: bool) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if eku {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// `openssl ocsp` answering `target`'s request from an index where
    /// SERIAL has `status` (`V` or `R`), signed by `signer`.
    fn answer(&self, target: &Target, status: &str, signer: &str) -> Vec<u8> {
        let revoked = if status == "R" { "240101000000Z" } else { "" };
        std::fs::write(
            self.path("index.txt"),
            format!("{status}\t300101000000Z\t{revoked}\t{SERIAL:X}\tunknown\t/CN=gate.test\n"),
        )
        .unwrap();
        std::fs::write(self.path("req.der"), &target.request).unwrap();
        let out = Command::new("openssl")
            .args(["ocsp", "-index", &self.path("index.txt")])
            .args(["-CA", &self.path("int.pem")])
            .args(["-rsigner", &self.path(&format!("{signer}.pem"))])
            .args(["-rkey", &self.path(&format!("{signer}.key"))])
            .args(["-reqin", &self.path("req.der")])
            .args(["-respout", &self.path("resp.der"), "-ndays", "1"])
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(Path::new(&self.path("resp.der"))).unwrap()
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn label(r: Result<Good, Refused>) -> &'static str {
    match r {
        Ok(_) => "stapled",
        Err(e) => e.label,
    }
}

#[test]
fn the_request_names_the_leaf_and_its_responder() {
    let pki = Pki::new();
    let target = Target::of(&pki.chain).unwrap().unwrap();
    assert_eq!(target.url, "http://ocsp.test/ocsp");
    let req = OcspRequest::from_der(&target.request).unwrap();
    let id = &req.tbs_request.request_list[0].req_cert;
    assert_eq!(id.serial_number.as_bytes(), &[0x12, 0x34]);
    assert_eq!(
        id.hash_algorithm.oid,
        ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
        "SHA-1, as RFC 5019 asks"
    );
    // No AIA, no target; no issuer in the chain, an error.
    let plain = CertificateParams::new(vec!["x.test".to_owned()])
        .unwrap()
        .signed_by(&KeyPair::generate().unwrap(), &pki.int)
        .unwrap();
    assert!(Target::of(&[plain.der().clone()]).unwrap().is_none());
    assert!(Target::of(&pki.chain[..1]).is_err());
}

#[test]
fn responses_are_validated_like_a_careful_client_would() {
    let pki = Pki::new();
    let target = Target::of(&pki.chain).unwrap().unwrap();
    std::fs::copy(pki.path("int.pem"), pki.path("issuer.pem")).unwrap();
    std::fs::copy(pki.path("int.key"), pki.path("issuer.key")).unwrap();
    pki.responder("delegated", &pki.int, true);
    pki.responder("no-eku", &pki.int, false);
    let other =
        CertifiedIssuer::self_signed(ca_params("Intermediate"), KeyPair::generate().unwrap())
            .unwrap();
    pki.responder("impostor", &other, true);

    let good = validate(&target, &pki.answer(&target, "V", "issuer"), now()).unwrap();
    assert!(good.next_update > now() && good.this_update <= now() + 1);
    let der = pki.answer(&target, "V", "delegated");
    assert_eq!(label(validate(&target, &der, now())), "stapled");
    // After its nextUpdate the same response is refused.
    assert_eq!(
        label(validate(&target, &der, now() + 3 * 86_400)),
        "expired"
    );
    assert_eq!(
        label(validate(
            &target,
            &pki.answer(&target, "R", "issuer"),
            now()
        )),
        "revoked"
    );
    for signer in ["no-eku", "impostor"] {
        let der = pki.answer(&target, "V", signer);
        assert_eq!(
            label(validate(&target, &der, now())),
            "untrusted",
            "{signer}"
        );
    }
    // A flipped bit in the signed data (the last digit of the last time).
    let mut tampered = pki.answer(&target, "V", "issuer");
    let resp = OcspResponse::from_der(&tampered).unwrap();
    let basic =
        BasicOcspResponse::from_der(resp.response_bytes.unwrap().response.as_bytes()).unwrap();
    let tbs = basic.tbs_response_data.to_der().unwrap();
    let at = tampered
        .windows(tbs.len())
        .position(|w| w == tbs.as_slice())
        .unwrap();
    let z = at + tbs.iter().rposition(|b| *b == b'Z').unwrap();
    tampered[z - 1] ^= 0x01;
    assert_eq!(label(validate(&target, &tampered, now())), "untrusted");
    assert_eq!(label(validate(&target, b"\x30\x00", now())), "invalid");
    // An answer about another certificate of the same issuer.
    let mut elsewhere = target.clone();
    let issuer = ocsp::IssuerId::from_cert_der(&pki.chain[1]).unwrap();
    let serial = ward_pki::Serial::from_be_bytes(&[0x56]).unwrap();
    elsewhere.query = Query::new(&issuer, &serial, false).unwrap();
    let der = pki.answer(&target, "V", "issuer");
    assert_eq!(label(validate(&elsewhere, &der, now())), "invalid");
}
