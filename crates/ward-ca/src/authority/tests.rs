//! Authority tests against a real SQLite store in a temp directory.

use std::process::Command;

use time::OffsetDateTime;
use ward_pki::verify::{Purpose, VerifyOptions, verify};

use std::net::IpAddr;

use ward_pki::issue::Profile;
use ward_pki::{KeyType, Serial};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::csr::CheckedCsr;
use crate::csr::parse_csr;
use crate::dir::{CaDir, InitOptions};
use crate::token::TokenSecret;

struct Fixture {
    _dir: tempfile::TempDir,
    authority: Authority,
    roots: Vec<CertificateDer<'static>>,
    dir: std::path::PathBuf,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::new(tmp.path().join("ca"));
    ca.init(
        &InitOptions {
            trust_domain: "example.org".parse().unwrap(),
            name: "Test".into(),
            key_type: KeyType::EcdsaP256,
            root_validity: Duration::from_secs(10 * 365 * 86_400),
            intermediate_validity: Duration::from_secs(365 * 86_400),
            offline_root: None,
            permitted_dns: Vec::new(),
            database: None,
            pkcs11: None,
        },
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let store = ward_store::connect(tmp.path().join("ward.db").to_str().unwrap())
        .await
        .unwrap();
    let roots = ca.roots().unwrap();
    let authority = Authority::new(
        Policy {
            trust_domain: "example.org".parse().unwrap(),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(86_400),
        },
        ca.intermediate_issuer().unwrap(),
        &roots,
        store,
    );
    Fixture {
        dir: tmp.path().to_owned(),
        _dir: tmp,
        authority,
        roots,
    }
}

fn spec(id: &str) -> TokenSpec {
    TokenSpec {
        spiffe_id: id.parse().unwrap(),
        dns_names: vec!["web.example.org".into()],
        profile: Profile::Peer,
        cert_ttl: Some(Duration::from_secs(600)),
        expires_in: Duration::from_secs(3600),
        max_uses: 1,
        allowed_cidrs: Vec::new(),
        common_name: None,
        allow_reserved: false,
    }
}

fn openssl_csr(dir: &std::path::Path, subj: &str, san: Option<&str>) -> CheckedCsr {
    let csr = dir.join(format!(
        "{}.csr",
        Serial::random(OffsetDateTime::now_utc()).unwrap()
    ));
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ])
    .arg("-keyout")
    .arg(dir.join("k.pem"))
    .arg("-out")
    .arg(&csr)
    .args([
        "-subj",
        subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    if let Some(san) = san {
        cmd.args(["-addext", &format!("subjectAltName={san}")]);
    }
    assert!(cmd.output().unwrap().status.success());
    parse_csr(&std::fs::read_to_string(csr).unwrap()).unwrap()
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[tokio::test]
async fn token_to_certificate_and_single_use() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    let created = f
        .authority
        .create_token(&spec("spiffe://example.org/web"), now)
        .await
        .unwrap();
    let token = f
        .authority
        .authenticate(created.secret.expose(), LOCAL, now)
        .await
        .unwrap();
    // A CSR asking for CA:true and the bound names gets a CA:false leaf.
    let csr = openssl_csr(
        &f.dir,
        "/",
        Some("URI:spiffe://example.org/web,DNS:web.example.org"),
    );
    let issued = f.authority.sign_for_token(&token, &csr, now).await.unwrap();
    assert_eq!(issued.spiffe_id.as_str(), "spiffe://example.org/web");
    assert!((issued.not_after - now).whole_seconds() <= 600);
    let chain = pem::parse_certs(issued.chain_pem.as_bytes()).unwrap();
    let ok = verify(
        &chain,
        &f.roots,
        &VerifyOptions {
            purpose: Some(Purpose::Client),
            name: Some("web.example.org"),
            spiffe_id: None,
            now: rustls_pki_types::UnixTime::now(),
        },
    )
    .unwrap();
    assert_eq!(ok.purposes, vec![Purpose::Client]);
    let info = ward_pki::inspect::CertInfo::from_der(&chain[0], now).unwrap();
    assert!(!info.is_ca);
    // Recorded before returned.
    let rec = f
        .authority
        .store()
        .certificate(&issued.serial)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.token_id.as_deref(), Some(token.id.as_str()));
    // The one use is spent.
    let err = f
        .authority
        .authenticate(created.secret.expose(), LOCAL, now)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "token_used");
    let err = f
        .authority
        .sign_for_token(&token, &csr, now)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "token_used");
}

