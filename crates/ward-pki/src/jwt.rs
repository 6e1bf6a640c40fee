//! JWT-SVIDs (SPIFFE JWT-SVID specification) and the JWK sets that carry
//! their keys (SPIFFE Trust Domain and Bundle specification).
//!
//! [`JwtSigner`] is the CA's ES256 signing key: it mints compact JWS tokens
//! with `kid` in the header and `sub`, `aud`, `exp`, `iat` in the claims.
//! [`JwkSet`] is a parsed bundle document; [`JwkSet::verify`] checks a token
//! against its `jwt-svid` keys (ES256, ES384, RS256), the expected trust
//! domain, audience and expiry.
//!
//! Must never: accept `alg: none` or a MAC algorithm, accept a token whose
//! key is missing from the set or whose key type does not match `alg`,
//! accept a token without `aud` or `exp`, or quote a token in an error.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair as _, RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::{SpiffeId, TrustDomain};

/// Longest token accepted anywhere (a JWT-SVID is a few hundred bytes).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest JWK set document parsed.
pub const MAX_JWKS_LEN: usize = 256 * 1024;
/// Most audiences a token may carry or a request may ask for.
pub const MAX_AUDIENCES: usize = 16;
/// Longest audience value.
pub const MAX_AUDIENCE_LEN: usize = 256;
/// The `use` of a JWK that verifies JWT-SVIDs.
pub const USE_JWT_SVID: &str = "jwt-svid";
/// The `use` of a JWK that carries an X.509 root.
pub const USE_X509_SVID: &str = "x509-svid";

/// Why a token, key or key set was refused. Never quotes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not a well-formed JWT-SVID.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// A signature algorithm Ward does not accept.
    #[error("unsupported algorithm {0:?} (ES256, ES384, RS256 are accepted)")]
    UnsupportedAlgorithm(String),
    /// No key in the set has the token's `kid`.
    #[error("no key {0:?} in the trust bundle of this trust domain")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The expected audience is not in `aud`.
    #[error("audience {0:?} not in the token's audience")]
    WrongAudience(String),
    /// `sub` is not a SPIFFE ID of the expected trust domain.
    #[error("subject: {0}")]
    BadSubject(String),
    /// A key or key set is unusable.
    #[error("key: {0}")]
    Key(String),
}

fn b64d(field: &str, text: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwtError::Malformed(format!("{field} is not base64url without padding")))
}

