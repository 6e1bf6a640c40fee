//! The gate's configuration: a TOML file (`--config`) or the flag form of
//! SPEC §4, both turned into one validated [`GateConfig`].
//!
//! Layers: lossless input (TOML or flags) → [`GateConfig`] → `validate()`
//! (files are not read here; building the runtime state reads them and can
//! fail separately, which is what `--check-config` runs too).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use ward_pki::{SpiffeIdPattern, parse_duration};

use crate::Error;

/// A duration written as `5s`, `1m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Dur(#[serde(serialize_with = "ser_dur")] pub Duration);

fn ser_dur<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ward_pki::issue::humanize(*d))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// The whole gate configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Listener settings.
    pub listen: ListenConfig,
    /// TLS settings shared by every tenant.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Credentials for `https://` upstreams.
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTls>,
    /// What to do with a ClientHello whose SNI matches no tenant.
    #[serde(default)]
    pub unknown_sni: UnknownSni,
    /// Tenants, chosen by SNI; at least one.
    pub tenants: Vec<TenantConfig>,
    /// Where audit lines go: `stdout`, `stderr`, a path, or `off`.
    #[serde(default = "default_audit")]
    pub audit_log: String,
}

fn default_audit() -> String {
    "stdout".into()
}

/// `[listen]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address of the mTLS listener.
    pub address: String,
    /// Address of the admin listener (/healthz, /readyz, /metrics); none by default.
    #[serde(default)]
    pub admin: Option<String>,
    /// Most client connections open at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    10_000
}

/// `[tls]`.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Also accept TLS 1.2 (ECDHE + AEAD suites only). Off by default.
    pub allow_tls12: bool,
    /// Re-check revocation on resumed sessions by disabling TLS 1.3 tickets.
    pub disable_resumption: bool,
}

/// `[timeouts]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Time allowed for the ClientHello to arrive.
    pub client_hello: Dur,
    /// Time allowed for the whole TLS handshake.
    pub handshake: Dur,
    /// Time allowed to connect to an upstream.
    pub upstream_connect: Dur,
    /// Time allowed for a client to send request headers (HTTP/1).
    pub header_read: Dur,
    /// Idle time after which a connection (or TCP proxy) is closed.
    pub idle: Dur,
    /// Time given to in-flight requests after SIGTERM.
    pub drain: Dur,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_hello: Dur(Duration::from_secs(5)),
            handshake: Dur(Duration::from_secs(10)),
            upstream_connect: Dur(Duration::from_secs(5)),
            header_read: Dur(Duration::from_secs(10)),
            idle: Dur(Duration::from_secs(300)),
            drain: Dur(Duration::from_secs(30)),
        }
    }
}

/// `[upstream_tls]`: how the gate talks to `https://` upstreams.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Roots that upstream server certificates must chain to.
    pub ca: PathBuf,
    /// The gate's client certificate chain (mTLS to the upstream).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its key.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Behaviour for an unknown SNI.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSni {
    /// Use the tenant marked `default` (or the only tenant).
    #[default]
    Default,
    /// Refuse the handshake.
    Reject,
}

/// One tenant: a server identity, a client CA pool and routes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Name, for metrics and audit.
    pub name: String,
    /// Server names this tenant answers; empty for the default tenant.
    #[serde(default)]
    pub sni: Vec<String>,
    /// Whether unknown SNI goes here.
    #[serde(default)]
    pub default: bool,
    /// Server certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// Roots client certificates must chain to.
    pub client_ca: PathBuf,
    /// A raw TCP upstream (`tcp://host:port`): the tenant proxies bytes
    /// instead of HTTP, and `allow` decides who may connect.
    #[serde(default)]
    pub tcp_upstream: Option<String>,
    /// Who may open a TCP connection (TCP tenants only).
    #[serde(default)]
    pub allow: AllowRules,
    /// A Rego policy deciding who may connect (TCP tenants only).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// HTTP routes, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Allow rules; a request is allowed when any rule matches.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AllowRules {
    /// SPIFFE IDs, exact or `prefix/*`.
    pub spiffe_ids: Vec<String>,
    /// DNS SANs, exact or `*.suffix`.
    pub dns: Vec<String>,
    /// Subject common names, exact.
    pub cn: Vec<String>,
}

/// One HTTP route.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name, for metrics and audit.
    pub name: String,
    /// Host (from `:authority`/`Host`, port ignored); any when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix; `/` when absent.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Allowed methods; any when empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// `http://host:port` or `https://host:port`.
    pub upstream: String,
    /// Who may use the route.
    #[serde(default)]
    pub allow: AllowRules,
    /// A Rego policy the request must also satisfy (see `crate::policy`).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Client certificate headers for the upstream: `xfcc` (default) or
    /// `rfc9440` (adds `Client-Cert`/`Client-Cert-Chain`).
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
}

fn default_prefix() -> String {
    "/".into()
}

