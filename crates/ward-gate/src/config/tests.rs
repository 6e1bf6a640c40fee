use super::*;

#[test]
fn the_example_config_parses() {
    let text = include_str!("../../../../docs/gate.example.toml");
    let config = GateConfig::from_toml(text, Path::new("/etc/ward")).unwrap();
    assert_eq!(config.tenants.len(), 2);
    assert_eq!(config.tenants[0].cert, Path::new("/etc/ward/api.crt"));
    assert_eq!(config.timeouts.idle.0, Duration::from_secs(300));
    assert_eq!(config.tenants[0].routes[0].methods, vec!["GET"]);
    assert!(config.tenants[1].tcp_upstream.is_some());
}

#[test]
fn invalid_configs_say_why() {
    let base = include_str!("../../../../docs/gate.example.toml");
    for (from, to, why) in [
        (
            "max_connections = 10000",
            "max_conections = 10000",
            "max_conections",
        ),
        (
            "upstream = \"http://127.0.0.1:8080\"",
            "upstream = \"ftp://x:1\"",
            "unsupported scheme",
        ),
        (
            "path_prefix = \"/public\"",
            "path_prefix = \"public\"",
            "must start with '/'",
        ),
        (
            "\"spiffe://example.org/ns/*\"",
            "\"spiffe://Example.org/ns/*\"",
            "lowercase",
        ),
        (
            "tcp_upstream = \"tcp://127.0.0.1:5432\"",
            "tcp_upstream = \"tcp://127.0.0.1\"",
            "needs a port",
        ),
        ("idle = \"5m\"", "idle = \"soon\"", "invalid duration"),
    ] {
        assert!(base.contains(from), "{from}");
        let err = GateConfig::from_toml(&base.replace(from, to), Path::new("/")).unwrap_err();
        assert!(err.to_string().contains(why), "{to}: {err}");
    }
    let no_tls = base.replace("[upstream_tls]", "[not_upstream_tls]");
    assert!(GateConfig::from_toml(&no_tls, Path::new("/")).is_err());
}

#[test]
fn upstreams_parse() {
    assert_eq!(
        Upstream::parse("http://a:8080"),
        Ok(Upstream::Http("a:8080".into()))
    );
    assert_eq!(
        Upstream::parse("http://a"),
        Ok(Upstream::Http("a:80".into()))
    );
    assert_eq!(
        Upstream::parse("https://b:9"),
        Ok(Upstream::Https {
            authority: "b:9".into(),
            host: "b".into()
        })
    );
    assert_eq!(
        Upstream::parse("tcp://c:1"),
        Ok(Upstream::Tcp("c:1".into()))
    );
    assert!(Upstream::parse("http://a/path").is_err());
    assert!(Upstream::parse("a:1").is_err());
}
