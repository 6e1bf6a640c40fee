//! Key types and private keys.
//!
//! [`PrivateKey`] never shows its secret: `Debug` is redacted and the PEM it
//! renders is wiped from memory when dropped.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{self, KeyPair as _, PqdsaKeyPair, PqdsaSigningAlgorithm};
use rcgen::{KeyPair, PublicKeyData, RsaKeySize, SigningKey};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use crate::Error;

/// The key algorithms Ward generates and signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, 2048-bit modulus, PKCS#1 v1.5 signatures with SHA-256.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// ML-DSA-44 (FIPS 204, security category 2), post-quantum.
    MlDsa44,
    /// ML-DSA-65 (FIPS 204, security category 3), post-quantum.
    MlDsa65,
    /// ML-DSA-87 (FIPS 204, security category 5), post-quantum.
    MlDsa87,
}

impl KeyType {
    /// Every supported key type, in a stable order.
    pub const ALL: [KeyType; 9] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::MlDsa44,
        KeyType::MlDsa65,
        KeyType::MlDsa87,
    ];

    /// The stable spelling used on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::MlDsa44 => "ml-dsa-44",
            KeyType::MlDsa65 => "ml-dsa-65",
            KeyType::MlDsa87 => "ml-dsa-87",
        }
    }

    /// Whether this is a post-quantum (ML-DSA) key type.
    pub fn is_post_quantum(self) -> bool {
        self.ml_dsa().is_some()
    }

    /// The ML-DSA parameter set, for ML-DSA key types.
    fn ml_dsa(self) -> Option<MlDsa> {
        match self {
            KeyType::MlDsa44 => Some(MlDsa::P44),
            KeyType::MlDsa65 => Some(MlDsa::P65),
            KeyType::MlDsa87 => Some(MlDsa::P87),
            _ => None,
        }
    }

    fn signature_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
            KeyType::MlDsa44 => &rcgen::PKCS_ML_DSA_44,
            KeyType::MlDsa65 => &rcgen::PKCS_ML_DSA_65,
            KeyType::MlDsa87 => &rcgen::PKCS_ML_DSA_87,
        }
    }

    /// Generates a fresh private key of this type from the OS CSPRNG.
    pub fn generate(self) -> Result<PrivateKey, Error> {
        if let Some(set) = self.ml_dsa() {
            let pair = PqdsaKeyPair::generate(set.signing())
                .map_err(|_| Error::Crypto(format!("generating a {} key", self.as_str())))?;
            return MlDsaKey::new(set, pair).map(|k| PrivateKey {
                inner: Inner::MlDsa(k),
            });
        }
        let alg = self.signature_algorithm();
        let pair = match self {
            KeyType::Rsa2048 => KeyPair::generate_rsa_for(alg, RsaKeySize::_2048),
            KeyType::Rsa3072 => KeyPair::generate_rsa_for(alg, RsaKeySize::_3072),
            KeyType::Rsa4096 => KeyPair::generate_rsa_for(alg, RsaKeySize::_4096),
            _ => KeyPair::generate_for(alg),
        }
        .map_err(|e| Error::Crypto(format!("generating a {} key: {e}", self.as_str())))?;
        Ok(PrivateKey {
            inner: Inner::Classic(pair),
        })
    }
}

/// The three ML-DSA parameter sets (FIPS 204).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MlDsa {
    P44,
    P65,
    P87,
}

impl MlDsa {
    const ALL: [MlDsa; 3] = [MlDsa::P44, MlDsa::P65, MlDsa::P87];

