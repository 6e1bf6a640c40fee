//! What every ACME scenario needs: ca.toml with `[acme]`; the DNS server,
//! free ports and tool checks come from `common::acme_tools`.

pub(crate) use crate::common::acme_tools::{ChallTestSrv, free_port, have};
use crate::harness::Ca;

/// The OCSP URL written into issued certificates (tests pass the real
/// listener to `openssl ocsp -url`).
pub(crate) const OCSP_URL: &str = "http://127.0.0.1:9/ocsp";

/// Validation ports the CA dials and the DNS server it asks.
pub(crate) struct Ports {
    /// http-01.
    pub(crate) http01: u16,
    /// tls-alpn-01.
    pub(crate) tlsalpn01: u16,
    /// DNS (pebble-challtestsrv).
    pub(crate) dns: u16,
}

/// Writes `[revocation] ocsp_url` and an `[acme]` section with provisioners
/// `web` (any name under acme.test, every challenge, profiles `default`
/// 24h and `shortlived` 6h) and `eab` (the same, external account binding
/// required), plus `extra` TOML.
pub(crate) fn configure(ca: &Ca, ports: &Ports, extra: &str) {
    let path = ca.file("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut new = text.replace(
        "# ocsp_url = \"http://ca.example.org/ocsp\"",
        &format!("ocsp_url = \"{OCSP_URL}\""),
    );
    assert_ne!(new, text, "ca.toml has no ocsp_url to set");
    new.push_str(&format!(
        r#"
[acme]
http01_port = {http}
tlsalpn01_port = {tls}
dns_resolver = "127.0.0.1:{dns}"

[acme.provisioners.web]
allow_dns = ["*.acme.test"]
allow_ip = ["127.0.0.0/8"]
profiles = {{ default = "24h", shortlived = "6h" }}

[acme.provisioners.eab]
allow_dns = ["*.acme.test"]
eab_required = true
{extra}
"#,
        http = ports.http01,
        tls = ports.tlsalpn01,
        dns = ports.dns,
    ));
    std::fs::write(&path, new).unwrap();
}
