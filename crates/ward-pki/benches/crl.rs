//! Revocation at scale: signing a CRL listing 100,000 revoked certificates
//! (its DER size is printed once), and building + signing one OCSP answer,
//! the per-request cost of the CA's responder (its store lookup aside).

#![allow(missing_docs, clippy::unwrap_used)] // benchmark harness

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;
use ward_pki::crl::{CrlEntry, sign_crl};
use ward_pki::issue::{CaSpec, Issuer, new_root};
use ward_pki::ocsp::{
    IssuerId, Query, Signer, Status, build_request, issue_responder, parse_request,
};
use ward_pki::{KeyType, Serial};

const ENTRIES: usize = 100_000;

fn intermediate() -> Issuer {
    let spec = CaSpec {
        name: "Bench".into(),
        root_validity: Duration::from_secs(10 * 365 * 86_400),
        intermediate_validity: Duration::from_secs(365 * 86_400),
        permitted_dns: Vec::new(),
    };
    let now = OffsetDateTime::now_utc();
    let root_key = KeyType::EcdsaP256.generate().unwrap();
    let root = new_root(&spec, &root_key, now).unwrap();
    let root = Issuer::new(root.der, root_key).unwrap();
    let key = KeyType::EcdsaP256.generate().unwrap();
    let int = root.sign_intermediate(&spec, &key, now).unwrap();
    Issuer::new(int.der, key).unwrap()
}

fn crl(c: &mut Criterion) {
    let issuer = intermediate();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let entries: Vec<CrlEntry> = (0..ENTRIES)
        .map(|i| CrlEntry {
            serial: Serial::random(OffsetDateTime::now_utc()).unwrap(),
            revoked_at: now - Duration::from_secs(i as u64),
            reason: (i % 3 == 0).then_some(1),
        })
        .collect();
    let next = now + Duration::from_secs(3600);
    let der = sign_crl(&issuer, &entries, 1, now, next).unwrap();
    eprintln!(
        "CRL with {ENTRIES} entries (127-bit serials, a third with a reason code): {} bytes",
        der.len()
    );
    let mut group = c.benchmark_group("crl");
    group.sample_size(10);
    group.bench_function("sign_100k_entries", |b| {
        b.iter(|| sign_crl(&issuer, black_box(&entries), 2, now, next).unwrap())
    });
    group.finish();
}

fn ocsp(c: &mut Criterion) {
    let issuer = intermediate();
    let now = OffsetDateTime::now_utc();
    let key = KeyType::EcdsaP256.generate().unwrap();
    let cert = issue_responder(
        &issuer,
        &key,
        "Bench",
        "OCSP",
        Duration::from_secs(86_400),
        now,
    )
    .unwrap();
    let signer = Signer::new(
        &cert.der,
        key,
        &[cert.der.clone(), issuer.cert_der().clone()],
    )
    .unwrap();
    let id = IssuerId::from_cert_der(issuer.cert_der()).unwrap();
    let query = Query::new(
        &id,
        &Serial::random(OffsetDateTime::now_utc()).unwrap(),
        false,
    )
    .unwrap();
    let request = build_request(&[query], Some(&[7u8; 16])).unwrap();
    c.bench_function("ocsp/parse_build_sign_one", |b| {
        b.iter(|| {
            let req = parse_request(black_box(&request)).unwrap();
            let about = req.queries[0].is_about(&id);
            let answers = [(
                req.queries[0].clone(),
                if about { Status::Good } else { Status::Unknown },
            )];
            signer
                .respond(&req, &answers, now, now + Duration::from_secs(300))
                .unwrap()
        })
    });
}

criterion_group!(benches, crl, ocsp);
criterion_main!(benches);