    fn signing(self) -> &'static PqdsaSigningAlgorithm {
        match self {
            MlDsa::P44 => &signature::ML_DSA_44_SIGNING,
            MlDsa::P65 => &signature::ML_DSA_65_SIGNING,
            MlDsa::P87 => &signature::ML_DSA_87_SIGNING,
        }
    }

    pub(crate) fn key_type(self) -> KeyType {
        match self {
            MlDsa::P44 => KeyType::MlDsa44,
            MlDsa::P65 => KeyType::MlDsa65,
            MlDsa::P87 => KeyType::MlDsa87,
        }
    }

    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        self.key_type().signature_algorithm()
    }

    fn level(self) -> u16 {
        match self {
            MlDsa::P44 => 44,
            MlDsa::P65 => 65,
            MlDsa::P87 => 87,
        }
    }

    /// FIPS 204 table 2: public key sizes.
    fn public_key_len(self) -> usize {
        match self {
            MlDsa::P44 => 1312,
            MlDsa::P65 => 1952,
            MlDsa::P87 => 2592,
        }
    }

    /// The verification algorithm, for [`crate::sig`].
    pub(crate) fn verification(self) -> &'static signature::PqdsaVerificationAlgorithm {
        match self {
            MlDsa::P44 => &signature::ML_DSA_44,
            MlDsa::P65 => &signature::ML_DSA_65,
            MlDsa::P87 => &signature::ML_DSA_87,
        }
    }
}

/// The ML-DSA parameter set an OID (dotted) names: id-ml-dsa-44/65/87
/// (NIST CSOR, RFC 9881), used both as signature and key algorithm.
pub(crate) fn ml_dsa_oid(dotted: &str) -> Option<MlDsa> {
    match dotted {
        "2.16.840.1.101.3.4.3.17" => Some(MlDsa::P44),
        "2.16.840.1.101.3.4.3.18" => Some(MlDsa::P65),
        "2.16.840.1.101.3.4.3.19" => Some(MlDsa::P87),
        _ => None,
    }
}

/// A public key to certify, as rcgen needs it. rcgen's own
/// SubjectPublicKeyInfo parser does not know ML-DSA.
pub(crate) struct CertifiedKey {
    alg: &'static rcgen::SignatureAlgorithm,
    raw: Vec<u8>,
}

impl CertifiedKey {
    /// From a DER SubjectPublicKeyInfo Ward issues for.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| Error::InvalidKey(format!("bad public key: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::InvalidKey(
                "bad public key: trailing bytes after it".into(),
            ));
        }
        let key_type = PublicKeyKind::from_spki(&spki).key_type()?;
        // For RSA the algorithm only picks the SPKI OID (rsaEncryption, the
        // same for every size); the modulus is in the raw key.
        Ok(CertifiedKey {
            alg: key_type.signature_algorithm(),
            raw: spki.subject_public_key.data.to_vec(),
        })
    }
}

impl PublicKeyData for CertifiedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// An ML-DSA key pair with its PKCS#8 (seed form) encoding, which rcgen
/// can generate but not load back.
struct MlDsaKey {
    set: MlDsa,
    pair: PqdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl MlDsaKey {
    fn new(set: MlDsa, pair: PqdsaKeyPair) -> Result<Self, Error> {
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| Error::Crypto("encoding an ML-DSA key as PKCS#8".into()))?;
        Ok(MlDsaKey {
            set,
            pair,
            pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
        })
    }

    /// Reads a PKCS#8 ML-DSA key of any parameter set (seed, expanded key or
    /// both, as RFC 9881 allows).
    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        MlDsa::ALL.into_iter().find_map(|set| {
            let pair = PqdsaKeyPair::from_pkcs8(set.signing(), der).ok()?;
            Some(MlDsaKey {
                set,
                pair,
                pkcs8: Zeroizing::new(der.to_vec()),
            })
        })
    }
}

enum Inner {
    Classic(KeyPair),
    MlDsa(MlDsaKey),
    Remote(RemoteHandle),
}

/// A private key that lives outside this process (a PKCS#11 token) and
/// signs on request. The secret never reaches Ward.
///
/// `sign` gets the whole message and returns the signature as X.509 wants
/// it for the key's type ([`KeyType`]): DER `ECDSA-Sig-Value` for ECDSA
/// (with the curve's hash: SHA-256 for P-256, SHA-384 for P-384), PKCS#1
/// v1.5 with SHA-256 for RSA, plain Ed25519.
pub trait RemoteKey: Send + Sync + 'static {
    /// The DER SubjectPublicKeyInfo of the key.
    fn spki_der(&self) -> &[u8];

    /// Signs `msg`; on failure the implementation logs why and returns a
    /// message safe to show.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String>;
}

