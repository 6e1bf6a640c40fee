//! In-process cost of issuing one leaf per key type: the CA's signature over
//! a fresh TBS certificate (the subject key is generated once, outside the
//! loop), and, separately, subject key generation.

#![allow(missing_docs, clippy::unwrap_used)] // benchmark harness

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;
use ward_pki::issue::{CaSpec, Issuer, LeafRequest, Profile, new_root};
use ward_pki::{KeyType, Serial};

fn issuer(kt: KeyType) -> Issuer {
    let spec = CaSpec {
        name: "Bench".into(),
        root_validity: Duration::from_secs(10 * 365 * 86_400),
        intermediate_validity: Duration::from_secs(365 * 86_400),
        permitted_dns: Vec::new(),
    };
    let now = OffsetDateTime::now_utc();
    let root_key = kt.generate().unwrap();
    let root = new_root(&spec, &root_key, now).unwrap();
    let root = Issuer::new(root.der, root_key).unwrap();
    let key = kt.generate().unwrap();
    let int = root.sign_intermediate(&spec, &key, now).unwrap();
    Issuer::new(int.der, key).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut sign = c.benchmark_group("sign_leaf");
    for kt in KeyType::ALL {
        let ca = issuer(kt);
        let subject = kt.generate().unwrap().public_key_der();
        sign.bench_function(kt.as_str(), |b| {
            b.iter(|| {
                let req = LeafRequest {
                    profile: Profile::Peer,
                    spiffe_id: Some("spiffe://bench.example/w".parse().unwrap()),
                    dns_names: vec!["w.bench.example".into()],
                    ip_addresses: Vec::new(),
                    common_name: None,
                    ttl: Duration::from_secs(3600),
                    clamp_to_issuer: false,
                    serial: Serial::random(OffsetDateTime::now_utc()).unwrap(),
                    crl_url: None,
                    ocsp_url: None,
                };
                black_box(
                    ca.sign_leaf(&subject, &req, OffsetDateTime::now_utc())
                        .unwrap(),
                )
            })
        });
    }
    sign.finish();
    let mut keygen = c.benchmark_group("keygen");
    keygen.sample_size(10);
    for kt in KeyType::ALL {
        keygen.bench_function(kt.as_str(), |b| {
            b.iter(|| black_box(kt.generate().unwrap()))
        });
    }
    keygen.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
