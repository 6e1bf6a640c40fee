//! JWS as RFC 8555 §6.2 uses it: flattened JSON serialization, protected
//! header with `alg`, `nonce`, `url` and exactly one of `jwk` or `kid`;
//! ES256, ES384, RS256 and EdDSA (Ed25519) signatures checked with
//! aws-lc-rs; RFC 7638 thumbprints; HS256 for external account binding.
//!
//! Must never: accept `none` or a MAC algorithm on a request, accept a key
//! whose type does not match `alg`, or accept both `jwk` and `kid`.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::problem::Problem;

/// Decodes base64url without padding, naming the field in the error.
pub(crate) fn b64(field: &str, text: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Problem::malformed(format!("{field} is not base64url without padding")))
}

/// Encodes base64url without padding.
pub(crate) fn b64e(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The flattened JWS serialization.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened {
    protected: String,
    payload: String,
    signature: String,
}

/// A parsed, not yet verified, JWS.
#[derive(Debug)]
pub(crate) struct Jws {
    /// The protected header.
    pub header: Header,
    /// The decoded payload (empty for POST-as-GET).
    pub payload: Vec<u8>,
    /// `protected || '.' || payload`, as signed.
    signing_input: Vec<u8>,
    /// The signature bytes.
    signature: Vec<u8>,
}

/// How the request names its key.
#[derive(Debug)]
pub(crate) enum KeyRef {
    /// A new key, embedded (newAccount, revokeCert by certificate key).
    Jwk(Jwk),
    /// An account URL.
    Kid(String),
}

/// The protected header.
#[derive(Debug)]
pub(crate) struct Header {
    /// Signature algorithm.
    pub alg: Alg,
    /// The anti-replay nonce (absent only in inner JWSs).
    pub nonce: Option<String>,
    /// The URL the request was sent to.
    pub url: String,
    /// The key.
    pub key: KeyRef,
}

/// Accepted signature algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    /// ECDSA P-256 SHA-256.
    Es256,
    /// ECDSA P-384 SHA-384.
    Es384,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    fn parse(name: &str) -> Result<Alg, Problem> {
        match name {
            "ES256" => Ok(Alg::Es256),
            "ES384" => Ok(Alg::Es384),
            "RS256" => Ok(Alg::Rs256),
            "EdDSA" => Ok(Alg::EdDsa),
            other => Err(Problem::new(
                "badSignatureAlgorithm",
                axum::http::StatusCode::BAD_REQUEST,
                format!("unsupported JWS algorithm {other:?}; use ES256, ES384, RS256 or EdDSA"),
            )),
        }
    }
}

/// A public key as a JWK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Jwk {
    key: KeyMaterial,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyMaterial {
    /// Uncompressed point `04 || x || y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, Problem> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::malformed(format!("JWK member {name:?} is missing")))
}

