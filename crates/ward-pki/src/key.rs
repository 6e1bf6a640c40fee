//! Key types and private keys.
//!
//! [`PrivateKey`] never shows its secret: `Debug` is redacted and the PEM it
//! renders is wiped from memory when dropped.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, PublicKeyData, RsaKeySize};
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
}

impl KeyType {
    /// Every supported key type, in a stable order.
    pub const ALL: [KeyType; 6] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
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
        }
    }

    fn signature_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// Generates a fresh private key of this type from the OS CSPRNG.
    pub fn generate(self) -> Result<PrivateKey, Error> {
        let alg = self.signature_algorithm();
        let pair = match self {
            KeyType::Rsa2048 => KeyPair::generate_rsa_for(alg, RsaKeySize::_2048),
            KeyType::Rsa3072 => KeyPair::generate_rsa_for(alg, RsaKeySize::_3072),
            KeyType::Rsa4096 => KeyPair::generate_rsa_for(alg, RsaKeySize::_4096),
            _ => KeyPair::generate_for(alg),
        }
        .map_err(|e| Error::Crypto(format!("generating a {} key: {e}", self.as_str())))?;
        Ok(PrivateKey { pair })
    }
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
    pair: KeyPair,
}

impl PrivateKey {
    /// Parses a PEM private key (PKCS#8, SEC1 or PKCS#1). The error never
    /// quotes the input.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let pair = KeyPair::from_pem(pem).map_err(|e| {
            Error::InvalidKey(match e {
                rcgen::Error::PemError(_) => "not a PEM private key".to_owned(),
                _ => "unsupported or corrupt private key".to_owned(),
            })
        })?;
        Ok(PrivateKey { pair })
    }

    /// The key as PKCS#8 PEM; the returned buffer is wiped on drop.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        let der = self.to_pkcs8_der();
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*der));
        let mut pem = String::with_capacity(b64.len() + 64);
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Zeroizing::new(pem)
    }

    /// The key as PKCS#8 DER; the returned buffer is wiped on drop.
    ///
    /// Ed25519 keys are written as PKCS#8 v1 (RFC 8410 without the optional
    /// public key): aws-lc produces v2, which OpenSSL 3.0 cannot read.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let der = Zeroizing::new(self.pair.serialize_der());
        if self.pair.algorithm() == &rcgen::PKCS_ED25519 {
            let v1 = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .ok()
                .and_then(|pair| pair.to_pkcs8v1().ok());
            if let Some(v1) = v1 {
                return Zeroizing::new(v1.as_ref().to_vec());
            }
        }
        der
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// The key's type (RSA sizes are read from the modulus).
    pub fn key_type(&self) -> Result<KeyType, Error> {
        PublicKeyKind::from_spki_der(&self.public_key_der())?.key_type()
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }

    pub(crate) fn into_pair(self) -> KeyPair {
        self.pair
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.pair.algorithm())
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
            _ => PublicKeyKind::Other,
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
            other => Err(Error::InvalidKey(format!("unsupported key: {other}"))),
        }
    }

    /// Whether the key may also encipher (RSA), which adds keyEncipherment
    /// to a leaf's key usage.
    pub fn is_rsa(self) -> bool {
        matches!(self, PublicKeyKind::Rsa { .. })
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
            let pem = key.to_pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let again = PrivateKey::from_pem(&pem).unwrap();
            assert_eq!(again.public_key_der(), key.public_key_der());
        }
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let key = KeyType::EcdsaP256.generate().unwrap();
        let pem = key.to_pkcs8_pem();
        let body: String = pem.lines().nth(1).unwrap().to_owned();
        assert!(!format!("{key:?}").contains(&body));
        let garbled = pem.replace(&body[10..20], "!!!!!!!!!!");
        let err = PrivateKey::from_pem(&garbled).unwrap_err().to_string();
        assert!(!err.contains(&body[20..]), "{err}");
        assert!(PrivateKey::from_pem("not a key").is_err());
    }
}
