//! Bearer JWT-SVIDs on a gate route (issue 24): tokens minted by PyJWT (ES256
//! and RS256) against a bundle file; the route's audience, trust domain and
//! allow rules; `mode = "either"` (the token's identity instead of the
//! certificate's) and `mode = "both"` (both must pass).

use std::process::Command;

use serde_json::Value;

use crate::clients::{CurlResult, curl_as};
use crate::harness::{Gate, Pki, crt, key, mint, s, server_cert};
use crate::upstream::Echo;

const MINT: &str = include_str!("jwt_mint.py");

fn mint_tokens(bundle: &str) -> Value {
    let out = Command::new("python3")
        .args(["-c", MINT, bundle])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn config(pki: &Pki, server: &std::path::Path, upstream: &str, bundle: &str) -> String {
    format!(
        r#"[listen]
address = "127.0.0.1:0"
admin = "127.0.0.1:0"

[[tenants]]
name = "t"
sni = ["localhost"]
default = true
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[[tenants.routes]]
name = "either"
path_prefix = "/either"
upstream = "{upstream}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*"]
[tenants.routes.jwt_svid]
audience = "gate"
trust_domain = "example.org"
bundle = "{bundle}"

[[tenants.routes]]
name = "both"
path_prefix = "/both"
upstream = "{upstream}"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/ns/*", "spiffe://example.org/lb"]
[tenants.routes.jwt_svid]
audience = "gate"
trust_domain = "example.org"
bundle = "{bundle}"
mode = "both"
"#,
        cert = crt(server),
        key = key(server),
        ca = s(&pki.root()),
    )
}

#[test]
fn bearer_jwt_svids_are_verified_per_route() {
    let pki = Pki::init(&[]);
    let server = server_cert(&pki, "spiffe://example.org/gate", "gate");
    // The L7 balancer's certificate: not admitted by the "either" route.
    let lb = mint(&pki, "client", "spiffe://example.org/lb", "lb", &[]);
    let bundle = pki.path("bundle.json");
    let tokens = mint_tokens(&s(&bundle));
    let echo = Echo::start();
    let file = pki.path("gate.toml");
    std::fs::write(&file, config(&pki, &server, &echo.url(), &s(&bundle))).unwrap();
    let gate = Gate::config(&file);
    let root = s(&pki.root());
    let call = |path: &str, token: Option<&str>| -> CurlResult {
        let url = format!("{}{path}", gate.url());
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec![url.as_str()];
        if let Some(a) = &auth {
            args = vec!["-H", a, url.as_str()];
        }
        curl_as(&root, &crt(&lb), &key(&lb), &args)
    };
    let tok = |name: &str| tokens[name].as_str().unwrap().to_owned();

    // either: no token, the certificate decides (lb is not admitted).
    let r = call("/either", None);
    assert_eq!(r.status, 403, "{r:?}");
    for good in ["good", "good_rs256", "good_list_aud"] {
        let r = call("/either", Some(&tok(good)));
        assert_eq!(r.status, 200, "{good}: {r:?}");
        // The token goes on to the upstream unchanged.
        let up = r.json();
        let auth: Vec<&Value> = up["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == "authorization")
            .collect();
        assert_eq!(auth.len(), 1, "{up}");
    }
    // A valid token whose identity no rule admits: 403.
    let r = call("/either", Some(&tok("not_allowed")));
    assert_eq!(r.status, 403, "{r:?}");
    // Tokens that do not verify: 401 with the reason, never the token.
    for (bad, why) in [
        ("other_domain", "not in trust domain"),
        ("wrong_aud", "audience"),
        ("expired", "expired"),
        ("wrong_key", "bad signature"),
        ("unknown_kid", "no key"),
        ("hs256", "unsupported algorithm"),
    ] {
        let r = call("/either", Some(&tok(bad)));
        assert_eq!(r.status, 401, "{bad}: {r:?}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "invalid_jwt_svid", "{bad}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(why), "{bad}: {message}");
        assert!(!message.contains(&tok(bad)[..20]), "{bad}: token echoed");
    }
    let r = call("/either", Some("not.a.jwt"));
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        echo.hits(),
        3,
        "refused requests never reached the upstream"
    );

    // both: the token is required, and both identities must pass.
    let r = call("/both", None);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.body.contains("missing_jwt_svid"), "{r:?}");
    let r = call("/both", Some(&tok("good")));
    assert_eq!(r.status, 200, "{r:?}");
    let r = call("/both", Some(&tok("not_allowed")));
    assert_eq!(r.status, 403, "{r:?}");
    let r = call("/both", Some(&tok("expired")));
    assert_eq!(r.status, 401, "{r:?}");

    // A bad bundle file never replaces the good one; a new one is picked up.
    std::fs::write(&bundle, b"{ not json").unwrap();
    crate::harness::wait_until("the bad bundle to be noticed", || {
        let r = call("/either", Some(&tok("good")));
        assert_eq!(r.status, 200, "{r:?}");
        gate.stderr().contains("JWT bundle unusable")
    });
    let fresh = mint_tokens(&s(&bundle));
    crate::harness::wait_until("the new bundle to be read", || {
        call("/either", Some(fresh["good"].as_str().unwrap())).status == 200
    });
    // The old keys are gone with the old bundle.
    let r = call("/either", Some(&tok("good")));
    assert_eq!(r.status, 401, "{r:?}");
}