/// A [`RemoteKey`] with what rcgen needs to know of its public half.
struct RemoteHandle {
    key: std::sync::Arc<dyn RemoteKey>,
    alg: &'static rcgen::SignatureAlgorithm,
    raw: Vec<u8>,
}

impl FromStr for KeyType {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str() == input)
            .ok_or_else(|| Error::UnknownKeyType(input.to_owned()))
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for KeyType {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<KeyType> for String {
    fn from(k: KeyType) -> String {
        k.as_str().to_owned()
    }
}

/// A private key that can sign certificates.
pub struct PrivateKey {
    inner: Inner,
}

impl PrivateKey {
    /// A key held by `key` outside the process. Its public key must be one
    /// of the classical [`KeyType`]s (ML-DSA is not offered by tokens).
    pub fn remote(key: std::sync::Arc<dyn RemoteKey>) -> Result<Self, Error> {
        let der = key.spki_der();
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| Error::InvalidKey(format!("bad public key: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::InvalidKey(
                "bad public key: trailing bytes after it".into(),
            ));
        }
        let key_type = PublicKeyKind::from_spki(&spki).key_type()?;
        if key_type.is_post_quantum() {
            return Err(Error::InvalidKey(
                "ML-DSA keys in a token are not supported".into(),
            ));
        }
        let raw = spki.subject_public_key.data.to_vec();
        Ok(PrivateKey {
            inner: Inner::Remote(RemoteHandle {
                alg: key_type.signature_algorithm(),
                raw,
                key,
            }),
        })
    }

    /// Whether the key is held outside the process (its signatures cost a
    /// round trip to the token, and it cannot be exported).
    pub fn is_remote(&self) -> bool {
        matches!(self.inner, Inner::Remote(_))
    }

    /// Parses a PEM private key (PKCS#8, SEC1 or PKCS#1; ML-DSA keys as
    /// PKCS#8). The error never quotes the input.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let pair = KeyPair::from_pem(pem).map_err(|e| match e {
            rcgen::Error::PemError(_) => Error::InvalidKey("not a PEM private key".to_owned()),
            _ => Error::InvalidKey("unsupported or corrupt private key".to_owned()),
        });
        match pair {
            Ok(pair) => Ok(PrivateKey {
                inner: Inner::Classic(pair),
            }),
            Err(e @ Error::InvalidKey(_)) => {
                // rcgen cannot load ML-DSA keys: try them here.
                use rustls_pki_types::pem::PemObject as _;
                let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes());
                der.ok()
                    .and_then(|d| MlDsaKey::from_pkcs8(d.secret_pkcs8_der()))
                    .map(|k| PrivateKey {
                        inner: Inner::MlDsa(k),
                    })
                    .ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The key as PKCS#8 PEM; the returned buffer is wiped on drop.
    /// [`Error::NotExportable`] for a [remote](Self::is_remote) key, which
    /// cannot leave its token.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        use base64::Engine as _;
        let der = self.to_pkcs8_der()?;
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*der));
        let mut pem = String::with_capacity(b64.len() + 64);
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(Zeroizing::new(pem))
    }

    /// The key as PKCS#8 DER; the returned buffer is wiped on drop.
    ///
    /// Ed25519 keys are written as PKCS#8 v1 (RFC 8410 without the optional
    /// public key): aws-lc produces v2, which OpenSSL 3.0 cannot read.
    /// [`Error::NotExportable`] for a [remote](Self::is_remote) key.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let pair = match &self.inner {
            Inner::Classic(pair) => pair,
            Inner::MlDsa(k) => return Ok(k.pkcs8.clone()),
            Inner::Remote(_) => return Err(Error::NotExportable),
        };
        let der = Zeroizing::new(pair.serialize_der());
        if pair.algorithm() == &rcgen::PKCS_ED25519 {
            let v1 = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .ok()
                .and_then(|pair| pair.to_pkcs8v1().ok());
            if let Some(v1) = v1 {
                return Ok(Zeroizing::new(v1.as_ref().to_vec()));
            }
        }
        Ok(der)
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.subject_public_key_info()
    }

    /// The key's type (RSA sizes are read from the modulus).
    pub fn key_type(&self) -> Result<KeyType, Error> {
        PublicKeyKind::from_spki_der(&self.public_key_der())?.key_type()
    }

    /// A PEM certificate signing request for this key, with an empty
    /// subject and no extensions: proof of possession only (the CA takes
    /// the names from elsewhere).
    pub fn csr_pem(&self) -> Result<String, Error> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .serialize_request(self)
            .and_then(|csr| csr.pem())
            .map_err(|e| Error::Crypto(format!("building a CSR: {e}")))
    }

    /// A PEM CSR for an intermediate CA key, subject `O=org, CN=cn`, for a
    /// root outside Ward to sign (`ward ca intermediate csr`); the signer
    /// sets the CA extensions.
    pub fn ca_csr_pem(&self, org: &str, cn: &str) -> Result<String, Error> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, org);
        dn.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name = dn;
        params
            .serialize_request(self)
            .and_then(|csr| csr.pem())
            .map_err(|e| Error::Crypto(format!("building a CSR: {e}")))
    }
}

