//! Unit tests of the Rego policy wrapper: convention, input, failures, cost.

use std::collections::BTreeMap;
use std::time::Instant;

use super::*;

const ONLY_PUBLIC: &str = r#"
package ward.gate

restricted := "spiffe://example.org/ns/restricted"

default allow := false

allow if input.identity.spiffe_id != restricted

allow if {
    input.identity.spiffe_id == restricted
    input.request.method == "GET"
    input.request.path == "/public"
}

deny contains "no tracing header" if {
    input.request.headers["x-block"] == "yes"
}
"#;

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestInput {
    RequestInput {
        method: method.into(),
        path: path.into(),
        host: Some("api.example.org".into()),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        grpc: None,
    }
}

fn input<'a>(spiffe: &'a str, request: Option<RequestInput>) -> PolicyInput<'a> {
    PolicyInput {
        identity: IdentityInput {
            spiffe_id: Some(spiffe),
            sans: vec![spiffe],
            subject: "CN=test",
            serial: "01",
            fingerprint: "ab",
        },
        request,
        route: Some("api"),
        tenant: "default",
    }
}

#[test]
fn allow_and_deny_follow_the_convention() {
    let p = Policy::compile("only_public.rego", ONLY_PUBLIC).unwrap();
    let r = "spiffe://example.org/ns/restricted";
    let other = "spiffe://example.org/ns/other";
    assert_eq!(
        p.evaluate(&input(r, Some(request("GET", "/public", &[])))),
        Decision::Allow
    );
    assert_eq!(
        p.evaluate(&input(r, Some(request("POST", "/public", &[])))),
        Decision::Deny(vec![])
    );
    assert_eq!(
        p.evaluate(&input(r, Some(request("GET", "/private", &[])))),
        Decision::Deny(vec![])
    );
    assert_eq!(
        p.evaluate(&input(other, Some(request("POST", "/private", &[])))),
        Decision::Allow
    );
    // deny wins over allow, and its messages come back.
    assert_eq!(
        p.evaluate(&input(
            other,
            Some(request("GET", "/", &[("x-block", "yes")]))
        )),
        Decision::Deny(vec!["no tracing header".into()])
    );
}

#[test]
fn tcp_input_has_null_request() {
    let p = Policy::compile(
        "tcp.rego",
        "package ward.gate\nallow if { input.request == null; input.route == null; input.tenant == \"db\" }\n",
    )
    .unwrap();
    let mut i = input("spiffe://example.org/a", None);
    i.route = None;
    i.tenant = "db";
    assert_eq!(p.evaluate(&i), Decision::Allow);
    i.tenant = "other";
    assert_eq!(p.evaluate(&i), Decision::Deny(vec![]));
}

#[test]
fn bad_policies_are_config_errors() {
    for (source, want) in [
        ("package ward.gate\nallow if {", "policy bad.rego"),
        ("package other\nallow := true\n", "package ward.gate"),
        ("package ward.gate\nx := 1\n", "no `allow` rule"),
        (
            "package ward.gate\nallow if no_such_function(input)\n",
            "could not find function no_such_function",
        ),
        (
            "package ward.gate\nallow := true\ndeny contains m if m := regex.replace(\"a\", \"b\", \"c\")\n",
            "could not find function",
        ),
        (
            "package ward.gate\nallow if { x := input.a; y }\n",
            "unsafe",
        ),
    ] {
        let e = Policy::compile("bad.rego", source).unwrap_err().to_string();
        assert!(e.contains(want), "{source:?}: {e}");
    }
}

#[test]
fn evaluation_errors_fail_closed() {
    // A non-boolean allow and a failing builtin both deny with a reason.
    let p = Policy::compile("str.rego", "package ward.gate\nallow := \"yes\"\n").unwrap();
    let d = p.evaluate(&input("spiffe://example.org/a", None));
    assert!(
        matches!(&d, Decision::Error(m) if m.contains("not a boolean")),
        "{d:?}"
    );
    let p = Policy::compile(
        "div.rego",
        "package ward.gate\nallow if to_number(input.identity.serial) / 0 > 1\n",
    )
    .unwrap();
    let d = p.evaluate(&input("spiffe://example.org/a", None));
    assert!(matches!(d, Decision::Error(_)), "{d:?}");
    let p = Policy::compile(
        "deny.rego",
        "package ward.gate\nallow := true\ndeny := 42\n",
    )
    .unwrap();
    let d = p.evaluate(&input("spiffe://example.org/a", None));
    assert!(matches!(d, Decision::Error(_)), "{d:?}");
}

