use super::*;

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

fn id() -> SpiffeId {
    "spiffe://example.org/api".parse().unwrap()
}

fn set(signer: &JwtSigner) -> JwkSet {
    JwkSet {
        keys: vec![signer.jwk().clone()],
        spiffe_sequence: Some(1),
        spiffe_refresh_hint: Some(300),
    }
}

#[test]
fn minted_tokens_verify_and_carry_the_claims() {
    let signer = JwtSigner::generate().unwrap();
    let token = signer.sign(&id(), &["svc".into()], 1000, 1300).unwrap();
    let svid = set(&signer).verify(&token, &td(), "svc", 1100).unwrap();
    assert_eq!(svid.spiffe_id, id());
    assert_eq!(svid.audience, vec!["svc".to_owned()]);
    assert_eq!(svid.expiry, 1300);
    assert_eq!(svid.issued_at, Some(1000));
    assert_eq!(peek(&token).unwrap(), svid);
}

#[test]
fn expired_wrong_audience_wrong_domain_and_wrong_key_are_refused() {
    let signer = JwtSigner::generate().unwrap();
    let other = JwtSigner::generate().unwrap();
    let token = signer
        .sign(&id(), &["a".into(), "b".into()], 1000, 1300)
        .unwrap();
    let good = set(&signer);
    assert_eq!(
        good.verify(&token, &td(), "a", 1300),
        Err(JwtError::Expired)
    );
    assert_eq!(
        good.verify(&token, &td(), "c", 1100),
        Err(JwtError::WrongAudience("c".into()))
    );
    assert!(good.verify(&token, &td(), "b", 1100).is_ok());
    let other_td: TrustDomain = "partner.example".parse().unwrap();
    assert!(matches!(
        good.verify(&token, &other_td, "a", 1100),
        Err(JwtError::BadSubject(_))
    ));
    assert!(matches!(
        set(&other).verify(&token, &td(), "a", 1100),
        Err(JwtError::UnknownKey(_))
    ));
    // Same kid, other key: the signature fails.
    let mut forged = set(&other);
    forged.keys[0].kid = Some(signer.kid().to_owned());
    assert_eq!(
        forged.verify(&token, &td(), "a", 1100),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn tampered_none_and_hostile_tokens_are_refused() {
    let signer = JwtSigner::generate().unwrap();
    let good = set(&signer);
    let token = signer.sign(&id(), &["a".into()], 1000, 1300).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    // Claims swapped for another subject, signature kept.
    let claims = b64e(br#"{"sub":"spiffe://example.org/admin","aud":"a","exp":1300}"#);
    let swapped = format!("{}.{}.{}", parts[0], claims, parts[2]);
    assert_eq!(
        good.verify(&swapped, &td(), "a", 1100),
        Err(JwtError::BadSignature)
    );
    // alg none with the right kid.
    let none = b64e(format!(r#"{{"alg":"none","kid":"{}"}}"#, signer.kid()).as_bytes());
    let unsigned = format!("{none}.{}.", parts[1]);
    assert_eq!(
        good.verify(&unsigned, &td(), "a", 1100),
        Err(JwtError::UnsupportedAlgorithm("none".into()))
    );
    let hs = b64e(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, signer.kid()).as_bytes());
    assert!(matches!(
        good.verify(&format!("{hs}.{}.{}", parts[1], parts[2]), &td(), "a", 1100),
        Err(JwtError::UnsupportedAlgorithm(_))
    ));
    for bad in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        &"x".repeat(MAX_TOKEN_LEN + 1),
    ] {
        assert!(
            matches!(
                good.verify(bad, &td(), "a", 1100),
                Err(JwtError::Malformed(_))
            ),
            "{bad:.20}"
        );
    }
    // No aud.
    let no_aud = b64e(br#"{"sub":"spiffe://example.org/api","exp":1300}"#);
    assert!(matches!(
        peek(&format!("{}.{no_aud}.{}", parts[0], parts[2])),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn keys_round_trip_through_pem_and_json() {
    let signer = JwtSigner::generate().unwrap();
    let again = JwtSigner::from_pem(&signer.to_pem()).unwrap();
    assert_eq!(again.kid(), signer.kid());
    assert!(!format!("{signer:?}").contains("BEGIN"));
    let parsed = JwkSet::parse(&set(&signer).to_json()).unwrap();
    assert_eq!(parsed, set(&signer));
    assert!(JwkSet::parse(b"{").is_err());
    assert!(JwkSet::parse(&vec![b' '; MAX_JWKS_LEN + 1]).is_err());
    assert!(JwtSigner::from_pem("garbage").is_err());
}

#[test]
fn audiences_are_checked() {
    assert!(check_audience(&[]).is_err());
    assert!(check_audience(&["".into()]).is_err());
    assert!(check_audience(&["a\nb".into()]).is_err());
    assert!(check_audience(&vec!["a".into(); MAX_AUDIENCES + 1]).is_err());
    assert!(check_audience(&["svc".into()]).is_ok());
}