impl PublicKeyData for PrivateKey {
    fn der_bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Classic(pair) => pair.der_bytes(),
            Inner::MlDsa(k) => k.pair.public_key().as_ref(),
            Inner::Remote(r) => &r.raw,
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match &self.inner {
            Inner::Classic(pair) => pair.algorithm(),
            Inner::MlDsa(k) => k.set.rcgen(),
            Inner::Remote(r) => r.alg,
        }
    }
}

impl SigningKey for PrivateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match &self.inner {
            Inner::Classic(pair) => pair.sign(msg),
            Inner::MlDsa(k) => {
                let mut sig = vec![0; k.pair.algorithm().signature_len()];
                let len = k
                    .pair
                    .sign(msg, &mut sig)
                    .map_err(|_| rcgen::Error::RingUnspecified)?;
                sig.truncate(len);
                Ok(sig)
            }
            Inner::Remote(r) => r.key.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError),
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &PublicKeyData::algorithm(self))
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// What a public key is, read from its SubjectPublicKeyInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum PublicKeyKind {
    /// An ECDSA key on a NIST curve (P-256, P-384, P-521).
    Ecdsa {
        /// Curve size in bits (256, 384, 521), from the named curve.
        bits: usize,
    },
    /// An EC key on a curve Ward does not support (secp256k1, Brainpool,
    /// explicit parameters, …).
    EcdsaUnsupported {
        /// The curve's name, or its OID when it has no well-known name.
        curve: &'static str,
    },
    /// An Ed25519 key.
    Ed25519,
    /// An ML-DSA key (FIPS 204), post-quantum.
    MlDsa {
        /// The parameter set: 44, 65 or 87.
        level: u16,
    },
    /// An RSA key with the given modulus size.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// Something else (DSA, an unknown curve, …).
    Other,
}

