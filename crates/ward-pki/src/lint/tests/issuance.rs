//! The property the CA relies on: whatever Ward's issuance builds (random
//! identities, names, lifetimes, key types, profiles and CA key types; a
//! seeded generator so a failure replays) passes every lint rule, but for
//! the two advisory post-quantum rules that describe a mixed chain Ward is
//! asked to build (an ML-DSA leaf under a classical or weaker ML-DSA CA).

use std::time::Duration;

use time::OffsetDateTime;

use crate::issue::{CaSpec, Issuer, LeafRequest, Profile, new_root};
use crate::lint::{LintPolicy, Linter, PreIssuance, pre_issuance};
use crate::{KeyType, Serial};

/// splitmix64: a seeded generator, so a failure replays exactly.
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
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-";
        let len = 1 + self.below(20);
        let mut s: String = (0..len)
            .map(|_| alphabet[self.below(alphabet.len())] as char)
            .collect();
        s = s.trim_matches('-').to_owned();
        if s.is_empty() { "x".into() } else { s }
    }
}

#[test]
fn everything_wards_issuance_builds_passes_every_lint() {
    let seed = 0x5eed_0008;
    let mut rng = Rng(seed);
    let now = OffsetDateTime::now_utc();
    let spec = CaSpec {
        name: "Prop".into(),
        root_validity: Duration::from_secs(10 * 365 * 86_400),
        intermediate_validity: Duration::from_secs(365 * 86_400),
        permitted_dns: Vec::new(),
    };
    let keys: Vec<(KeyType, crate::PrivateKey)> = KeyType::ALL
        .into_iter()
        .map(|k| (k, k.generate().unwrap()))
        .collect();
    let linter = Linter::new(LintPolicy::default(), None);
    // The advisory findings a mixed chain gets (docs/post-quantum.md).
    let expected = |ca: KeyType, leaf: KeyType| -> Vec<&'static str> {
        match (ca.is_post_quantum(), leaf.is_post_quantum()) {
            (false, true) => vec!["wkey.pq_signed_classically"],
            (true, true) if leaf.as_str() > ca.as_str() => vec!["wkey.pq_issuer_weaker"],
            _ => Vec::new(),
        }
    };
    for ca_type in [
        KeyType::EcdsaP256,
        KeyType::Rsa2048,
        KeyType::Ed25519,
        KeyType::MlDsa65,
    ] {
        let root_key = ca_type.generate().unwrap();
        let root = new_root(&spec, &root_key, now).unwrap();
        let root_issuer = Issuer::new(root.der.clone(), root_key).unwrap();
        let int_key = ca_type.generate().unwrap();
        let int = root_issuer.sign_intermediate(&spec, &int_key, now).unwrap();
        let issuer = Issuer::new(int.der.clone(), int_key).unwrap();
        let pre = PreIssuance::new(&issuer).unwrap();
        for case in 0..40 {
            let (key_type, key) = &keys[rng.below(keys.len())];
            let profile = [Profile::Server, Profile::Client, Profile::Peer][rng.below(3)];
            let td = format!("{}.{}", rng.label(), rng.label());
            let path: Vec<String> = (0..rng.below(4)).map(|_| rng.label()).collect();
            let with_id = profile != Profile::Server || rng.below(2) == 0;
            let spiffe_id = with_id.then(|| {
                let path: String = path.iter().map(|p| format!("/{p}")).collect();
                format!("spiffe://{td}{path}").parse().unwrap()
            });
            let dns_names = (0..rng.below(3) + usize::from(!with_id))
                .map(|_| format!("{}.{td}", rng.label()))
                .collect();
            let ip_addresses = (0..rng.below(2))
                .map(|_| std::net::IpAddr::from(std::net::Ipv4Addr::from(rng.next() as u32)))
                .collect();
            let max = if with_id { 86_400 } else { 398 * 86_400 };
            let request = LeafRequest {
                profile,
                spiffe_id,
                dns_names,
                ip_addresses,
                common_name: (rng.below(3) == 0).then(|| rng.label()),
                ttl: Duration::from_secs(60 + rng.next() % max),
                clamp_to_issuer: true,
                serial: Serial::random(OffsetDateTime::now_utc()).unwrap(),
                crl_url: None,
                ocsp_url: None,
            };
            let leaf = issuer
                .sign_leaf(&key.public_key_der(), &request, now)
                .unwrap();
            let chain = [leaf.der.clone(), int.der.clone(), root.der.clone()];
            pre.check(&leaf.der, &LintPolicy::default(), now).unwrap();
            for report in linter.lint_chain(&chain, now) {
                let ids: Vec<&str> = report.findings.iter().map(|f| f.id.as_str()).collect();
                let want = if report.index == 0 {
                    expected(ca_type, *key_type)
                } else {
                    Vec::new()
                };
                assert!(
                    ids == want,
                    "seed {seed:#x} case {case} ({ca_type} CA, {key_type} {profile} leaf, {request:?}): {report:#?}"
                );
            }
        }
    }
}

/// The CA's bound pre-issuance lint refuses exactly what `pre_issuance`
/// refuses, with the same message, except that it does not verify again a
/// signature its own issuer key has just made.
#[test]
fn bound_pre_issuance_matches_pre_issuance_but_trusts_its_own_signature() {
    let now = OffsetDateTime::now_utc();
    let spec = CaSpec {
        name: "Bound".into(),
        root_validity: Duration::from_secs(10 * 365 * 86_400),
        intermediate_validity: Duration::from_secs(365 * 86_400),
        permitted_dns: Vec::new(),
    };
    let root_key = KeyType::EcdsaP256.generate().unwrap();
    let root = new_root(&spec, &root_key, now).unwrap();
    let issuer = Issuer::new(root.der.clone(), root_key).unwrap();
    let pre = PreIssuance::new(&issuer).unwrap();
    let leaf_key = KeyType::EcdsaP256.generate().unwrap();
    let request = LeafRequest {
        profile: Profile::Peer,
        spiffe_id: Some("spiffe://example.org/a".parse().unwrap()),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        common_name: None,
        ttl: Duration::from_secs(2 * 3600),
        clamp_to_issuer: true,
        serial: Serial::random(OffsetDateTime::now_utc()).unwrap(),
        crl_url: None,
        ocsp_url: None,
    };
    let leaf = issuer
        .sign_leaf(&leaf_key.public_key_der(), &request, now)
        .unwrap();
    let ok = LintPolicy::default();
    assert_eq!(pre.check(&leaf.der, &ok, now), Ok(()));
    assert_eq!(pre_issuance(&leaf.der, issuer.cert_der(), &ok, now), Ok(()));

    // A policy the certificate breaks: both refuse, with the same words.
    let strict = LintPolicy {
        max_workload_lifetime: Duration::from_secs(3600),
        ..LintPolicy::default()
    };
    let bound = pre.check(&leaf.der, &strict, now).unwrap_err();
    assert_eq!(
        Err(bound.clone()),
        pre_issuance(&leaf.der, issuer.cert_der(), &strict, now)
    );
    assert!(bound.contains("pre-issuance lint refused"), "{bound}");

    // The one difference: a broken signature is caught only by the full check.
    let mut tampered = leaf.der.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(pre_issuance(&tampered, issuer.cert_der(), &ok, now).is_err());
    assert_eq!(pre.check(&tampered, &ok, now), Ok(()));
}