#[tokio::test]
async fn names_outside_the_binding_are_forbidden_and_consume_nothing() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    let created = f
        .authority
        .create_token(&spec("spiffe://example.org/web"), now)
        .await
        .unwrap();
    let token = f
        .authority
        .authenticate(created.secret.expose(), LOCAL, now)
        .await
        .unwrap();
    for (subj, san) in [
        ("/", Some("URI:spiffe://example.org/admin")),
        ("/", Some("DNS:evil.example.org")),
        ("/", Some("IP:10.0.0.1")),
        ("/CN=someone-else", None),
        ("/", Some("email:a@example.org")),
    ] {
        let csr = openssl_csr(&f.dir, subj, san);
        let err = f
            .authority
            .sign_for_token(&token, &csr, now)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuthorityError::Forbidden(_)),
            "{subj} {san:?}: {err}"
        );
    }
    assert_eq!(f.authority.store().count_certificates().await.unwrap(), 0);
    // The use was not consumed: a proper request still works.
    let csr = openssl_csr(&f.dir, "/CN=web.example.org", None);
    f.authority.sign_for_token(&token, &csr, now).await.unwrap();
}

#[tokio::test]
async fn expired_revoked_unknown_and_foreign_source_tokens() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    let err = f
        .authority
        .authenticate("wdt_nope", LOCAL, now)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "malformed_token");
    let other = TokenSecret::generate().unwrap();
    let err = f
        .authority
        .authenticate(other.expose(), LOCAL, now)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "unknown_token");

    let created = f
        .authority
        .create_token(&spec("spiffe://example.org/a"), now)
        .await
        .unwrap();
    let later = now + time::Duration::hours(2);
    let err = f
        .authority
        .authenticate(created.secret.expose(), LOCAL, later)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "token_expired");
    f.authority
        .revoke_token(&created.token.id, false, now)
        .await
        .unwrap();
    let err = f
        .authority
        .authenticate(created.secret.expose(), LOCAL, now)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "token_revoked");

    let mut s = spec("spiffe://example.org/b");
    s.allowed_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
    let created = f.authority.create_token(&s, now).await.unwrap();
    let err = f
        .authority
        .authenticate(created.secret.expose(), LOCAL, now)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthorityError::Forbidden(_)), "{err}");
    f.authority
        .authenticate(created.secret.expose(), "10.1.2.3".parse().unwrap(), now)
        .await
        .unwrap();
}

#[tokio::test]
async fn token_creation_is_validated() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    let mut s = spec("spiffe://other.org/x");
    assert!(f.authority.create_token(&s, now).await.is_err());
    s = spec("spiffe://example.org/x");
    s.cert_ttl = Some(Duration::from_secs(2 * 86_400));
    let err = f.authority.create_token(&s, now).await.unwrap_err();
    assert!(err.to_string().contains("CA's maximum"), "{err}");
    s.cert_ttl = Some(Duration::from_secs(5));
    assert!(f.authority.create_token(&s, now).await.is_err());
    s.cert_ttl = None;
    s.dns_names = vec!["bad name".into()];
    assert!(f.authority.create_token(&s, now).await.is_err());
    assert!(f.authority.list_tokens().await.unwrap().is_empty());
}

