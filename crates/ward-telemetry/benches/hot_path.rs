//! Per-operation cost of the metric hot paths: a cached counter increment, a
//! histogram observation, a labelled lookup plus increment, and rendering a
//! realistically sized registry.

#![allow(missing_docs, clippy::unwrap_used)] // benchmark harness

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ward_telemetry::{DEFAULT_LATENCY_BUCKETS, Registry};

fn hot_path(c: &mut Criterion) {
    let r = Registry::new();
    let requests = r
        .counter("requests_total", "r", &["route", "status"])
        .unwrap();
    let counter = requests.with(&["/v1/sign", "201"]);
    let hist = r
        .histogram("latency_seconds", "l", &[], DEFAULT_LATENCY_BUCKETS)
        .unwrap()
        .with(&[]);
    let gauge = r.gauge("active", "a", &[]).unwrap().with(&[]);

    c.bench_function("counter_inc", |b| b.iter(|| black_box(&counter).inc()));
    c.bench_function("histogram_observe", |b| {
        let mut v = 0.0_f64;
        b.iter(|| {
            v = (v + 0.0137) % 12.0;
            black_box(&hist).observe(black_box(v));
        });
    });
    c.bench_function("gauge_inc", |b| b.iter(|| black_box(&gauge).inc()));
    c.bench_function("countervec_with_inc", |b| {
        b.iter(|| requests.with(black_box(&["/v1/sign", "201"])).inc());
    });

    let routes = [
        "/v1/sign",
        "/v1/renew",
        "/v1/revoke",
        "/v1/roots",
        "/v1/crl",
    ];
    let statuses = ["200", "201", "400", "401", "403", "429", "503"];
    for route in routes {
        for status in statuses {
            requests.with(&[route, status]).inc();
        }
    }
    c.bench_function("render_35_counters_1_histogram", |b| {
        b.iter(|| black_box(r.render()));
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
