#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::json;

use super::*;

fn p256() -> (EcdsaKeyPair, Value) {
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = key.public_key().as_ref().to_vec();
    let jwk =
        json!({"kty": "EC", "crv": "P-256", "x": b64e(&point[1..33]), "y": b64e(&point[33..])});
    (key, jwk)
}

fn sign_with(header: &Value, payload: &[u8], sign: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let protected = b64e(header.to_string().as_bytes());
    let payload = b64e(payload);
    let input = format!("{protected}.{payload}");
    let sig = sign(input.as_bytes());
    json!({"protected": protected, "payload": payload, "signature": b64e(&sig)})
        .to_string()
        .into_bytes()
}

#[test]
fn rfc7638_thumbprint_vector() {
    // RFC 7638 §3.1.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    let jwk = Jwk::from_value(&jwk).unwrap();
    assert_eq!(
        jwk.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn es256_and_eddsa_verify_and_tampering_fails() {
    let rng = SystemRandom::new();
    let (key, jwk) = p256();
    let header =
        json!({"alg": "ES256", "nonce": "n", "url": "https://h/acme/x/new-account", "jwk": jwk});
    let body = sign_with(&header, b"{}", |m| {
        key.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    let jws = Jws::parse(&body).unwrap();
    let KeyRef::Jwk(k) = &jws.header.key else {
        panic!("jwk expected")
    };
    jws.verify(k).unwrap();
    // Another key's signature does not verify.
    let (other, _) = p256();
    let forged = sign_with(&header, b"{}", |m| {
        other.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    let forged = Jws::parse(&forged).unwrap();
    assert_eq!(forged.verify(k).unwrap_err().kind, "malformed");

    let ed = Ed25519KeyPair::generate().unwrap();
    let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64e(ed.public_key().as_ref())});
    let header = json!({"alg": "EdDSA", "nonce": "n", "url": "u", "jwk": ed_jwk});
    let body = sign_with(&header, b"", |m| ed.sign(m).as_ref().to_vec());
    let jws = Jws::parse(&body).unwrap();
    assert!(jws.is_post_as_get());
    let KeyRef::Jwk(k) = &jws.header.key else {
        panic!("jwk expected")
    };
    jws.verify(k).unwrap();
    // The algorithm must fit the key.
    assert_eq!(
        k.verify(Alg::Es256, b"x", b"y").unwrap_err().kind,
        "badSignatureAlgorithm"
    );
}

#[test]
fn header_rules_are_enforced() {
    let (_, jwk) = p256();
    let parse = |header: Value| {
        let protected = b64e(header.to_string().as_bytes());
        let body = json!({"protected": protected, "payload": "", "signature": "AA"});
        Jws::parse(body.to_string().as_bytes())
    };
    let both = parse(json!({"alg": "ES256", "nonce": "n", "url": "u", "jwk": jwk, "kid": "k"}));
    assert!(both.unwrap_err().detail.contains("both"));
    let neither = parse(json!({"alg": "ES256", "nonce": "n", "url": "u"}));
    assert!(neither.is_err());
    let none = parse(json!({"alg": "none", "nonce": "n", "url": "u", "kid": "k"}));
    assert_eq!(none.unwrap_err().kind, "badSignatureAlgorithm");
    let hs = parse(json!({"alg": "HS256", "nonce": "n", "url": "u", "kid": "k"}));
    assert_eq!(hs.unwrap_err().kind, "badSignatureAlgorithm");
    let no_url = parse(json!({"alg": "ES256", "nonce": "n", "kid": "k"}));
    assert!(no_url.is_err());
    let private = parse(
        json!({"alg": "ES256", "url": "u", "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}}),
    );
    assert!(private.unwrap_err().detail.contains("private"));
    assert!(Jws::parse(b"{\"protected\":\"!!\",\"payload\":\"\",\"signature\":\"\"}").is_err());
    assert!(Jws::parse(b"not json").is_err());
}

#[test]
fn eab_binds_the_account_key_with_hs256() {
    let (_, jwk_value) = p256();
    let jwk = Jwk::from_value(&jwk_value).unwrap();
    let hmac_key = b"0123456789abcdef0123456789abcdef";
    let url = "https://h/acme/x/new-account";
    let make = |key: &[u8], url: &str, payload: &Value| {
        let protected = b64e(
            json!({"alg": "HS256", "kid": "kid1", "url": url})
                .to_string()
                .as_bytes(),
        );
        let payload = b64e(payload.to_string().as_bytes());
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
            format!("{protected}.{payload}").as_bytes(),
        );
        json!({"protected": protected, "payload": payload, "signature": b64e(tag.as_ref())})
    };
    let good = make(hmac_key, url, &jwk_value);
    assert_eq!(eab_kid(&good).unwrap(), "kid1");
    verify_eab(&good, hmac_key, url, &jwk).unwrap();
    assert!(
        verify_eab(
            &make(b"wrong key wrong key wrong key!!!", url, &jwk_value),
            hmac_key,
            url,
            &jwk
        )
        .is_err()
    );
    assert!(
        verify_eab(
            &make(hmac_key, "https://h/other", &jwk_value),
            hmac_key,
            url,
            &jwk
        )
        .is_err()
    );
    let (_, other) = p256();
    assert!(verify_eab(&make(hmac_key, url, &other), hmac_key, url, &jwk).is_err());
}
