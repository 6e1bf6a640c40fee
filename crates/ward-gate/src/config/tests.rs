use super::*;

#[test]
fn the_example_config_parses() {
    let text = include_str!("../../../../docs/gate.example.toml");
    let config = GateConfig::from_toml(text, Path::new("/etc/ward")).unwrap();
    assert_eq!(config.tenants.len(), 2);
    assert_eq!(
        config.tenants[0].cert.as_deref(),
        Some(Path::new("/etc/ward/api.crt"))
    );
    assert_eq!(config.timeouts.idle.0, Duration::from_secs(300));
    assert_eq!(config.tenants[0].routes[0].methods, vec!["GET"]);
    assert!(config.tenants[1].tcp_upstream.is_some());
    let jwt = config.tenants[0]
        .routes
        .iter()
        .find_map(|r| r.jwt_svid.as_ref())
        .unwrap();
    assert_eq!(jwt.bundle, Path::new("/etc/ward/bundle.json"));
}

#[test]
fn a_route_mode_is_its_own_or_else_its_tenants() {
    let base = include_str!("../../../../docs/gate.example.toml");
    let commented = "# mode = \"audit\"\n";
    assert!(base.contains(commented));
    let config = GateConfig::from_toml(base, Path::new("/")).unwrap();
    let api = &config.tenants[0];
    assert_eq!(api.mode, Mode::Strict);
    assert!(api.routes.iter().all(|r| r.mode.is_none()));
    assert_eq!(api.routes[0].mode_in(Mode::Audit), Mode::Audit);
    assert_eq!(api.routes[0].mode_in(Mode::Strict), Mode::Strict);

    let audit_route = base.replace(commented, "mode = \"audit\"\n");
    let config = GateConfig::from_toml(&audit_route, Path::new("/")).unwrap();
    let public = &config.tenants[0].routes[0];
    assert_eq!(public.mode, Some(Mode::Audit));
    assert_eq!(public.mode_in(Mode::Strict), Mode::Audit);
    assert!(
        config.tenants[0].routes[1..]
            .iter()
            .all(|r| r.mode.is_none())
    );
    // Written back only when set.
    let back = serde_json::to_string(&config.tenants[0].routes).unwrap();
    assert_eq!(back.matches("\"mode\":\"audit\"").count(), 1, "{back}");
    assert!(!back.contains("\"mode\":\"strict\""), "{back}");

    let strict_route = base
        .replace("mode = \"strict\"\n", "mode = \"audit\"\n")
        .replace(commented, "mode = \"strict\"\n");
    let config = GateConfig::from_toml(&strict_route, Path::new("/")).unwrap();
    let api = &config.tenants[0];
    assert_eq!(api.mode, Mode::Audit);
    assert_eq!(api.routes[0].mode_in(api.mode), Mode::Strict);
    assert_eq!(api.routes[1].mode_in(api.mode), Mode::Audit);

    let choices = "expected `strict` or `audit`";
    for (bad, why) in [
        ("\"lenient\"", choices),
        ("\"Audit\"", choices),
        ("\"\"", choices),
        ("true", "wanted string"),
    ] {
        let text = base.replace(commented, &format!("mode = {bad}\n"));
        let err = GateConfig::from_toml(&text, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{bad}: {err}");
        assert!(err.contains(&format!("mode = {bad}")), "{bad}: {err}");
    }
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

#[test]
fn control_characters_in_configured_urls_are_refused_precisely() {
    for (up, want) in [
        ("http://a:80\r\nX-Evil: 1", "U+000D at byte 11"),
        ("tcp://a\u{0}b:1", "U+0000 at byte 7"),
        ("https://a b:443", "space at byte 9"),
    ] {
        let e = Upstream::parse(up).unwrap_err();
        assert!(e.contains(want), "{up:?}: {e}");
    }
    let base = include_str!("../../../../docs/gate.example.toml");
    for (from, to, want) in [
        (
            "upstream = \"http://127.0.0.1:8080\"",
            "upstream = \"http://127.0.0.1:8080\\r\\nHost: evil\"",
            "U+000D at byte 21",
        ),
        (
            "crl = []",
            "crl = [\"http://ca.example.org/v1/crl\\n\"]",
            "U+000A at byte 28",
        ),
    ] {
        assert!(base.contains(from), "{from}");
        let err = GateConfig::from_toml(&base.replace(from, to), Path::new("/")).unwrap_err();
        let err = err.to_string();
        assert!(err.contains(want), "{to}: {err}");
        assert!(!err.contains('\n') && !err.contains('\r'), "{err:?}");
    }
}

#[test]
fn revocation_sources_parse_and_files_resolve() {
    let base = include_str!("../../../../docs/gate.example.toml");
    let text = base.replace(
        "crl = []",
        "crl = [\"http://ca.example.org:8080/v1/crl\", \"crls/ca.crl\", \"/abs/other.crl\"]",
    );
    let config = GateConfig::from_toml(&text, Path::new("/etc/ward")).unwrap();
    assert_eq!(
        config.revocation.sources(),
        vec![
            CrlSource::Url("http://ca.example.org:8080/v1/crl".into()),
            CrlSource::File(PathBuf::from("/etc/ward/crls/ca.crl")),
            CrlSource::File(PathBuf::from("/abs/other.crl")),
        ]
    );
    assert_eq!(config.revocation.crl_refresh.0, Duration::from_secs(60));
    assert!(!config.revocation.crl_fail_open);
    assert!(config.revocation.ocsp_stapling);
    for (to, why) in [
        ("crl = [\"ldap://x/crl\"]", "only http:// and https://"),
        ("crl = [\"http:///v1/crl\"]", "no host"),
        ("crl = [\"\"]", "empty CRL source"),
        ("crl_refresh = \"0s\"", "crl_refresh"),
    ] {
        let from = if to.starts_with("crl =") {
            "crl = []"
        } else {
            "crl_refresh = \"1m\""
        };
        let err = GateConfig::from_toml(&base.replace(from, to), Path::new("/")).unwrap_err();
        assert!(err.to_string().contains(why), "{to}: {err}");
    }
}

#[test]
fn identity_from_the_ca_replaces_certificate_files() {
    let base = include_str!("../../../../docs/gate.example.toml");
    let config = GateConfig::from_toml(base, Path::new("/etc/ward")).unwrap();
    let identity = config.identity.as_ref().unwrap();
    assert_eq!(
        identity.token_file.as_deref(),
        Some(Path::new("/run/secrets/ward-gate-token"))
    );

    // A tenant may drop its files when [identity] is there…
    let no_files = base
        .replacen("cert = \"api.crt\"", "", 1)
        .replacen("key = \"api.key\"", "", 1)
        .replacen("client_ca = \"clients-ca.crt\"", "", 1);
    let config = GateConfig::from_toml(&no_files, Path::new("/etc/ward")).unwrap();
    assert!(config.tenants[0].cert.is_none());
    assert!(config.tenants[0].client_ca.is_none());

    // …not without it, and half a pair is always wrong.
    let start = no_files.find("[identity]").unwrap();
    let end = no_files.find("# Credentials for https://").unwrap();
    let without = format!("{}{}", &no_files[..start], &no_files[end..]);
    let err = GateConfig::from_toml(&without, Path::new("/etc/ward"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cert and key are required without [identity]"),
        "{err}"
    );
    let half = base.replacen("key = \"api.key\"", "", 1);
    let err = GateConfig::from_toml(&half, Path::new("/etc/ward"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cert and key go together"), "{err}");

    for (from, to, why) in [
        (
            "ca = \"https://ca.example.org:8443\"",
            "ca = \"http://ca:1\"",
            "https:// URL",
        ),
        (
            "ca_fingerprint = \"5f1c",
            "ca_fingerprint = \"zz5f1c",
            "ca_fingerprint",
        ),
        ("# ca_bundle = ", "ca_bundle = ", "exclude each other"),
    ] {
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base, "{from}");
        let err = GateConfig::from_toml(&text, Path::new("/etc/ward"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{from} → {err}");
    }
}
