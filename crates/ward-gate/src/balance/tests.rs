use std::path::Path;

use super::*;
use crate::config::Dur;

fn endpoints(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("http://10.0.0.{i}:80")).collect()
}

fn balancer(n: usize, config: BalanceConfig) -> Balancer {
    Balancer::new("r", &endpoints(n), config, None).unwrap()
}

fn with_policy(policy: Policy) -> BalanceConfig {
    BalanceConfig {
        policy,
        ..BalanceConfig::default()
    }
}

fn picks(b: &Balancer, key: u64, n: usize) -> Vec<usize> {
    (0..n).map(|_| b.pick(key, &[]).unwrap().index()).collect()
}

#[test]
fn round_robin_takes_each_endpoint_in_turn() {
    let b = balancer(3, BalanceConfig::default());
    let mut counts = [0; 3];
    for i in picks(&b, 0, 300) {
        counts[i] += 1;
    }
    assert_eq!(counts, [100, 100, 100]);
    // Skipping what a retry already tried.
    let e = b.pick(0, &[0, 1]).unwrap();
    assert_eq!(e.index(), 2);
    assert!(b.pick(0, &[0, 1, 2]).is_none());
}

#[test]
fn a_retry_does_not_move_the_rotation_on() {
    let b = balancer(2, BalanceConfig::default());
    // 0 fails; its retry goes to 1; the next request starts at 1, not
    // at the endpoint that just failed.
    assert_eq!(b.pick(0, &[]).unwrap().index(), 0);
    assert_eq!(b.pick(0, &[0]).unwrap().index(), 1);
    assert_eq!(b.pick(0, &[]).unwrap().index(), 1);
    assert_eq!(b.pick(0, &[]).unwrap().index(), 0);
}

#[test]
fn hash_keeps_a_caller_on_one_endpoint_and_spreads_callers() {
    let b = balancer(3, with_policy(Policy::HashSpiffeId));
    let mut seen = [0usize; 3];
    for caller in 0..300 {
        let key = stable_hash(format!("spiffe://example.org/ns/c{caller}").as_bytes());
        let first = picks(&b, key, 5);
        assert!(first.iter().all(|i| *i == first[0]), "{first:?}");
        seen[first[0]] += 1;
    }
    // 300 callers over 3 endpoints: each gets a fair share (not exact).
    assert!(seen.iter().all(|n| (50..=150).contains(n)), "{seen:?}");
}

#[test]
fn hash_moves_only_the_callers_of_an_endpoint_that_leaves() {
    let b = balancer(4, with_policy(Policy::HashSpiffeId));
    let keys: Vec<u64> = (0..400)
        .map(|c| stable_hash(format!("spiffe://example.org/c{c}").as_bytes()))
        .collect();
    let before: Vec<usize> = keys
        .iter()
        .map(|k| b.pick(*k, &[]).unwrap().index())
        .collect();
    b.endpoints[1].healthy.store(false, Ordering::Relaxed);
    for (k, was) in keys.iter().zip(&before) {
        let now = b.pick(*k, &[]).unwrap().index();
        if *was == 1 {
            assert_ne!(now, 1);
        } else {
            assert_eq!(now, *was, "a caller of a healthy endpoint moved");
        }
    }
}

#[test]
fn the_hash_is_stable_across_builds() {
    // Fixed values (computed independently): a change would move every
    // caller of a hash_spiffe_id route after an upgrade.
    assert_eq!(
        stable_hash(b"spiffe://example.org/a"),
        0xd5d5_09af_2ebd_8f86
    );
    assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
}