fn b64e(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One JSON Web Key as a SPIFFE bundle carries it. Unknown members are
/// ignored on input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC` or `RSA`.
    pub kty: String,
    /// `jwt-svid` or `x509-svid`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Key id (required for `jwt-svid` keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// EC curve: `P-256` or `P-384`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Certificate chain (base64 DER, not url-safe), for `x509-svid` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

/// A verifying key taken from a [`Jwk`].
enum VerifyKey {
    Ec {
        alg: &'static signature::EcdsaVerificationAlgorithm,
        point: Vec<u8>,
        name: &'static str,
    },
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl Jwk {
    /// The EC public key of an ES256 key as a JWK (RFC 7518 §6.2).
    fn ec_p256(point: &[u8], kid: &str) -> Result<Jwk, JwtError> {
        if point.len() != 65 || point[0] != 4 {
            return Err(JwtError::Key("not an uncompressed P-256 point".into()));
        }
        Ok(Jwk {
            kty: "EC".into(),
            key_use: Some(USE_JWT_SVID.into()),
            kid: Some(kid.into()),
            crv: Some("P-256".into()),
            x: Some(b64e(&point[1..33])),
            y: Some(b64e(&point[33..])),
            ..Jwk::default()
        })
    }

    fn verify_key(&self) -> Result<VerifyKey, JwtError> {
        let field = |v: &Option<String>, name: &str| {
            v.as_deref()
                .ok_or_else(|| JwtError::Key(format!("{} key without {name}", self.kty)))
                .and_then(|t| b64d(name, t))
        };
        match self.kty.as_str() {
            "EC" => {
                let (alg, size, name): (&'static signature::EcdsaVerificationAlgorithm, _, _) =
                    match self.crv.as_deref() {
                        Some("P-256") => (&signature::ECDSA_P256_SHA256_FIXED, 32, "ES256"),
                        Some("P-384") => (&signature::ECDSA_P384_SHA384_FIXED, 48, "ES384"),
                        other => {
                            return Err(JwtError::Key(format!("unsupported EC curve {other:?}")));
                        }
                    };
                let (x, y) = (field(&self.x, "x")?, field(&self.y, "y")?);
                if x.len() != size || y.len() != size {
                    return Err(JwtError::Key("EC coordinates of the wrong size".into()));
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(VerifyKey::Ec { alg, point, name })
            }
            "RSA" => Ok(VerifyKey::Rsa {
                n: field(&self.n, "n")?,
                e: field(&self.e, "e")?,
            }),
            other => Err(JwtError::Key(format!("unsupported key type {other:?}"))),
        }
    }

    /// RFC 7638 thumbprint (base64url SHA-256 of the canonical members).
    pub fn thumbprint(&self) -> Result<String, JwtError> {
        let canonical = match self.kty.as_str() {
            "EC" => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                self.crv.as_deref().unwrap_or_default(),
                self.x.as_deref().unwrap_or_default(),
                self.y.as_deref().unwrap_or_default()
            ),
            "RSA" => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                self.e.as_deref().unwrap_or_default(),
                self.n.as_deref().unwrap_or_default()
            ),
            other => return Err(JwtError::Key(format!("unsupported key type {other:?}"))),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        Ok(b64e(digest.as_ref()))
    }
}

/// A SPIFFE bundle document: a JWK set with the SPIFFE members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
    /// Bundle version; a higher number is newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_sequence: Option<u64>,
    /// Seconds a follower should wait before fetching the bundle again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_refresh_hint: Option<u64>,
}

/// A verified (or, from [`peek`], merely decoded) JWT-SVID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSvid {
    /// The `sub` claim.
    pub spiffe_id: SpiffeId,
    /// The `aud` claim.
    pub audience: Vec<String>,
    /// The `exp` claim (Unix seconds).
    pub expiry: i64,
    /// The `iat` claim, when present.
    pub issued_at: Option<i64>,
    /// All claims, for callers that pass them on (ValidateJWTSVID).
    pub claims: Map<String, Value>,
}

impl JwkSet {
    /// Parses a bundle document of at most [`MAX_JWKS_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<JwkSet, JwtError> {
        if bytes.len() > MAX_JWKS_LEN {
            return Err(JwtError::Key(format!(
                "JWK set larger than {MAX_JWKS_LEN} bytes"
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| JwtError::Key(format!("bad JWK set: {e}")))
    }

    /// The set as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The same set with only its `jwt-svid` keys and no SPIFFE members
    /// (what the Workload API hands out as a JWT bundle).
    pub fn jwt_only(&self) -> JwkSet {
        JwkSet {
            keys: self
                .keys
                .iter()
                .filter(|k| k.key_use.as_deref() == Some(USE_JWT_SVID))
                .cloned()
                .collect(),
            spiffe_sequence: None,
            spiffe_refresh_hint: None,
        }
    }

    /// Verifies `token` as a JWT-SVID of `trust_domain` for `audience`
    /// at `now` (Unix seconds).
    pub fn verify(
        &self,
        token: &str,
        trust_domain: &TrustDomain,
        audience: &str,
        now: i64,
    ) -> Result<JwtSvid, JwtError> {
        let parts = split(token)?;
        let kid = parts
            .header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| JwtError::Malformed("header has no kid".into()))?;
        let alg = parts
            .header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| JwtError::Malformed("header has no alg".into()))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid) && k.key_use.as_deref() == Some(USE_JWT_SVID))
            .ok_or_else(|| JwtError::UnknownKey(kid.to_owned()))?;
        match (alg, key.verify_key()?) {
            (
                _,
                VerifyKey::Ec {
                    alg: a,
                    point,
                    name,
                },
            ) if alg == name => {
                UnparsedPublicKey::new(a, &point)
                    .verify(&parts.signing_input, &parts.signature)
                    .map_err(|_| JwtError::BadSignature)?;
            }
            ("RS256", VerifyKey::Rsa { n, e }) => {
                RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                        &parts.signing_input,
                        &parts.signature,
                    )
                    .map_err(|_| JwtError::BadSignature)?;
            }
            ("ES256" | "ES384" | "RS256", _) => {
                return Err(JwtError::Key(format!(
                    "key {kid:?} does not match algorithm {alg}"
                )));
            }
            (other, _) => return Err(JwtError::UnsupportedAlgorithm(other.to_owned())),
        }
        let svid = claims(parts.claims)?;
        if !svid.spiffe_id.is_member_of(trust_domain) {
            return Err(JwtError::BadSubject(format!(
                "{} is not in trust domain {trust_domain}",
                svid.spiffe_id
            )));
        }
        if svid.expiry <= now {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = svid.claims.get("nbf").and_then(Value::as_i64)
            && nbf > now + CLOCK_SKEW
        {
            return Err(JwtError::NotYetValid);
        }
        if !svid.audience.iter().any(|a| a == audience) {
            return Err(JwtError::WrongAudience(audience.to_owned()));
        }
        Ok(svid)
    }
}