impl PublicKeyKind {
    /// Reads the kind of a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let (_, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| Error::InvalidKey(format!("bad public key: {e}")))?;
        Ok(Self::from_spki(&spki))
    }

    /// Reads the kind of a parsed SubjectPublicKeyInfo.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Self {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => PublicKeyKind::Rsa {
                bits: rsa.key_size(),
            },
            // The size comes from the named curve, not from the point: a
            // P-521 point is 133 bytes, which reads as 528 bits.
            Ok(PublicKey::EC(_)) => ec_curve(spki),
            _ if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
                PublicKeyKind::Ed25519
            }
            // RFC 9881: the parameters are absent and the key is the raw
            // encoded public key of the set's fixed size.
            _ => match ml_dsa_oid(&spki.algorithm.algorithm.to_id_string()) {
                Some(set)
                    if spki.algorithm.parameters.is_none()
                        && spki.subject_public_key.data.len() == set.public_key_len() =>
                {
                    PublicKeyKind::MlDsa { level: set.level() }
                }
                _ => PublicKeyKind::Other,
            },
        }
    }

    /// The matching Ward key type, when there is one (P-521 and other
    /// curves have none).
    pub fn key_type(self) -> Result<KeyType, Error> {
        match self {
            PublicKeyKind::Ecdsa { bits: 256 } => Ok(KeyType::EcdsaP256),
            PublicKeyKind::Ecdsa { bits: 384 } => Ok(KeyType::EcdsaP384),
            PublicKeyKind::Ed25519 => Ok(KeyType::Ed25519),
            PublicKeyKind::Rsa { bits: 2048 } => Ok(KeyType::Rsa2048),
            PublicKeyKind::Rsa { bits: 3072 } => Ok(KeyType::Rsa3072),
            PublicKeyKind::Rsa { bits: 4096 } => Ok(KeyType::Rsa4096),
            PublicKeyKind::MlDsa { level: 44 } => Ok(KeyType::MlDsa44),
            PublicKeyKind::MlDsa { level: 65 } => Ok(KeyType::MlDsa65),
            PublicKeyKind::MlDsa { level: 87 } => Ok(KeyType::MlDsa87),
            other => Err(Error::InvalidKey(format!("unsupported key: {other}"))),
        }
    }

    /// Whether the key may also encipher (RSA), which adds keyEncipherment
    /// to a leaf's key usage.
    pub fn is_rsa(self) -> bool {
        matches!(self, PublicKeyKind::Rsa { .. })
    }

    /// Whether the key is post-quantum (ML-DSA).
    pub fn is_post_quantum(self) -> bool {
        matches!(self, PublicKeyKind::MlDsa { .. })
    }
}

impl fmt::Display for PublicKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKeyKind::Ecdsa { bits } => write!(f, "ECDSA P-{bits}"),
            PublicKeyKind::EcdsaUnsupported { curve } => {
                write!(f, "ECDSA on the unsupported curve {curve}")
            }
            PublicKeyKind::Ed25519 => f.write_str("Ed25519"),
            PublicKeyKind::MlDsa { level } => write!(f, "ML-DSA-{level}"),
            PublicKeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
            PublicKeyKind::Other => f.write_str("unknown"),
        }
    }
}

