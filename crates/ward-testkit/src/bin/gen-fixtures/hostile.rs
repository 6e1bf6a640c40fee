//! BAD CERTIFICATES, ON PURPOSE.
//!
//! ward-pki refuses to build these (it always writes an EKU, never makes a CA
//! leaf, and writes at most one URI SAN), so this module drives rcgen
//! directly. Each function starts from the same profile ward-pki gives a
//! peer leaf and breaks exactly one thing, so a test sees one failure only.
//! Nothing outside this generator may build certificates this way.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use ward_pki::{PrivateKey, Serial};

use crate::{GOOD_FROM, GOOD_UNTIL};

/// The real intermediate as an rcgen signer (ward-pki keeps its own private).
pub(crate) struct Signer {
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl Signer {
    /// Pairs the intermediate's DER certificate with its PKCS#8 PEM key.
    pub(crate) fn new(cert_der: &CertificateDer<'_>, key_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Signer {
            issuer: rcgen::Issuer::from_ca_cert_der(cert_der, key)?,
        })
    }

    fn sign(&self, params: &CertificateParams, key: &PrivateKey) -> anyhow::Result<Vec<u8>> {
        let spki = SubjectPublicKeyInfo::from_der(&key.public_key_der())?;
        Ok(params.signed_by(&spki, &self.issuer)?.der().to_vec())
    }

    /// A leaf with no extendedKeyUsage extension at all.
    pub(crate) fn no_eku(&self, key: &PrivateKey) -> anyhow::Result<Vec<u8>> {
        let mut params = peer_profile(&["spiffe://example.org/no-eku"])?;
        params.extended_key_usages.clear(); // the defect
        self.sign(&params, key)
    }

    /// A CA certificate (CA:true, keyCertSign) issued as if it were a leaf.
    pub(crate) fn ca_leaf(&self, key: &PrivateKey) -> anyhow::Result<Vec<u8>> {
        let mut params = peer_profile(&["spiffe://example.org/ca-leaf"])?;
        // The defect. A CA gets a subject, as real ones do.
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages.push(KeyUsagePurpose::KeyCertSign);
        params
            .distinguished_name
            .push(DnType::CommonName, "ca-leaf");
        self.sign(&params, key)
    }

    /// A leaf with two URI SANs, which no X509-SVID may have.
    pub(crate) fn two_uris(&self, key: &PrivateKey) -> anyhow::Result<Vec<u8>> {
        let params = peer_profile(&[
            "spiffe://example.org/two-uris/a",
            "spiffe://example.org/two-uris/b", // the defect
        ])?;
        self.sign(&params, key)
    }
}

/// What ward-pki's `Issuer::sign_leaf` writes for a `Profile::Peer` leaf with
/// an ECDSA key, the given URIs, DNS `localhost` and IP `127.0.0.1`, valid
/// like the good fixtures.
fn peer_profile(uris: &[&str]) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).try_into()?));
    }
    params
        .subject_alt_names
        .push(SanType::DnsName("localhost".try_into()?));
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = GOOD_FROM;
    params.not_after = GOOD_UNTIL;
    params.serial_number = Some(Serial::random(time::OffsetDateTime::now_utc())?.to_rcgen());
    Ok(params)
}