#[tokio::test]
async fn least_request_prefers_the_idle_endpoint() {
    let b = balancer(3, with_policy(Policy::LeastRequest));
    let e0 = b.endpoints[0].clone();
    let e1 = b.endpoints[1].clone();
    let _a = e0.admit(&b.config).await.unwrap();
    let _b = e0.admit(&b.config).await.unwrap();
    let _c = e1.admit(&b.config).await.unwrap();
    for _ in 0..5 {
        assert_eq!(b.pick(0, &[]).unwrap().index(), 2);
    }
    drop(_a);
    drop(_b);
    // Now 0 and 2 are idle: both are chosen, 1 is not.
    let chosen = picks(&b, 0, 10);
    assert!(
        chosen.contains(&0) && chosen.contains(&2) && !chosen.contains(&1),
        "{chosen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_within_the_percentage_and_expire() {
    let config = BalanceConfig {
        ejection: EjectionConfig {
            consecutive_failures: 3,
            ejection_time: Dur(Duration::from_secs(10)),
            max_ejection_percent: 50,
        },
        ..BalanceConfig::default()
    };
    let b = balancer(3, config);
    let (e0, e1) = (b.endpoints[0].clone(), b.endpoints[1].clone());
    b.record(&e0, Outcome::ConnectFailure);
    b.record(&e0, Outcome::ServerError);
    b.record(&e0, Outcome::Success); // ends the row
    b.record(&e0, Outcome::Failure);
    b.record(&e0, Outcome::Failure);
    assert!(picks(&b, 0, 6).contains(&0), "two in a row do not eject");
    b.record(&e0, Outcome::Failure);
    assert!(!picks(&b, 0, 6).contains(&0), "three in a row eject");
    // 50 % of 3: one endpoint at most.
    for _ in 0..3 {
        b.record(&e1, Outcome::ConnectFailure);
    }
    assert!(
        picks(&b, 0, 6).contains(&1),
        "a second ejection would exceed 50 %"
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(picks(&b, 0, 6).contains(&0), "back after the ejection time");
}

#[test]
fn health_checks_take_out_and_put_back_after_their_thresholds() {
    let config = BalanceConfig {
        health: Some(HealthConfig {
            path: Some("/healthz".into()),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            ..HealthConfig::default()
        }),
        ..BalanceConfig::default()
    };
    let b = balancer(2, config);
    let e = b.endpoints[0].clone();
    assert_eq!(b.check_result(&e, false, "down"), None);
    assert_eq!(b.check_result(&e, false, "down"), Some(false));
    assert_eq!(picks(&b, 0, 4), vec![1, 1, 1, 1]);
    assert_eq!(b.check_result(&e, true, ""), None);
    assert_eq!(b.check_result(&e, true, ""), Some(true));
    assert!(picks(&b, 0, 4).contains(&0));
    // Nothing healthy: no endpoint at all.
    for e in &b.endpoints {
        b.check_result(e, false, "down");
        b.check_result(e, false, "down");
    }
    assert!(b.pick(0, &[]).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_full_endpoint_with_a_full_line_refuses_at_once() {
    let config = BalanceConfig {
        max_connections: 1,
        max_pending: 1,
        pending_timeout: Dur(Duration::from_secs(2)),
        ..BalanceConfig::default()
    };
    let b = Arc::new(balancer(1, config));
    let e = b.endpoints[0].clone();
    let held = e.admit(&b.config).await.unwrap();
    assert_eq!(e.active(), 1);
    // One may wait...
    let (b2, e2) = (b.clone(), e.clone());
    let waiter = tokio::spawn(async move { e2.admit(&b2.config).await.map(|_| ()) });
    tokio::task::yield_now().await;
    // ...a second is refused at once.
    let refused = e.admit(&b.config).await.unwrap_err();
    assert_eq!(
        refused,
        Unavailable::Overflow {
            endpoint: "http://10.0.0.0:80".into(),
            max: 1
        }
    );
    drop(held);
    assert_eq!(waiter.await.unwrap(), Ok(()));
    // A waiter whose wait runs out is refused too.
    let _held = e.admit(&b.config).await.unwrap();
    let late = e.admit(&b.config).await.unwrap_err();
    assert!(matches!(late, Unavailable::Overflow { .. }));
}

#[test]
fn bad_settings_say_why() {
    let bad = |f: &dyn Fn(&mut BalanceConfig), tcp: bool, want: &str| {
        let mut c = BalanceConfig {
            health: Some(HealthConfig::default()),
            ..BalanceConfig::default()
        };
        f(&mut c);
        let e = c.validate(tcp).unwrap_err();
        assert!(e.contains(want), "{e}");
    };
    bad(&|c| c.retries = 11, false, "retries");
    bad(&|c| c.max_connections = 0, false, "max_connections");
    bad(
        &|c| c.ejection.max_ejection_percent = 101,
        false,
        "max_ejection_percent",
    );
    bad(
        &|c| c.health.as_mut().unwrap().path = Some("healthz".into()),
        false,
        "must start with '/'",
    );
    bad(
        &|c| c.health.as_mut().unwrap().path = Some("/h".into()),
        true,
        "TCP tenants",
    );
    bad(
        &|c| c.health.as_mut().unwrap().interval = Dur(Duration::from_millis(10)),
        false,
        "interval",
    );
    bad(
        &|c| c.health.as_mut().unwrap().unhealthy_threshold = 0,
        false,
        "thresholds",
    );
    assert!(check_endpoint_list(&["http://a:1".into(), "http://a:1/".into()]).is_err());
    assert!(check_endpoint_list(&endpoints(MAX_ENDPOINTS + 1)).is_err());
}

#[test]
fn settings_parse_from_toml_with_milliseconds() {
    let c: BalanceConfig = toml::from_str(
        r#"
policy = "least_request"
pending_timeout = "250ms"
[health]
path = "/healthz"
interval = "200ms"
timeout = "2s"
[ejection]
ejection_time = "1m"
"#,
    )
    .unwrap();
    assert_eq!(c.policy, Policy::LeastRequest);
    assert_eq!(c.pending_timeout.0, Duration::from_millis(250));
    let h = c.health.as_ref().unwrap();
    assert_eq!(
        (h.interval.0, h.timeout.0),
        (Duration::from_millis(200), Duration::from_secs(2))
    );
    assert_eq!(h.healthy_threshold, 2, "defaults fill the rest");
    assert_eq!(c.ejection.ejection_time.0, Duration::from_secs(60));
    assert_eq!(c.retries, 2);
    c.validate(false).unwrap();
    // Round trip (what --check-config prints).
    let back: BalanceConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    for bad in ["interval = \"fast\"", "interval = \"xms\"", "nope = 1"] {
        let text = format!("[health]\n{bad}\n");
        assert!(toml::from_str::<BalanceConfig>(&text).is_err(), "{bad}");
    }
}

#[test]
fn route_and_tenant_forms_are_checked() {
    use crate::config::GateConfig;
    let base = include_str!("../../../../docs/gate.example.toml");
    let one = "upstream = \"http://127.0.0.1:8080\"";
    assert!(base.contains(one));
    for (to, want) in [
        (
            "upstreams = [\"http://a:1\", \"https://b:2\"]",
            "all be http:// or all be https://",
        ),
        (
            "upstream = \"http://a:1\"\nupstreams = [\"http://b:1\"]",
            "exclude each other",
        ),
        (
            "upstreams = [\"http://a:1\", \"http://a:1\"]",
            "listed twice",
        ),
        ("upstreams = [\"tcp://a:1\"]", "http:// or https://"),
        ("upstreams = []", "an upstream (or upstreams) is required"),
    ] {
        let err = GateConfig::from_toml(&base.replacen(one, to, 1), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{to}: {err}");
    }
    let tcp = "tcp_upstream = \"tcp://127.0.0.1:5432\"";
    assert!(base.contains(tcp));
    let err = GateConfig::from_toml(
        &base.replacen(tcp, "tcp_upstreams = [\"tcp://a:1\", \"http://b:2\"]", 1),
        Path::new("/"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("must be tcp://HOST:PORT"), "{err}");
    let ok = GateConfig::from_toml(
        &base.replacen(one, "upstreams = [\"http://a:1\", \"http://b:1\"]", 1),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(ok.tenants[0].routes[0].endpoints().unwrap().len(), 2);
}