/// The kind of an EC key, from the named curve in its algorithm
/// parameters.
fn ec_curve(spki: &SubjectPublicKeyInfo<'_>) -> PublicKeyKind {
    let oid = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    let unsupported = |curve| PublicKeyKind::EcdsaUnsupported { curve };
    match oid.as_deref() {
        Some("1.2.840.10045.3.1.7") => PublicKeyKind::Ecdsa { bits: 256 },
        Some("1.3.132.0.34") => PublicKeyKind::Ecdsa { bits: 384 },
        Some("1.3.132.0.35") => PublicKeyKind::Ecdsa { bits: 521 },
        Some("1.3.132.0.10") => unsupported("secp256k1"),
        Some("1.2.840.10045.3.1.1") => unsupported("P-192"),
        Some("1.3.132.0.33") => unsupported("P-224"),
        Some("1.3.36.3.3.2.8.1.1.7") => unsupported("brainpoolP256r1"),
        Some("1.3.36.3.3.2.8.1.1.11") => unsupported("brainpoolP384r1"),
        Some("1.3.36.3.3.2.8.1.1.13") => unsupported("brainpoolP512r1"),
        Some(_) => unsupported("(an unknown named curve)"),
        None => unsupported("(explicit parameters)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names_round_trip() {
        for k in KeyType::ALL {
            assert_eq!(k.as_str().parse::<KeyType>().unwrap(), k);
        }
        let err = "rsa-1024".parse::<KeyType>().unwrap_err().to_string();
        assert!(err.contains("unknown key type"), "{err}");
    }

    #[test]
    fn generated_keys_reload_and_report_their_type() {
        for k in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
        ] {
            let key = k.generate().unwrap();
            assert_eq!(key.key_type().unwrap(), k);
            let pem = key.to_pkcs8_pem().unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let again = PrivateKey::from_pem(&pem).unwrap();
            assert_eq!(again.public_key_der(), key.public_key_der());
        }
    }

    /// A [`RemoteKey`] kept in memory, standing in for a token in unit
    /// tests (the real one, SoftHSM2, runs in `ward`'s hsm tests).
    struct InMemory {
        pair: signature::EcdsaKeyPair,
        spki: Vec<u8>,
        gone: std::sync::atomic::AtomicBool,
    }

    impl RemoteKey for InMemory {
        fn spki_der(&self) -> &[u8] {
            &self.spki
        }

        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
            if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("the token is gone".into());
            }
            self.pair
                .sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing failed".into())
        }
    }

    #[test]
    fn a_remote_key_signs_certificates_and_its_failure_is_key_unavailable() {
        use crate::issue::{CaSpec, Issuer, LeafRequest, Profile, new_root};
        use std::sync::Arc;
        use std::sync::atomic::Ordering;
        let now = time::OffsetDateTime::now_utc();
        let soft = KeyType::EcdsaP256.generate().unwrap();
        let remote = Arc::new(InMemory {
            pair: signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &soft.to_pkcs8_der().unwrap(),
            )
            .unwrap(),
            spki: soft.public_key_der(),
            gone: false.into(),
        });
        let key = PrivateKey::remote(remote.clone()).unwrap();
        assert!(key.is_remote());
        assert!(
            matches!(key.to_pkcs8_der(), Err(Error::NotExportable)),
            "a remote key has no PKCS#8"
        );
        assert!(matches!(key.to_pkcs8_pem(), Err(Error::NotExportable)));
        assert_eq!(key.key_type().unwrap(), KeyType::EcdsaP256);
        assert_eq!(key.public_key_der(), soft.public_key_der());
        let spec = CaSpec {
            name: "T".into(),
            root_validity: std::time::Duration::from_secs(86_400),
            intermediate_validity: std::time::Duration::from_secs(3600),
            permitted_dns: Vec::new(),
        };
        let root = new_root(&spec, &key, now).unwrap();
        let issuer = Issuer::new(root.der.clone(), key).unwrap();
        assert!(
            issuer.is_rsa(),
            "remote signatures run off the async workers"
        );
        let leaf_key = KeyType::EcdsaP256.generate().unwrap();
        let req = LeafRequest {
            profile: Profile::Peer,
            spiffe_id: Some("spiffe://example.org/w".parse().unwrap()),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            common_name: None,
            ttl: std::time::Duration::from_secs(60),
            clamp_to_issuer: true,
            serial: crate::Serial::random(now).unwrap(),
            crl_url: None,
            ocsp_url: None,
        };
        let leaf = issuer
            .sign_leaf(&leaf_key.public_key_der(), &req, now)
            .unwrap();
        crate::verify::issued_by(&leaf.der, &root.der).unwrap();

        remote.gone.store(true, Ordering::SeqCst);
        let err = issuer
            .sign_leaf(&leaf_key.public_key_der(), &req, now)
            .unwrap_err();
        assert!(matches!(err, Error::KeyUnavailable(_)), "{err:?}");
        let crl = crate::crl::sign_crl(&issuer, &[], 1, now, now + time::Duration::hours(1));
        assert!(matches!(crl, Err(Error::KeyUnavailable(_))), "{crl:?}");
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let key = KeyType::EcdsaP256.generate().unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let body: String = pem.lines().nth(1).unwrap().to_owned();
        assert!(!format!("{key:?}").contains(&body));
        let garbled = pem.replace(&body[10..20], "!!!!!!!!!!");
        let err = PrivateKey::from_pem(&garbled).unwrap_err().to_string();
        assert!(!err.contains(&body[20..]), "{err}");
        assert!(PrivateKey::from_pem("not a key").is_err());
    }
}