#[tokio::test]
async fn server_side_keys_and_renewal() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    let mut s = spec("spiffe://example.org/fn");
    s.max_uses = 0;
    let created = f.authority.create_token(&s, now).await.unwrap();
    let token = f
        .authority
        .authenticate(created.secret.expose(), LOCAL, now)
        .await
        .unwrap();
    let (issued, key) = f
        .authority
        .issue_keypair_for_token(&token, KeyType::Ed25519, now)
        .await
        .unwrap();
    let leaf = pem::parse_certs(issued.certificate_pem.as_bytes()).unwrap();
    let cert_spki = X509Certificate::from_der(&leaf[0])
        .unwrap()
        .1
        .public_key()
        .raw
        .to_vec();
    assert_eq!(cert_spki, key.public_key_der());

    // Renewal with the same key, then with a new CSR.
    let renewed = f.authority.renew(&leaf, None, now).await.unwrap();
    assert_eq!(renewed.spiffe_id, issued.spiffe_id);
    assert_ne!(renewed.serial, issued.serial);
    let rec = f
        .authority
        .store()
        .certificate(&renewed.serial)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.renewed_from.as_ref(), Some(&issued.serial));
    // The renewal gets the lifetime the token granted, even though the
    // first certificate's notBefore was clamped to the young intermediate.
    let granted = f.authority.list_tokens().await.unwrap()[0].cert_ttl_secs;
    assert!(
        (rec.not_after - now).whole_seconds() >= granted - 1,
        "renewed for {}s, granted {granted}s",
        (rec.not_after - now).whole_seconds()
    );
    let csr = openssl_csr(&f.dir, "/", Some("URI:spiffe://example.org/fn"));
    f.authority.renew(&leaf, Some(&csr), now).await.unwrap();
    let bad = openssl_csr(&f.dir, "/", Some("URI:spiffe://example.org/other"));
    assert!(matches!(
        f.authority.renew(&leaf, Some(&bad), now).await,
        Err(AuthorityError::Forbidden(_))
    ));

    // The kill switch: revoking the token with its certificates stops renewal.
    let n = f
        .authority
        .revoke_token(&token.id, true, now)
        .await
        .unwrap();
    assert!(n >= 2, "{n}");
    let err = f.authority.renew(&leaf, None, now).await.unwrap_err();
    assert_eq!(err.reason(), "certificate_revoked");
    // A certificate this CA never recorded cannot renew.
    let (foreign, _) = f
        .authority
        .issue_server_identity(&["localhost".into()], &[], Duration::from_secs(60), now)
        .await
        .unwrap();
    let mut der = foreign.leaf_der.to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let err = f
        .authority
        .renew(&[CertificateDer::from(der)], None, now)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "unknown_certificate");
}

#[tokio::test]
async fn reserved_ids_need_the_flag() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    for id in [
        "spiffe://example.org/ward/admin",
        "spiffe://example.org/ward/ca",
        "spiffe://example.org/ward",
    ] {
        let err = f.authority.create_token(&spec(id), now).await.unwrap_err();
        assert!(matches!(err, AuthorityError::Forbidden(_)), "{id}: {err}");
        assert!(err.to_string().contains("reserved"), "{err}");
        let allowed = TokenSpec {
            allow_reserved: true,
            ..spec(id)
        };
        f.authority.create_token(&allowed, now).await.unwrap();
    }
    for id in [
        "spiffe://example.org/wardrobe",
        "spiffe://example.org/x/ward/admin",
    ] {
        f.authority.create_token(&spec(id), now).await.unwrap();
    }
}

#[tokio::test]
async fn a_bound_cn_is_copied_and_other_cns_are_forbidden() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    let bound = TokenSpec {
        common_name: Some("app_user".into()),
        max_uses: 0,
        ..spec("spiffe://example.org/db")
    };
    let created = f.authority.create_token(&bound, now).await.unwrap();
    assert_eq!(created.token.common_name.as_deref(), Some("app_user"));
    let token = f
        .authority
        .authenticate(created.secret.expose(), LOCAL, now)
        .await
        .unwrap();
    let csr = openssl_csr(&f.dir, "/CN=app_user", None);
    let issued = f.authority.sign_for_token(&token, &csr, now).await.unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.leaf_der).unwrap();
    let cns: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cns, ["app_user"]);
    // With a CN bound, a bound DNS name is no longer an acceptable CN.
    for subj in ["/CN=web.example.org", "/CN=root"] {
        let csr = openssl_csr(&f.dir, subj, None);
        let err = f
            .authority
            .sign_for_token(&token, &csr, now)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthorityError::Forbidden(_)), "{subj}: {err}");
    }
    for bad in ["", " padded", "a\u{7}b", &"x".repeat(65)] {
        let spec = TokenSpec {
            common_name: Some(bad.to_owned()),
            ..spec("spiffe://example.org/db")
        };
        let err = f.authority.create_token(&spec, now).await.unwrap_err();
        assert!(
            matches!(err, AuthorityError::BadRequest(_)),
            "{bad:?}: {err}"
        );
    }
}
