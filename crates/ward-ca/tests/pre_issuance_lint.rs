//! The CA lints every certificate before it leaves: a certificate with an
//! error-level finding is refused (internal error, nothing recorded, no
//! token use spent), and everything the authority issues for random
//! identities, key types and profiles passes every lint rule.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_ca::authority::{Authority, AuthorityError, Policy, TokenSpec};
use ward_ca::{CaDir, InitOptions};
use ward_pki::issue::Profile;
use ward_pki::lint::{Context, LintPolicy, Linter, Role};
use ward_pki::{KeyType, pem};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Ca {
    _dir: tempfile::TempDir,
    authority: Authority,
    intermediate: CertificateDer<'static>,
}

async fn ca(max_ttl: Duration, key_type: KeyType) -> Ca {
    let tmp = tempfile::tempdir().unwrap();
    let dir = CaDir::new(tmp.path().join("ca"));
    dir.init(
        &InitOptions {
            trust_domain: "example.org".parse().unwrap(),
            name: "Lint".into(),
            key_type,
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
    let issuer = dir.intermediate_issuer().unwrap();
    let intermediate = issuer.cert_der().clone();
    let authority = Authority::new(
        Policy {
            trust_domain: "example.org".parse().unwrap(),
            default_ttl: Duration::from_secs(3600).min(max_ttl),
            max_ttl,
        },
        issuer,
        &dir.roots().unwrap(),
        Arc::<dyn ward_store::Store>::clone(&store),
    );
    Ca {
        _dir: tmp,
        authority,
        intermediate,
    }
}

fn spec(id: &str, profile: Profile, ttl: Duration, dns: Vec<String>) -> TokenSpec {
    TokenSpec {
        spiffe_id: id.parse().unwrap(),
        dns_names: dns,
        profile,
        cert_ttl: Some(ttl),
        expires_in: Duration::from_secs(4 * 3600),
        max_uses: 1,
        allowed_cidrs: Vec::new(),
        common_name: None,
        allow_reserved: false,
    }
}

#[tokio::test]
async fn a_certificate_that_fails_lint_is_refused_and_nothing_is_recorded() {
    let ca = ca(Duration::from_secs(86_400), KeyType::EcdsaP256).await;
    // A CA clock an hour behind its intermediate's notBefore: the builder
    // clamps notBefore to the issuer's, so the leaf would not be valid yet.
    let skewed = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let created = ca
        .authority
        .create_token(
            &spec(
                "spiffe://example.org/web",
                Profile::Peer,
                Duration::from_secs(600),
                vec![],
            ),
            skewed,
        )
        .await
        .unwrap();
    let token = ca
        .authority
        .authenticate(created.secret.expose(), LOCAL, skewed)
        .await
        .unwrap();
    let err = ca
        .authority
        .issue_keypair_for_token(&token, KeyType::EcdsaP256, skewed)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthorityError::Internal(_)), "{err:?}");
    assert_eq!(err.reason(), "internal");
    let AuthorityError::Internal(detail) = &err else {
        unreachable!()
    };
    assert!(detail.contains("wlife.not_yet_valid"), "{detail}");
    // The client sees no detail; nothing was recorded; the use is not spent.
    assert_eq!(err.to_string(), "internal error");
    let store = ca.authority.store();
    assert_eq!(store.count_certificates().await.unwrap(), 0);
    ca.authority
        .authenticate(created.secret.expose(), LOCAL, skewed)
        .await
        .unwrap();
}

/// splitmix64, seeded so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn label(&mut self) -> String {
        let len = 1 + self.below(12);
        let s: String = (0..len)
            .map(|_| b"abcdefghijklmnopqrstuvwxyz0123456789-"[self.below(37)] as char)
            .collect();
        let s = s.trim_matches('-');
        if s.is_empty() {
            "x".into()
        } else {
            s.to_owned()
        }
    }
}

#[tokio::test]
async fn everything_the_authority_issues_passes_every_lint() {
    let seed = 0x0008_ca11;
    let mut rng = Rng(seed);
    let max_ttl = Duration::from_secs(86_400);
    let policy = LintPolicy {
        max_workload_lifetime: max_ttl,
        ..LintPolicy::default()
    };
    let linter = Linter::new(policy, None);
    for ca_key in [KeyType::EcdsaP256, KeyType::Ed25519, KeyType::Rsa2048] {
        let ca = ca(max_ttl, ca_key).await;
        for case in 0..12 {
            let now = OffsetDateTime::now_utc();
            let path: String = (0..1 + rng.below(3))
                .map(|_| format!("/{}", rng.label()))
                .collect();
            let id = format!("spiffe://example.org{path}");
            let profile = [Profile::Server, Profile::Client, Profile::Peer][rng.below(3)];
            let dns = (0..rng.below(3))
                .map(|_| format!("{}.example.org", rng.label()))
                .collect();
            let ttl = Duration::from_secs(10 + rng.next() % max_ttl.as_secs());
            // RSA-4096 is slow to generate; it appears, but rarely.
            let key_type = KeyType::ALL[rng.below(KeyType::ALL.len() * 2) % 6];
            let created = ca
                .authority
                .create_token(&spec(&id, profile, ttl, dns), now)
                .await
                .unwrap();
            let token = ca
                .authority
                .authenticate(created.secret.expose(), LOCAL, now)
                .await
                .unwrap();
            let (issued, _key) = ca
                .authority
                .issue_keypair_for_token(&token, key_type, now)
                .await
                .unwrap_or_else(|e| panic!("seed {seed:#x} case {case}: {e:?}"));
            let mut leaves = vec![issued.leaf_der.clone()];
            if case % 3 == 0 {
                let renewed = ca.authority.renew(&leaves, None, now).await.unwrap();
                leaves.push(renewed.leaf_der);
            }
            for leaf in &leaves {
                let ctx = Context {
                    role: Role::Leaf,
                    issuer: Some(&ca.intermediate),
                    now,
                };
                let findings = linter.lint(leaf, &ctx);
                assert!(
                    findings.is_empty(),
                    "seed {seed:#x} case {case} ({ca_key} CA, {key_type} {profile} {id}): {findings:#?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_cas_own_server_certificate_passes_with_a_short_online_maximum() {
    let ca = ca(Duration::from_secs(3600), KeyType::EcdsaP256).await;
    let now = OffsetDateTime::now_utc();
    let (issued, _) = ca
        .authority
        .issue_server_identity(
            &["localhost".into()],
            &[LOCAL],
            Duration::from_secs(86_400),
            now,
        )
        .await
        .unwrap();
    let chain = pem::parse_certs(issued.chain_pem.as_bytes()).unwrap();
    assert_eq!(chain.len(), 2);
}