/// Which identity headers the upstream gets.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdentityHeaders {
    /// `x-forwarded-client-cert` (Envoy format) and `x-ward-spiffe-id`.
    #[default]
    Xfcc,
    /// The above plus RFC 9440 `Client-Cert` and `Client-Cert-Chain`.
    Rfc9440,
}

impl GateConfig {
    /// Parses TOML; relative paths are resolved against `base` (the
    /// config file's directory).
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, Error> {
        let mut config: GateConfig =
            toml::from_str(text).map_err(|e| Error::Config(format!("gate config: {e}")))?;
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        Self::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for t in &mut self.tenants {
            fix(&mut t.cert);
            fix(&mut t.key);
            fix(&mut t.client_ca);
            t.policy.iter_mut().for_each(fix);
            t.routes
                .iter_mut()
                .for_each(|r| r.policy.iter_mut().for_each(fix));
        }
        if let Some(u) = &mut self.upstream_tls {
            fix(&mut u.ca);
            if let Some(c) = &mut u.cert {
                fix(c);
            }
            if let Some(k) = &mut u.key {
                fix(k);
            }
        }
        if !matches!(self.audit_log.as_str(), "stdout" | "stderr" | "off") {
            let mut p = PathBuf::from(&self.audit_log);
            fix(&mut p);
            self.audit_log = p.display().to_string();
        }
    }

    /// Checks everything that does not need the files.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if self.tenants.is_empty() {
            return bad("at least one tenant is required".into());
        }
        let defaults = self.tenants.iter().filter(|t| t.default).count();
        if defaults > 1 {
            return bad("only one tenant may be the default".into());
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tenants {
            if !names.insert(&t.name) {
                return bad(format!("tenant name {:?} is used twice", t.name));
            }
            match (&t.tcp_upstream, t.routes.is_empty()) {
                (Some(_), false) => {
                    return bad(format!(
                        "tenant {:?}: tcp_upstream and routes exclude each other",
                        t.name
                    ));
                }
                (None, true) => return bad(format!("tenant {:?} has no routes", t.name)),
                _ => {}
            }
            if t.policy.is_some() && t.tcp_upstream.is_none() {
                return bad(format!(
                    "tenant {:?}: a tenant-level policy applies to TCP tenants; put it on the routes",
                    t.name
                ));
            }
            if let Some(up) = &t.tcp_upstream {
                Upstream::parse(up)
                    .map_err(|e| Error::Config(format!("tenant {:?}: {e}", t.name)))?;
                t.allow
                    .validate()
                    .map_err(|e| Error::Config(format!("tenant {:?}: {e}", t.name)))?;
            }
            for r in &t.routes {
                let ctx = |e: String| {
                    Error::Config(format!("tenant {:?}, route {:?}: {e}", t.name, r.name))
                };
                let up = Upstream::parse(&r.upstream).map_err(ctx)?;
                if matches!(up, Upstream::Tcp(_)) {
                    return Err(ctx(
                        "HTTP routes need an http:// or https:// upstream".into()
                    ));
                }
                if matches!(up, Upstream::Https { .. }) && self.upstream_tls.is_none() {
                    return Err(ctx("an https:// upstream needs [upstream_tls]".into()));
                }
                if !r.path_prefix.starts_with('/') {
                    return Err(ctx("path_prefix must start with '/'".into()));
                }
                r.allow.validate().map_err(ctx)?;
            }
        }
        if let Some(u) = &self.upstream_tls
            && u.cert.is_some() != u.key.is_some()
        {
            return bad("upstream_tls: cert and key go together".into());
        }
        Ok(())
    }
}

impl AllowRules {
    /// Checks the patterns parse.
    pub fn validate(&self) -> Result<(), String> {
        for p in &self.spiffe_ids {
            SpiffeIdPattern::from_str(p).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Where a route or tenant sends traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// Plain HTTP to `authority` (host:port).
    Http(String),
    /// HTTPS (with the gate's client certificate if configured).
    Https {
        /// host:port.
        authority: String,
        /// Host for SNI and verification.
        host: String,
    },
    /// Raw TCP to host:port.
    Tcp(String),
}

impl Upstream {
    /// Parses `http://h:p`, `https://h:p` or `tcp://h:p`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("upstream {s:?} needs a scheme (http://, https:// or tcp://)")
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "upstream {s:?}: expected SCHEME://HOST:PORT with no path"
            ));
        }
        let with_port = |default: u16| {
            if authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                authority.to_owned()
            } else {
                format!("{authority}:{default}")
            }
        };
        match scheme {
            "http" => Ok(Upstream::Http(with_port(80))),
            "https" => {
                let authority = with_port(443);
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                Ok(Upstream::Https { authority, host })
            }
            "tcp" => {
                if authority
                    .rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                {
                    return Err(format!("upstream {s:?}: tcp:// needs a port"));
                }
                Ok(Upstream::Tcp(authority.to_owned()))
            }
            other => Err(format!("upstream {s:?}: unsupported scheme {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests;