/// Tolerance for a `nbf` slightly ahead of this clock.
const CLOCK_SKEW: i64 = 30;

struct Parts {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

fn split(token: &str) -> Result<Parts, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!(
            "longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let mut it = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed(
            "not a compact JWS (three dot-separated parts)".into(),
        ));
    };
    let object = |field: &str, text: &str| -> Result<Map<String, Value>, JwtError> {
        serde_json::from_slice(&b64d(field, text)?)
            .map_err(|_| JwtError::Malformed(format!("{field} is not a JSON object")))
    };
    let header = object("header", h)?;
    if let Some(typ) = header.get("typ")
        && typ != "JWT"
        && typ != "JOSE"
    {
        return Err(JwtError::Malformed("typ is neither JWT nor JOSE".into()));
    }
    if header.contains_key("crit") {
        return Err(JwtError::Malformed("critical header parameters".into()));
    }
    Ok(Parts {
        header,
        claims: object("claims", c)?,
        signing_input: token.as_bytes()[..h.len() + 1 + c.len()].to_vec(),
        signature: b64d("signature", s)?,
    })
}

fn claims(claims: Map<String, Value>) -> Result<JwtSvid, JwtError> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Malformed("no sub claim".into()))?;
    let spiffe_id: SpiffeId = sub
        .parse()
        .map_err(|e: crate::Error| JwtError::BadSubject(e.to_string()))?;
    let audience: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| JwtError::Malformed("aud holds a non-string".into()))?,
        _ => return Err(JwtError::Malformed("no aud claim".into())),
    };
    if audience.is_empty() {
        return Err(JwtError::Malformed("empty aud claim".into()));
    }
    let expiry = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| JwtError::Malformed("no exp claim".into()))?;
    let issued_at = claims.get("iat").and_then(Value::as_i64);
    Ok(JwtSvid {
        spiffe_id,
        audience,
        expiry,
        issued_at,
        claims,
    })
}

/// Decodes a token's claims without verifying it: only for a token just
/// received from the CA over an authenticated connection (caching).
pub fn peek(token: &str) -> Result<JwtSvid, JwtError> {
    claims(split(token)?.claims)
}

/// Checks audiences a caller asks a token for: one to [`MAX_AUDIENCES`],
/// each non-empty, at most [`MAX_AUDIENCE_LEN`] bytes, no control characters.
pub fn check_audience(audience: &[String]) -> Result<(), String> {
    if audience.is_empty() {
        return Err("at least one audience is required".into());
    }
    if audience.len() > MAX_AUDIENCES {
        return Err(format!("at most {MAX_AUDIENCES} audiences"));
    }
    for a in audience {
        if a.is_empty() || a.len() > MAX_AUDIENCE_LEN || a.chars().any(char::is_control) {
            return Err(format!(
                "an audience must be 1 to {MAX_AUDIENCE_LEN} bytes without control characters"
            ));
        }
    }
    Ok(())
}