#[test]
fn evaluation_is_cheap() {
    let p = Policy::compile("only_public.rego", ONLY_PUBLIC).unwrap();
    let headers: Vec<(String, String)> = (0..10)
        .map(|i| (format!("x-header-{i}"), "value".to_owned()))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let n = 2000;
    let started = Instant::now();
    for _ in 0..n {
        let i = input(
            "spiffe://example.org/ns/restricted",
            Some(request("GET", "/public", &headers)),
        );
        assert_eq!(p.evaluate(&i), Decision::Allow);
    }
    let per = started.elapsed() / n;
    eprintln!("policy evaluation: {per:?} per request (allow + deny, 10 headers)");
    assert!(per.as_millis() < 20, "{per:?} per evaluation");
}

#[test]
fn parse_errors_say_what_first() {
    let e = Policy::compile("p.rego", "package ward.gate\nallow if {\n")
        .unwrap_err()
        .to_string();
    let first = e.lines().next().unwrap();
    assert_eq!(first, "policy p.rego: expecting expression", "{e}");
    assert!(e.contains("p.rego:3:1"), "{e}");
}

fn identity(spiffe: &str) -> Identity {
    Identity {
        spiffe_id: Some(spiffe.parse().unwrap()),
        subject: String::new(),
        common_name: None,
        dns: Vec::new(),
        uris: vec![spiffe.to_owned()],
        ips: Vec::new(),
        serial: "01".into(),
        fingerprint: "ab".into(),
        chain: Vec::new().into(),
    }
}

#[test]
fn access_combines_rules_and_policy() {
    let only_b = Arc::new(
        Policy::compile(
            "b.rego",
            "package ward.gate\nallow if input.identity.spiffe_id == \"spiffe://td/ns/b\"\n",
        )
        .unwrap(),
    );
    let ns = AllowRules {
        spiffe_ids: vec!["spiffe://td/ns/*".into()],
        ..AllowRules::default()
    };
    let (a, b, x) = (
        identity("spiffe://td/ns/a"),
        identity("spiffe://td/ns/b"),
        identity("spiffe://td/x"),
    );
    let decide = |access: &Access, id: &Identity| {
        let spiffe = id.spiffe_str().unwrap();
        access.decide(id, || input(spiffe, None))
    };
    // Rules only; no rules admit nobody.
    let rules = Access::new(&ns, None).unwrap();
    assert_eq!(decide(&rules, &a), Verdict::Allowed);
    assert_eq!(decide(&rules, &x), Verdict::DeniedByRules);
    let nothing = Access::new(&AllowRules::default(), None).unwrap();
    assert_eq!(decide(&nothing, &a), Verdict::DeniedByRules);
    // Policy only: it decides alone.
    let policy = Access::new(&AllowRules::default(), Some(only_b.clone())).unwrap();
    assert_eq!(decide(&policy, &b), Verdict::Allowed);
    assert_eq!(decide(&policy, &a), Verdict::DeniedByPolicy(vec![]));
    // Both must pass; the policy is not even evaluated when the rules refuse.
    let both = Access::new(&ns, Some(only_b)).unwrap();
    assert_eq!(decide(&both, &b), Verdict::Allowed);
    assert_eq!(decide(&both, &a), Verdict::DeniedByPolicy(vec![]));
    let mut evaluated = false;
    assert_eq!(
        both.decide(&x, || {
            evaluated = true;
            input("spiffe://td/x", None)
        }),
        Verdict::DeniedByRules
    );
    assert!(!evaluated);
}

#[test]
fn runaway_policies_are_cut_off() {
    let p = Policy::compile(
        "slow.rego",
        "package ward.gate\nr := numbers.range(1, 5000)\nallow if count([1 | some x in r; some y in r; x == y + 9999]) > 0\n",
    )
    .unwrap();
    let started = Instant::now();
    let d = p.evaluate(&input("spiffe://example.org/a", None));
    let took = started.elapsed();
    eprintln!("runaway policy stopped after {took:?}: {d:?}");
    assert!(matches!(&d, Decision::Error(_)), "{d:?}");
    assert!(took.as_secs() < 5, "{took:?}");
}
