//! The few DER structures a token's raw output must be wrapped in: ECDSA
//! signatures (`r‖s` → `ECDSA-Sig-Value`, RFC 3279) and public keys
//! (→ SubjectPublicKeyInfo, RFC 5480, RFC 3279, RFC 8410).

use ward_pki::KeyType;

/// id-ecPublicKey.
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// secp256r1 (P-256).
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1 (P-384).
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// id-Ed25519.
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// rsaEncryption with NULL parameters.
const ALG_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// A DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative DER INTEGER from big-endian bytes.
fn uint(bytes: &[u8]) -> Vec<u8> {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let mut value = bytes[skip..].to_vec();
    if value.first().is_none_or(|b| b & 0x80 != 0) {
        value.insert(0, 0);
    }
    tlv(0x02, &value)
}

/// Lowercase hex, for messages.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `r‖s` (each `field` bytes, as PKCS#11 returns it) as a DER
/// `ECDSA-Sig-Value`.
pub(super) fn ecdsa_sig(raw: &[u8], field: usize) -> Result<Vec<u8>, String> {
    if raw.len() != 2 * field {
        return Err(format!(
            "an ECDSA signature of {} bytes, expected {}",
            raw.len(),
            2 * field
        ));
    }
    let (r, s) = raw.split_at(field);
    let mut body = uint(r);
    body.extend(uint(s));
    Ok(tlv(0x30, &body))
}

/// CKA_EC_PARAMS for a curve: its named-curve OID.
pub(super) fn curve_params(key_type: KeyType) -> &'static [u8] {
    match key_type {
        KeyType::EcdsaP384 => OID_P384,
        KeyType::Ed25519 => OID_ED25519,
        _ => OID_P256,
    }
}

/// The SubjectPublicKeyInfo of an EC or Ed25519 key from CKA_EC_POINT,
/// which tokens return either raw or wrapped in an OCTET STRING.
pub(super) fn ec_spki(key_type: KeyType, point: &[u8]) -> Result<Vec<u8>, String> {
    let size = match key_type {
        KeyType::EcdsaP256 => 65,
        KeyType::EcdsaP384 => 97,
        KeyType::Ed25519 => 32,
        other => return Err(format!("{other} is not an EC key type")),
    };
    let raw = if point.len() == size {
        point
    } else if point.len() == size + 2 && point[0] == 0x04 && usize::from(point[1]) == size {
        &point[2..]
    } else {
        return Err(format!(
            "the token returned a {}-byte EC point for a {key_type} key",
            point.len()
        ));
    };
    let alg = if key_type == KeyType::Ed25519 {
        tlv(0x30, OID_ED25519)
    } else {
        tlv(0x30, &[OID_EC, curve_params(key_type)].concat())
    };
    let mut bits = vec![0];
    bits.extend_from_slice(raw);
    Ok(tlv(0x30, &[alg, tlv(0x03, &bits)].concat()))
}

/// The SubjectPublicKeyInfo of an RSA key from its modulus and exponent.
pub(super) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let key = tlv(0x30, &[uint(modulus), uint(exponent)].concat());
    let mut bits = vec![0];
    bits.extend(key);
    tlv(0x30, &[ALG_RSA.to_vec(), tlv(0x03, &bits)].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_encode_as_openssl_and_aws_lc_expect() {
        // High bit set on r: a zero byte is prepended; leading zeros of s go.
        let mut raw = vec![0x80; 32];
        raw.extend([0u8; 31]);
        raw.push(0x05);
        let der = ecdsa_sig(&raw, 32).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x05]);
        assert!(ecdsa_sig(&raw[1..], 32).unwrap_err().contains("63 bytes"));
        // A P-384 signature's body exceeds 127 bytes only with long form.
        assert_eq!(tlv(0x30, &[0; 200])[..3], [0x30, 0x81, 200]);
        assert_eq!(tlv(0x30, &[0; 300])[..4], [0x30, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn public_keys_from_the_token_become_spkis_ward_pki_reads() {
        let key = KeyType::EcdsaP256.generate().unwrap();
        let spki = key.public_key_der();
        // The raw point is the last 65 bytes of a P-256 SPKI.
        let point = &spki[spki.len() - 65..];
        assert_eq!(ec_spki(KeyType::EcdsaP256, point).unwrap(), spki);
        let wrapped = [&[0x04, 65][..], point].concat();
        assert_eq!(ec_spki(KeyType::EcdsaP256, &wrapped).unwrap(), spki);
        assert!(ec_spki(KeyType::EcdsaP384, point).is_err());
        let ed = KeyType::Ed25519.generate().unwrap().public_key_der();
        assert_eq!(ec_spki(KeyType::Ed25519, &ed[ed.len() - 32..]).unwrap(), ed);

        use x509_parser::prelude::FromDer as _;
        let rsa = KeyType::Rsa2048.generate().unwrap().public_key_der();
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&rsa).unwrap();
        let Ok(x509_parser::public_key::PublicKey::RSA(key)) = spki.parsed() else {
            panic!("not RSA")
        };
        // Tokens return the modulus without a sign byte.
        let modulus = key.modulus.strip_prefix(&[0][..]).unwrap_or(key.modulus);
        assert_eq!(rsa_spki(modulus, key.exponent), rsa);
    }
}