/// The CA's JWT-SVID signing key (ES256). `Debug` shows only the key id.
pub struct JwtSigner {
    pair: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    jwk: Jwk,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// A fresh P-256 key.
    pub fn generate() -> Result<JwtSigner, JwtError> {
        let doc = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|_| JwtError::Key("cannot generate a P-256 key".into()))?;
        JwtSigner::from_pkcs8_der(doc.as_ref())
    }

    /// A P-256 key from PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<JwtSigner, JwtError> {
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| JwtError::Key("not a PKCS#8 ECDSA P-256 key".into()))?;
        let mut jwk = Jwk::ec_p256(pair.public_key().as_ref(), "")?;
        jwk.kid = Some(jwk.thumbprint()?);
        Ok(JwtSigner {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
            jwk,
        })
    }

    /// A P-256 key from a PKCS#8 PEM file's text. The error never quotes it.
    pub fn from_pem(text: &str) -> Result<JwtSigner, JwtError> {
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
            .map_err(|_| JwtError::Key("not a PKCS#8 PEM private key".into()))?;
        JwtSigner::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// The key as PKCS#8 PEM, wiped on drop.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*self.pkcs8));
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Zeroizing::new(pem)
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        self.jwk.kid.as_deref().unwrap_or_default()
    }

    /// The public key as a `jwt-svid` JWK.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Mints a JWT-SVID for `spiffe_id` and `audience`, issued at `now`,
    /// expiring at `expiry` (Unix seconds).
    pub fn sign(
        &self,
        spiffe_id: &SpiffeId,
        audience: &[String],
        now: i64,
        expiry: i64,
    ) -> Result<String, JwtError> {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid(), "typ": "JWT"});
        let aud = match audience {
            [one] => Value::String(one.clone()),
            many => Value::from(many.to_vec()),
        };
        let claims = serde_json::json!({
            "sub": spiffe_id.as_str(),
            "aud": aud,
            "exp": expiry,
            "iat": now,
        });
        let mut out = format!(
            "{}.{}",
            b64e(header.to_string().as_bytes()),
            b64e(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), out.as_bytes())
            .map_err(|_| JwtError::Key("signing failed".into()))?;
        out.push('.');
        out.push_str(&b64e(sig.as_ref()));
        Ok(out)
    }
}

/// An `x509-svid` JWK for a root certificate (DER).
pub fn x509_jwk(root_der: &[u8]) -> Result<Jwk, JwtError> {
    let (_, cert) = x509_parser::parse_x509_certificate(root_der)
        .map_err(|e| JwtError::Key(format!("unreadable root certificate: {e}")))?;
    let spki = cert.public_key();
    let mut jwk = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::EC(point)) => {
            let data = point.data();
            let (crv, size) = match data.len() {
                65 => ("P-256", 32),
                97 => ("P-384", 48),
                _ => return Err(JwtError::Key("unsupported EC root key".into())),
            };
            Jwk {
                kty: "EC".into(),
                crv: Some(crv.into()),
                x: Some(b64e(&data[1..=size])),
                y: Some(b64e(&data[1 + size..])),
                ..Jwk::default()
            }
        }
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Jwk {
            kty: "RSA".into(),
            n: Some(b64e(strip_zero(rsa.modulus))),
            e: Some(b64e(strip_zero(rsa.exponent))),
            ..Jwk::default()
        },
        _ => {
            return Err(JwtError::Key(
                "root key type cannot be written as a JWK (EC or RSA only)".into(),
            ));
        }
    };
    jwk.key_use = Some(USE_X509_SVID.into());
    jwk.x5c = Some(vec![
        base64::engine::general_purpose::STANDARD.encode(root_der),
    ]);
    Ok(jwk)
}

fn strip_zero(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// The DER certificates of a set's `x509-svid` keys.
pub fn x509_roots(set: &JwkSet) -> Result<Vec<Vec<u8>>, JwtError> {
    let mut out = Vec::new();
    for key in &set.keys {
        if key.key_use.as_deref() != Some(USE_X509_SVID) {
            continue;
        }
        let [cert] = key.x5c.as_deref().unwrap_or_default() else {
            return Err(JwtError::Key(
                "an x509-svid key must carry exactly one certificate in x5c".into(),
            ));
        };
        out.push(
            base64::engine::general_purpose::STANDARD
                .decode(cert)
                .map_err(|_| JwtError::Key("x5c is not base64".into()))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
