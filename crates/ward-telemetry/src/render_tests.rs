//! Exact exposition output for small registries.

use crate::Registry;

#[test]
fn renders_exact_text_with_escaping_and_histogram_buckets() {
    let r = Registry::new();
    let requests = r
        .counter(
            "ward_gate_requests_total",
            "Requests by route and status.",
            &["route", "status"],
        )
        .unwrap();
    requests.with(&["/b", "200"]).inc_by(2);
    requests.with(&["/a", "403"]).inc();
    requests.with(&["/a", "200"]).inc();
    let odd = r
        .gauge(
            "ward_test_odd",
            "Help with \\ backslash\nand \"quotes\".",
            &["v"],
        )
        .unwrap();
    odd.with(&["q \" b \\ n \n end"]).set(-3);
    let handshakes = r
        .histogram(
            "ward_gate_handshake_seconds",
            "Handshake duration.",
            &["tls_version"],
            &[0.25, 0.5, 1.0],
        )
        .unwrap();
    let tls13 = handshakes.with(&["1.3"]);
    for v in [0.125, 0.25, 0.75, 4.0] {
        tls13.observe(v);
    }
    handshakes.with(&["1.2"]).observe(0.5);
    r.counter("ward_unused_total", "Never touched.", &["x"])
        .unwrap();
    r.gauge("ward_up", "Unlabelled, exposed at zero.", &[])
        .unwrap();
    let expiry = r
        .gauge("ward_cert_expiry_seconds", "Float gauge.", &[])
        .unwrap();
    expiry.with(&[]).set_f64(1.5);

    let expected = r#"# HELP ward_cert_expiry_seconds Float gauge.
# TYPE ward_cert_expiry_seconds gauge
ward_cert_expiry_seconds 1.5
# HELP ward_gate_handshake_seconds Handshake duration.
# TYPE ward_gate_handshake_seconds histogram
ward_gate_handshake_seconds_bucket{tls_version="1.2",le="0.25"} 0
ward_gate_handshake_seconds_bucket{tls_version="1.2",le="0.5"} 1
ward_gate_handshake_seconds_bucket{tls_version="1.2",le="1"} 1
ward_gate_handshake_seconds_bucket{tls_version="1.2",le="+Inf"} 1
ward_gate_handshake_seconds_sum{tls_version="1.2"} 0.5
ward_gate_handshake_seconds_count{tls_version="1.2"} 1
ward_gate_handshake_seconds_bucket{tls_version="1.3",le="0.25"} 2
ward_gate_handshake_seconds_bucket{tls_version="1.3",le="0.5"} 2
ward_gate_handshake_seconds_bucket{tls_version="1.3",le="1"} 3
ward_gate_handshake_seconds_bucket{tls_version="1.3",le="+Inf"} 4
ward_gate_handshake_seconds_sum{tls_version="1.3"} 5.125
ward_gate_handshake_seconds_count{tls_version="1.3"} 4
# HELP ward_gate_requests_total Requests by route and status.
# TYPE ward_gate_requests_total counter
ward_gate_requests_total{route="/a",status="200"} 1
ward_gate_requests_total{route="/a",status="403"} 1
ward_gate_requests_total{route="/b",status="200"} 2
# HELP ward_test_odd Help with \\ backslash\nand "quotes".
# TYPE ward_test_odd gauge
ward_test_odd{v="q \" b \\ n \n end"} -3
# HELP ward_up Unlabelled, exposed at zero.
# TYPE ward_up gauge
ward_up 0
"#;
    assert_eq!(r.render(), expected);
}

#[test]
fn unlabelled_histogram_and_special_values() {
    let r = Registry::new();
    let h = r.histogram("h_seconds", "h", &[], &[]).unwrap().with(&[]);
    h.observe(f64::NAN);
    let g = r.gauge("g", "g", &[]).unwrap().with(&[]);
    g.set_f64(f64::NEG_INFINITY);
    let expected = "# HELP g g\n# TYPE g gauge\ng -Inf\n\
                    # HELP h_seconds h\n# TYPE h_seconds histogram\n\
                    h_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum NaN\nh_seconds_count 1\n";
    assert_eq!(r.render(), expected);
}

#[test]
fn empty_registry_renders_nothing() {
    assert_eq!(Registry::new().render(), "");
}