/// Strips leading zero bytes (JWK integers are minimal big-endian).
fn strip(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

impl Jwk {
    /// Reads a JWK object, refusing private keys and unknown key types.
    pub(crate) fn from_value(value: &Value) -> Result<Jwk, Problem> {
        let obj = value
            .as_object()
            .ok_or_else(|| Problem::malformed("jwk must be an object"))?;
        if obj.contains_key("d") {
            return Err(Problem::malformed("jwk holds a private key"));
        }
        let ec = |size: usize| -> Result<Vec<u8>, Problem> {
            let x = b64("jwk.x", field(obj, "x")?)?;
            let y = b64("jwk.y", field(obj, "y")?)?;
            if x.len() != size || y.len() != size {
                return Err(Problem::malformed("jwk coordinates have the wrong length"));
            }
            let mut point = vec![4];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(point)
        };
        let key = match (field(obj, "kty")?, obj.get("crv").and_then(Value::as_str)) {
            ("EC", Some("P-256")) => KeyMaterial::P256(ec(32)?),
            ("EC", Some("P-384")) => KeyMaterial::P384(ec(48)?),
            ("RSA", _) => {
                let n = b64("jwk.n", field(obj, "n")?)?;
                let e = b64("jwk.e", field(obj, "e")?)?;
                let (n, e) = (strip(&n).to_vec(), strip(&e).to_vec());
                if n.len() < 256 {
                    return Err(Problem::new(
                        "badPublicKey",
                        axum::http::StatusCode::BAD_REQUEST,
                        "RSA account keys must have at least 2048 bits",
                    ));
                }
                KeyMaterial::Rsa { n, e }
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64("jwk.x", field(obj, "x")?)?;
                if x.len() != 32 {
                    return Err(Problem::malformed("Ed25519 key must be 32 bytes"));
                }
                KeyMaterial::Ed25519(x)
            }
            (kty, crv) => {
                return Err(Problem::new(
                    "badPublicKey",
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("unsupported key type {kty:?} (curve {crv:?})"),
                ));
            }
        };
        Ok(Jwk { key })
    }

    /// The JWK as canonical JSON (RFC 7638 member order), which is also
    /// what the store keeps.
    pub(crate) fn canonical(&self) -> String {
        let coordinates = |p: &[u8]| {
            let half = (p.len() - 1) / 2;
            (b64e(&p[1..=half]), b64e(&p[half + 1..]))
        };
        match &self.key {
            KeyMaterial::P256(p) | KeyMaterial::P384(p) => {
                let crv = if matches!(self.key, KeyMaterial::P256(_)) {
                    "P-256"
                } else {
                    "P-384"
                };
                let (x, y) = coordinates(p);
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            KeyMaterial::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64e(e), b64e(n))
            }
            KeyMaterial::Ed25519(x) => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64e(x))
            }
        }
    }

    /// RFC 7638 thumbprint, base64url.
    pub(crate) fn thumbprint(&self) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.canonical().as_bytes());
        b64e(digest.as_ref())
    }

    /// Whether this key is the public key of a certificate (its
    /// SubjectPublicKeyInfo's key bits, as x509-parser reports them).
    pub(crate) fn matches_spki(&self, spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> bool {
        let bits: &[u8] = &spki.subject_public_key.data;
        match &self.key {
            KeyMaterial::P256(p) | KeyMaterial::P384(p) | KeyMaterial::Ed25519(p) => p == bits,
            KeyMaterial::Rsa { n, e } => match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                    strip(rsa.modulus) == n.as_slice() && strip(rsa.exponent) == e.as_slice()
                }
                _ => false,
            },
        }
    }

    /// Checks `signature` over `message` with this key and `alg`.
    pub(crate) fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> Result<(), Problem> {
        let ok = match (&self.key, alg) {
            (KeyMaterial::P256(p), Alg::Es256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p)
                    .verify(message, sig)
                    .is_ok()
            }
            (KeyMaterial::P384(p), Alg::Es384) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, p)
                    .verify(message, sig)
                    .is_ok()
            }
            (KeyMaterial::Ed25519(p), Alg::EdDsa) => UnparsedPublicKey::new(&signature::ED25519, p)
                .verify(message, sig)
                .is_ok(),
            (KeyMaterial::Rsa { n, e }, Alg::Rs256) => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            _ => {
                return Err(Problem::new(
                    "badSignatureAlgorithm",
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("algorithm {alg:?} does not fit the key type"),
                ));
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Problem::malformed("JWS signature does not verify"))
        }
    }
}

