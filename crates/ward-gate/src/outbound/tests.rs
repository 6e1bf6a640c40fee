//! Unit tests of outbound mode: target parsing, server names, messages.

use super::*;

#[test]
fn target_hosts() {
    assert_eq!(target_host("db.internal:5432").unwrap(), "db.internal");
    assert_eq!(target_host("127.0.0.1:443").unwrap(), "127.0.0.1");
    assert_eq!(target_host("[::1]:443").unwrap(), "::1");
    assert!(target_host("nohost").is_err());
    assert!(target_host(":443").is_err());
    assert!(target_host("h:notaport").is_err());
}

#[test]
fn sni_overrides_the_target_host() {
    let mut o = ClientOptions::new(
        "127.0.0.1:0".into(),
        "127.0.0.1:8443".into(),
        "c".into(),
        "k".into(),
        "ca".into(),
    );
    assert!(matches!(o.server_name().unwrap(), ServerName::IpAddress(_)));
    o.sni = Some("api.example.org".into());
    assert!(matches!(o.server_name().unwrap(), ServerName::DnsName(_)));
    o.verify_spiffe_id = Some("not a spiffe id".into());
    assert!(o.pattern().is_err());
}

#[test]
fn mismatch_message_is_clear() {
    let e = SpiffeMismatch {
        found: "spiffe://example.org/other".into(),
        wanted: "spiffe://example.org/db".into(),
    };
    assert_eq!(
        e.to_string(),
        "the target's SPIFFE ID spiffe://example.org/other does not match --verify-spiffe-id spiffe://example.org/db"
    );
}
