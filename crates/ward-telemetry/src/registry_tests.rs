//! Registration rules, label lookup and concurrency.

use std::thread;

use super::*;

#[test]
fn same_definition_returns_the_shared_family() {
    let r = Registry::new();
    let a = r.counter("c_total", "first help", &["x"]).unwrap();
    let b = r
        .clone()
        .counter("c_total", "other help is ignored", &["x"])
        .unwrap();
    a.with(&["1"]).inc();
    assert_eq!(b.with(&["1"]).get(), 1);
    let h1 = r.histogram("h", "h", &[], DEFAULT_LATENCY_BUCKETS).unwrap();
    let mut with_inf = DEFAULT_LATENCY_BUCKETS.to_vec();
    with_inf.push(f64::INFINITY);
    let h2 = r.histogram("h", "h", &[], &with_inf).unwrap();
    h1.with(&[]).observe(0.1);
    assert_eq!(h2.with(&[]).count(), 1);
}

#[test]
fn conflicting_definitions_are_errors() {
    let r = Registry::new();
    r.counter("m", "m", &["a"]).unwrap();
    let err = r.gauge("m", "m", &["a"]).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "metric \"m\" is already registered as counter{a}, not gauge{a}"
    );
    assert!(matches!(
        r.counter("m", "m", &["b"]),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        r.counter("m", "m", &["a", "b"]),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        r.counter("m", "m", &[]),
        Err(Error::Conflict { .. })
    ));
    r.histogram("h", "h", &[], &[1.0, 2.0]).unwrap();
    let err = r.histogram("h", "h", &[], &[1.0, 3.0]).unwrap_err();
    assert!(err.to_string().contains("buckets [1.0, 2.0]"), "{err}");
}

#[test]
fn sample_name_clashes_are_errors() {
    let r = Registry::new();
    r.histogram("lat", "h", &[], &[1.0]).unwrap();
    for name in ["lat_count", "lat_sum", "lat_bucket"] {
        let err = r.counter(name, "c", &[]).unwrap_err();
        assert!(matches!(err, Error::NameClash { .. }), "{name}: {err}");
    }
    r.gauge("x_sum", "g", &[]).unwrap();
    assert!(matches!(
        r.histogram("x", "h", &[], &[1.0]),
        Err(Error::NameClash { .. })
    ));
}

#[test]
fn invalid_names_are_rejected() {
    let r = Registry::new();
    for name in ["", "1abc", "a-b", "a b", "é", "a{"] {
        assert!(
            matches!(
                r.counter(name, "h", &[]),
                Err(Error::InvalidMetricName { .. })
            ),
            "{name:?}"
        );
    }
    for ok in ["a", "_a", ":a", "ns:sub_system_total9"] {
        r.counter(ok, "h", &[]).unwrap();
    }
    for labels in [&["__x"][..], &["a-b"], &["1a"], &[""], &["a", "a"]] {
        assert!(
            matches!(
                r.gauge("g", "h", labels),
                Err(Error::InvalidLabelName { .. })
            ),
            "{labels:?}"
        );
    }
    assert!(matches!(
        r.histogram("h", "h", &["le"], &[1.0]),
        Err(Error::InvalidLabelName { .. })
    ));
    r.counter("le_ok_on_counters", "h", &["le"]).unwrap();
}

#[test]
fn invalid_buckets_are_rejected() {
    let r = Registry::new();
    for buckets in [
        &[f64::NAN][..],
        &[1.0, 1.0],
        &[2.0, 1.0],
        &[f64::NEG_INFINITY, 1.0],
        &[f64::INFINITY, 1.0],
    ] {
        assert!(
            matches!(
                r.histogram("h", "h", &[], buckets),
                Err(Error::InvalidBuckets { .. })
            ),
            "{buckets:?}"
        );
    }
}

#[test]
fn wrong_label_count_is_an_error_from_try_with() {
    let r = Registry::new();
    let c = r.counter("c", "c", &["a", "b"]).unwrap();
    let err = c.try_with(&["1"]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LabelCount {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(c.try_with(&["1", "2", "3"]).is_err());
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "has 1 label(s), got 0 value(s)")]
fn wrong_label_count_panics_in_debug_builds() {
    let r = Registry::new();
    r.counter("c", "c", &["a"]).unwrap().with(&[]).inc();
}

#[test]
fn label_values_are_distinct_children() {
    let r = Registry::new();
    let c = r.counter("c", "c", &["a", "b"]).unwrap();
    // Same concatenation, different tuples.
    c.with(&["ab", "c"]).inc();
    c.with(&["a", "bc"]).inc_by(5);
    assert_eq!(c.with(&["ab", "c"]).get(), 1);
    assert_eq!(c.with(&["a", "bc"]).get(), 5);
}

#[test]
fn concurrent_increments_sum_correctly() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 50_000;
    let r = Registry::new();
    let counters = r.counter("c_total", "c", &["k"]).unwrap();
    let gauge = r.gauge("g", "g", &[]).unwrap().with(&[]);
    let hist = r.histogram("h", "h", &[], &[0.5]).unwrap().with(&[]);
    let cached = counters.with(&["cached"]);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (counters, gauge, hist, cached) = (&counters, &gauge, &hist, &cached);
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    cached.inc();
                    // Looked up every time, from many threads: children are
                    // created once and shared.
                    counters
                        .with(&[if i % 2 == 0 { "even" } else { "odd" }])
                        .inc();
                    gauge.inc();
                    gauge.dec();
                    hist.observe(if t % 2 == 0 { 0.25 } else { 1.0 });
                }
            });
        }
    });
    let total = THREADS * PER_THREAD;
    assert_eq!(cached.get(), total);
    assert_eq!(counters.with(&["even"]).get(), total / 2);
    assert_eq!(counters.with(&["odd"]).get(), total / 2);
    assert_eq!(gauge.get(), 0.0);
    assert_eq!(hist.count(), total);
    let expected_sum = (total / 2) as f64 * 1.25;
    assert_eq!(hist.sum(), expected_sum);
    let text = r.render();
    assert_eq!(text.matches("c_total{k=").count(), 3, "{text}");
    assert!(
        text.contains(&format!("h_bucket{{le=\"0.5\"}} {}\n", total / 2)),
        "{text}"
    );
}

#[test]
fn registry_is_shared_across_clones_and_threads() {
    let r = Registry::new();
    let r2 = r.clone();
    let handle = thread::spawn(move || {
        r2.counter("from_thread_total", "t", &[])
            .unwrap()
            .with(&[])
            .inc();
    });
    handle.join().unwrap();
    assert!(r.render().contains("from_thread_total 1\n"));
}

#[test]
fn content_type_is_text_format_0_0_4() {
    assert_eq!(
        Registry::content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(Registry::CONTENT_TYPE, Registry::content_type());
}