impl Jws {
    /// Parses a flattened JWS and its protected header (RFC 8555 §6.2).
    pub(crate) fn parse(body: &[u8]) -> Result<Jws, Problem> {
        let flat: Flattened = serde_json::from_slice(body)
            .map_err(|e| Problem::malformed(format!("body is not a flattened JWS: {e}")))?;
        let header_bytes = b64("protected", &flat.protected)?;
        let header: Value = serde_json::from_slice(&header_bytes)
            .map_err(|_| Problem::malformed("protected header is not JSON"))?;
        let obj = header
            .as_object()
            .ok_or_else(|| Problem::malformed("protected header is not an object"))?;
        let alg = Alg::parse(
            obj.get("alg")
                .and_then(Value::as_str)
                .ok_or_else(|| Problem::malformed("protected header has no alg"))?,
        )?;
        let url = obj
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Problem::malformed("protected header has no url"))?
            .to_owned();
        let nonce = match obj.get("nonce") {
            None => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return Err(Problem::malformed("nonce must be a string")),
        };
        let key = match (obj.get("jwk"), obj.get("kid")) {
            (Some(jwk), None) => KeyRef::Jwk(Jwk::from_value(jwk)?),
            (None, Some(Value::String(kid))) => KeyRef::Kid(kid.clone()),
            (Some(_), Some(_)) => {
                return Err(Problem::malformed(
                    "protected header has both jwk and kid; exactly one is allowed",
                ));
            }
            _ => {
                return Err(Problem::malformed(
                    "protected header needs exactly one of jwk and kid",
                ));
            }
        };
        let payload = b64("payload", &flat.payload)?;
        let signature = b64("signature", &flat.signature)?;
        let mut signing_input = flat.protected.into_bytes();
        signing_input.push(b'.');
        signing_input.extend_from_slice(flat.payload.as_bytes());
        Ok(Jws {
            header: Header {
                alg,
                nonce,
                url,
                key,
            },
            payload,
            signing_input,
            signature,
        })
    }

    /// Verifies the signature with `key`.
    pub(crate) fn verify(&self, key: &Jwk) -> Result<(), Problem> {
        key.verify(self.header.alg, &self.signing_input, &self.signature)
    }

    /// Whether the payload is empty (POST-as-GET).
    pub(crate) fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }
}

/// Checks an external account binding (RFC 8555 §7.3.4): a JWS with HS256
/// over the account key, signed with the EAB key `hmac_key`. Returns the
/// key id it names.
pub(crate) fn eab_kid(eab: &Value) -> Result<String, Problem> {
    let flat: Flattened = serde_json::from_value(eab.clone())
        .map_err(|_| Problem::malformed("externalAccountBinding is not a flattened JWS"))?;
    let header: Value = serde_json::from_slice(&b64("eab protected", &flat.protected)?)
        .map_err(|_| Problem::malformed("externalAccountBinding header is not JSON"))?;
    header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Problem::malformed("externalAccountBinding has no kid"))
}

/// Verifies an EAB JWS against `hmac_key`, the outer `url` and the account `jwk`.
pub(crate) fn verify_eab(
    eab: &Value,
    hmac_key: &[u8],
    url: &str,
    jwk: &Jwk,
) -> Result<(), Problem> {
    let unauthorized = |m: &str| Problem::unauthorized(format!("external account binding: {m}"));
    let flat: Flattened = serde_json::from_value(eab.clone())
        .map_err(|_| Problem::malformed("externalAccountBinding is not a flattened JWS"))?;
    let header: Value = serde_json::from_slice(&b64("eab protected", &flat.protected)?)
        .map_err(|_| Problem::malformed("externalAccountBinding header is not JSON"))?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(Problem::new(
            "badSignatureAlgorithm",
            axum::http::StatusCode::BAD_REQUEST,
            "external account binding must use HS256",
        ));
    }
    if header.get("nonce").is_some() {
        return Err(Problem::malformed(
            "external account binding must not carry a nonce",
        ));
    }
    if header.get("url").and_then(Value::as_str) != Some(url) {
        return Err(unauthorized("url does not match the request"));
    }
    let payload: Value = serde_json::from_slice(&b64("eab payload", &flat.payload)?)
        .map_err(|_| Problem::malformed("externalAccountBinding payload is not a JWK"))?;
    if Jwk::from_value(&payload)? != *jwk {
        return Err(unauthorized("it binds another key"));
    }
    let signature = b64("eab signature", &flat.signature)?;
    let mut input = flat.protected.into_bytes();
    input.push(b'.');
    input.extend_from_slice(flat.payload.as_bytes());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hmac_key);
    aws_lc_rs::hmac::verify(&key, &input, &signature).map_err(|_| unauthorized("bad MAC"))
}

#[cfg(test)]
mod tests;
