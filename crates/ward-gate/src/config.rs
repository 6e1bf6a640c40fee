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
    // Whole seconds as `1m30s`; the balancing settings may have milliseconds.
    if d.subsec_nanos() != 0 {
        return s.serialize_str(&format!("{}ms", d.as_millis()));
    }
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

/// A limit that can be turned off: a duration (`1h`) or `"off"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => s.serialize_str(&ward_pki::issue::humanize(d)),
            None => s.serialize_str("off"),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "off" {
            return Ok(Limit(None));
        }
        parse_duration(&s)
            .map(|d| Limit(Some(d)))
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
    /// Client certificate revocation (CRLs) and OCSP stapling.
    #[serde(default)]
    pub revocation: RevocationConfig,
    /// The gate's own identity from a Ward CA, for tenants and upstreams
    /// that name no certificate files.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    /// SNI passthrough routes: the raw TLS stream goes to an upstream that
    /// terminates TLS itself (see `crate::passthrough`).
    #[serde(default)]
    pub passthrough: Vec<crate::passthrough::PassthroughConfig>,
}

/// `[identity]`: the gate obtains its certificate from a Ward CA with a
/// bootstrap token (key made here, CSR to `/v1/sign`) and renews it over
/// mTLS at two thirds of its lifetime; every renewal rebuilds the runtime,
/// so new handshakes use the new certificate and open connections keep
/// theirs. Read once at start (a reload does not re-bootstrap).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `https://host:port` of the CA.
    pub ca: String,
    /// SHA-256 fingerprint of the CA's root certificate (hex, colons
    /// optional). One of this and `ca_bundle`.
    #[serde(default)]
    pub ca_fingerprint: Option<String>,
    /// PEM file with the CA's roots. One of this and `ca_fingerprint`.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// File holding the bootstrap token; the `WARD_TOKEN` environment
    /// variable when absent. A gate that may restart needs a token with
    /// uses left (`ward token create --uses 0 --expires-in …`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Take the partner trust domains the CA follows (`GET
    /// /v1/federation`) for the tenants that trust the `[identity]`
    /// bundle (no `client_ca`). On by default.
    #[serde(default = "default_true")]
    pub federation: bool,
}

fn default_true() -> bool {
    true
}

/// `[revocation]`: CRLs for client certificates, OCSP stapling for the
/// gate's own certificates.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// CRL sources: `http://` or `https://` URLs (fetched with conditional
    /// GET) or files (DER or PEM, re-read when they change). None: no
    /// revocation checks.
    pub crl: Vec<String>,
    /// How often each source is polled.
    pub crl_refresh: Dur,
    /// When a CRL is past its nextUpdate and cannot be refreshed, accept the
    /// client certificates of its issuer (true) or refuse them (false).
    pub crl_fail_open: bool,
    /// Largest CRL accepted, in bytes.
    pub crl_max_bytes: u64,
    /// Time allowed for one CRL fetch.
    pub crl_fetch_timeout: Dur,
    /// Staple OCSP responses to the gate's server certificates that name an
    /// OCSP responder (AIA).
    pub ocsp_stapling: bool,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            crl: Vec::new(),
            crl_refresh: Dur(Duration::from_secs(60)),
            crl_fail_open: false,
            crl_max_bytes: 10 * 1024 * 1024,
            crl_fetch_timeout: Dur(Duration::from_secs(10)),
            ocsp_stapling: true,
        }
    }
}

/// Where a CRL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrlSource {
    /// An `http://` or `https://` URL.
    Url(String),
    /// A file (DER or PEM).
    File(PathBuf),
}

impl CrlSource {
    /// Parses a source: a URL when it has a scheme, else a path.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("an empty CRL source".into());
        }
        match s.split_once("://") {
            Some((scheme, _)) => {
                if !matches!(scheme, "http" | "https") {
                    return Err(format!(
                        "CRL source {s:?}: only http:// and https:// URLs (or a file path) are supported"
                    ));
                }
                ward_pki::uri::check_url(s, &["http", "https"])
                    .map_err(|e| format!("CRL source {s:?} {e}"))?;
                let uri: hyper::Uri = s.parse().map_err(|e| format!("CRL source {s:?}: {e}"))?;
                if uri.host().is_none_or(str::is_empty) {
                    return Err(format!("CRL source {s:?} has no host"));
                }
                Ok(CrlSource::Url(s.to_owned()))
            }
            None => Ok(CrlSource::File(PathBuf::from(s))),
        }
    }
}

impl std::fmt::Display for CrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrlSource::Url(u) => f.write_str(u),
            CrlSource::File(p) => write!(f, "{}", p.display()),
        }
    }
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
    /// Networks whose connections are proxies the gate trusts: their
    /// `x-forwarded-for` is kept (the gate appends the address it sees),
    /// and so are `forwarded`, `x-real-ip` and `x-forwarded-host`. From
    /// anyone else these fields are dropped (see `crate::forwarding`).
    #[serde(default)]
    pub trusted_proxies: Vec<crate::forwarding::Cidr>,
    /// Load balancers (networks) whose connections start with a PROXY
    /// protocol header (v1 or v2), required from them; the client address
    /// it carries is the one audit lines, policies and headers see. A
    /// header from anyone else is refused.
    #[serde(default)]
    pub proxy_protocol_from: Vec<crate::forwarding::Cidr>,
}

fn default_max_connections() -> usize {
    10_000
}

/// `[tls]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Also accept TLS 1.2 (ECDHE + AEAD suites only). Off by default.
    pub allow_tls12: bool,
    /// Re-check revocation on resumed sessions by disabling TLS 1.3 tickets.
    pub disable_resumption: bool,
    /// Load private keys that group or others can access (refused by
    /// default, as ssh's `StrictModes` does).
    pub allow_insecure_permissions: bool,
    /// Client chains whose path validation is remembered (keyed by their
    /// exact DER and the tenant's client CAs, only within the
    /// certificates' validity; revocation and EKU are still checked on
    /// every handshake). 0 turns the cache off.
    pub verify_cache_entries: usize,
    /// Bytes the chain cache may hold (the chains' DER plus about 100
    /// bytes each). 0 turns the cache off.
    pub verify_cache_bytes: usize,
}

impl Default for TlsConfig {
    fn default() -> Self {
        let cache = ward_tls::chain_cache::Limits::default();
        TlsConfig {
            allow_tls12: false,
            disable_resumption: false,
            allow_insecure_permissions: false,
            verify_cache_entries: cache.entries,
            verify_cache_bytes: cache.bytes,
        }
    }
}

impl TlsConfig {
    /// The chain cache's bounds.
    pub fn verify_cache_limits(&self) -> ward_tls::chain_cache::Limits {
        ward_tls::chain_cache::Limits {
            entries: self.verify_cache_entries,
            bytes: self.verify_cache_bytes,
        }
    }
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
    /// Idle time after which a connection (or TCP proxy) is closed; an
    /// HTTP connection is idle while no request is in flight (for HTTP/2:
    /// no open stream; it then gets GOAWAY).
    pub idle: Dur,
    /// Time given to in-flight requests after SIGTERM.
    pub drain: Dur,
    /// Longest life of an HTTP connection: then HTTP/2 gets GOAWAY and
    /// HTTP/1.1 `connection: close` on its next response; in-flight
    /// requests get `drain` to finish. `"off"`: no limit.
    pub max_connection_age: Limit,
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
            max_connection_age: Limit(Some(Duration::from_secs(3600))),
        }
    }
}

impl Timeouts {
    /// The connection age limit; `None` when it is off.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_connection_age.0
    }

    /// The HTTP idle limit (durations are never zero; `None` only if one
    /// were).
    pub fn idle_limit(&self) -> Option<Duration> {
        (!self.idle.0.is_zero()).then_some(self.idle.0)
    }
}

/// `[upstream_tls]`: how the gate talks to `https://` upstreams.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Roots that upstream server certificates must chain to; the
    /// `[identity]` trust bundle when absent.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The gate's client certificate chain (mTLS to the upstream); the
    /// `[identity]` certificate when absent and `[identity]` is set.
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
    /// Server certificate chain (PEM, leaf first); the `[identity]`
    /// certificate when absent.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM); with `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Roots client certificates must chain to; the `[identity]` trust
    /// bundle when absent.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// A raw TCP upstream (`tcp://host:port`): the tenant proxies bytes
    /// instead of HTTP, and `allow` decides who may connect.
    #[serde(default)]
    pub tcp_upstream: Option<String>,
    /// Several raw TCP upstreams (`tcp://host:port` each), one chosen per
    /// connection (see `docs/load-balancing.md`); excludes `tcp_upstream`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_upstreams: Vec<String>,
    /// Load balancing, health checks, ejection and limits for
    /// `tcp_upstreams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<crate::balance::BalanceConfig>,
    /// Who may open a TCP connection (TCP tenants only).
    #[serde(default)]
    pub allow: AllowRules,
    /// A Rego policy deciding who may connect (TCP tenants only).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// HTTP routes, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Start each connection to the `tcp_upstream` with a PROXY protocol
    /// v2 header carrying the client's address (TCP tenants only).
    #[serde(default)]
    pub send_proxy_v2: bool,
    /// `strict` (default): client certificates and authorization are
    /// enforced. `audit`: certificates are requested but optional, and
    /// what strict mode would refuse is let through, logged and counted
    /// (`ward_gate_would_refuse_total{reason}`); upstreams still see only
    /// verified identities.
    #[serde(default)]
    pub mode: Mode,
    /// TLS cipher suites this tenant accepts, in order of preference
    /// (`TLS_AES_256_GCM_SHA384` or rustls' `TLS13_AES_256_GCM_SHA384`);
    /// empty: Ward's defaults.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// Key-exchange groups this tenant accepts, in order of preference
    /// (`X25519MLKEM768`, `X25519`, `secp256r1`, `secp384r1`); empty:
    /// Ward's defaults.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Obtain and renew the server certificate over ACME (instead of
    /// `cert`/`key`); see docs/acme-client.md.
    #[serde(default)]
    pub acme: Option<ward_acme::AcmeSettings>,
    /// Partner trust domains whose clients this tenant accepts, verified
    /// against the partner's roots (SPIFFE federation, `docs/federation.md`).
    #[serde(default)]
    pub federation: Vec<crate::federation::FederationConfig>,
}

/// How strictly a tenant enforces client certificates and authorization.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse what fails (the default).
    #[default]
    Strict,
    /// Let it through, log it and count it: for rolling mTLS out.
    Audit,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Mode::Strict),
            "audit" => Ok(Mode::Audit),
            other => Err(format!("unknown mode {other:?} (strict or audit)")),
        }
    }
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
    /// `http://host:port` or `https://host:port`; or use `upstreams`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upstream: String,
    /// Several endpoints (`http://…` or `https://…`, all the same scheme)
    /// sharing the route's traffic; excludes `upstream`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    /// Load balancing, health checks, ejection, retries and limits for
    /// the route's endpoints (`docs/load-balancing.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<crate::balance::BalanceConfig>,
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
    /// HTTP version spoken to the upstream: `http1` (default), `h2`
    /// (prior knowledge for `http://`, ALPN `h2` for `https://`) or `auto`
    /// (ALPN for `https://`, HTTP/1.1 for `http://`).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Accept `Authorization: Bearer <JWT-SVID>` (see `crate::jwt_svid`).
    #[serde(default)]
    pub jwt_svid: Option<crate::jwt_svid::JwtSvidConfig>,
    /// `strict` or `audit` for this route alone; absent: the tenant's
    /// `mode`. A tenant whose routes differ in mode accepts every
    /// handshake and refuses, on its strict routes, at the HTTP layer
    /// (see `crate::audit_mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// The HTTP version the gate speaks to a route's upstream.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (upgrades such as WebSocket pass through).
    #[default]
    Http1,
    /// HTTP/2 only: prior knowledge over `http://`, ALPN `h2` over `https://`.
    H2,
    /// HTTP/2 when the `https://` upstream offers it by ALPN, else HTTP/1.1.
    Auto,
}

impl FromStr for UpstreamProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http1" => Ok(UpstreamProtocol::Http1),
            "h2" => Ok(UpstreamProtocol::H2),
            "auto" => Ok(UpstreamProtocol::Auto),
            other => Err(format!(
                "unknown upstream protocol {other:?} (http1, h2 or auto)"
            )),
        }
    }
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

impl RouteConfig {
    /// The route's mode: its own, or else its tenant's.
    pub fn mode_in(&self, tenant: Mode) -> Mode {
        self.mode.unwrap_or(tenant)
    }

    /// The route's endpoints as written: `upstream`, or the `upstreams`
    /// list (exactly one of the two, at most
    /// [`crate::balance::MAX_ENDPOINTS`], no duplicates).
    pub fn endpoints(&self) -> Result<Vec<String>, String> {
        match (self.upstream.is_empty(), self.upstreams.is_empty()) {
            (false, false) => Err("upstream and upstreams exclude each other".into()),
            (true, true) => Err("an upstream (or upstreams) is required".into()),
            (false, true) => Ok(vec![self.upstream.clone()]),
            (true, false) => {
                crate::balance::check_endpoint_list(&self.upstreams)?;
                Ok(self.upstreams.clone())
            }
        }
    }
}

impl TenantConfig {
    /// The TCP tenant's endpoints: `tcp_upstream` or `tcp_upstreams`
    /// (empty for an HTTP tenant).
    pub fn tcp_endpoints(&self) -> Result<Vec<String>, String> {
        match &self.tcp_upstream {
            Some(up) => Ok(vec![up.clone()]),
            None => {
                if !self.tcp_upstreams.is_empty() {
                    crate::balance::check_endpoint_list(&self.tcp_upstreams)?;
                }
                Ok(self.tcp_upstreams.clone())
            }
        }
    }
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
            t.cert.iter_mut().for_each(fix);
            t.key.iter_mut().for_each(fix);
            t.client_ca.iter_mut().for_each(fix);
            t.policy.iter_mut().for_each(fix);
            for f in &mut t.federation {
                f.ca_bundle.iter_mut().for_each(fix);
                f.bundle.iter_mut().for_each(fix);
            }
            for r in &mut t.routes {
                r.policy.iter_mut().for_each(fix);
                if let Some(j) = &mut r.jwt_svid {
                    fix(&mut j.bundle);
                }
            }
            if let Some(a) = &mut t.acme {
                fix(&mut a.state_dir);
                a.ca_bundle.iter_mut().for_each(fix);
                a.eab_hmac_file.iter_mut().for_each(fix);
                a.dns_hook.iter_mut().for_each(fix);
            }
        }
        if let Some(id) = &mut self.identity {
            id.ca_bundle.iter_mut().for_each(fix);
            id.token_file.iter_mut().for_each(fix);
        }
        if let Some(u) = &mut self.upstream_tls {
            u.ca.iter_mut().for_each(fix);
            if let Some(c) = &mut u.cert {
                fix(c);
            }
            if let Some(k) = &mut u.key {
                fix(k);
            }
        }
        for source in &mut self.revocation.crl {
            if !source.contains("://") && !source.is_empty() {
                let mut p = PathBuf::from(&*source);
                fix(&mut p);
                *source = p.display().to_string();
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
            if t.tcp_upstream.is_some() && !t.tcp_upstreams.is_empty() {
                return bad(format!(
                    "tenant {:?}: tcp_upstream and tcp_upstreams exclude each other",
                    t.name
                ));
            }
            let tcp = t
                .tcp_upstream
                .clone()
                .or_else(|| t.tcp_upstreams.first().cloned());
            if t.balance.is_some() && tcp.is_none() {
                return bad(format!(
                    "tenant {:?}: [balance] on a tenant applies to tcp_upstreams; put it on the routes",
                    t.name
                ));
            }
            t.tcp_endpoints()
                .map_err(|e| Error::Config(format!("tenant {:?}: {e}", t.name)))?;
            for up in &t.tcp_upstreams {
                if !matches!(Upstream::parse(up), Ok(Upstream::Tcp(_))) {
                    return bad(format!(
                        "tenant {:?}: tcp_upstreams entry {up:?} must be tcp://HOST:PORT",
                        t.name
                    ));
                }
            }
            if let Some(b) = &t.balance {
                b.validate(true)
                    .map_err(|e| Error::Config(format!("tenant {:?}: balance: {e}", t.name)))?;
            }
            match (&tcp, t.routes.is_empty()) {
                (Some(_), false) => {
                    return bad(format!(
                        "tenant {:?}: tcp_upstream and routes exclude each other",
                        t.name
                    ));
                }
                (None, true) => return bad(format!("tenant {:?} has no routes", t.name)),
                _ => {}
            }
            match (&t.cert, &t.key) {
                (Some(_), None) | (None, Some(_)) => {
                    return bad(format!("tenant {:?}: cert and key go together", t.name));
                }
                (Some(_), Some(_)) if t.acme.is_some() => {
                    return bad(format!(
                        "tenant {:?}: cert/key and [tenants.acme] exclude each other",
                        t.name
                    ));
                }
                (None, None) if self.identity.is_none() && t.acme.is_none() => {
                    return bad(format!(
                        "tenant {:?}: cert and key are required without [identity]",
                        t.name
                    ));
                }
                _ => {}
            }
            if let Some(a) = &t.acme {
                a.validate()
                    .map_err(|e| Error::Config(format!("tenant {:?}: {e}", t.name)))?;
            }
            for f in &t.federation {
                if let Err(e) = f.validate() {
                    return bad(format!("tenant {:?}: {e}", t.name));
                }
            }
            if t.client_ca.is_none() && self.identity.is_none() {
                return bad(format!(
                    "tenant {:?}: client_ca is required without [identity]",
                    t.name
                ));
            }
            if t.policy.is_some() && tcp.is_none() {
                return bad(format!(
                    "tenant {:?}: a tenant-level policy applies to TCP tenants; put it on the routes",
                    t.name
                ));
            }
            if t.send_proxy_v2 && tcp.is_none() {
                return bad(format!(
                    "tenant {:?}: send_proxy_v2 applies to TCP tenants",
                    t.name
                ));
            }
            if let Some(up) = &tcp {
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
                let endpoints = r.endpoints().map_err(ctx)?;
                let mut schemes = std::collections::HashSet::new();
                for e in &endpoints {
                    let up = Upstream::parse(e).map_err(ctx)?;
                    if matches!(up, Upstream::Tcp(_)) {
                        return Err(ctx(
                            "HTTP routes need an http:// or https:// upstream".into()
                        ));
                    }
                    if matches!(up, Upstream::Https { .. }) && self.upstream_tls.is_none() {
                        return Err(ctx("an https:// upstream needs [upstream_tls]".into()));
                    }
                    schemes.insert(matches!(up, Upstream::Https { .. }));
                }
                if schemes.len() > 1 {
                    return Err(ctx(
                        "upstreams must all be http:// or all be https://".into()
                    ));
                }
                if let Some(b) = &r.balance {
                    b.validate(false)
                        .map_err(|e| ctx(format!("balance: {e}")))?;
                }
                if !r.path_prefix.starts_with('/') {
                    return Err(ctx("path_prefix must start with '/'".into()));
                }
                r.allow.validate().map_err(ctx)?;
                if let Some(j) = &r.jwt_svid {
                    j.validate().map_err(ctx)?;
                }
            }
        }
        if let Some(u) = &self.upstream_tls
            && u.cert.is_some() != u.key.is_some()
        {
            return bad("upstream_tls: cert and key go together".into());
        }
        if let Some(u) = &self.upstream_tls
            && u.ca.is_none()
            && self.identity.is_none()
        {
            return bad("upstream_tls: ca is required without [identity]".into());
        }
        if let Some(id) = &self.identity {
            id.validate()?;
        }
        let tenant_snis: Vec<&str> = self
            .tenants
            .iter()
            .flat_map(|t| t.sni.iter().map(String::as_str))
            .collect();
        crate::passthrough::validate(&self.passthrough, &tenant_snis).map_err(Error::Config)?;
        self.revocation.validate()
    }
}

impl IdentityConfig {
    /// Checks the CA URL and that exactly one way of trusting it is given.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(format!("identity: {m}")));
        if !self.ca.starts_with("https://") {
            return bad("ca must be an https:// URL");
        }
        ward_pki::uri::check_url(&self.ca, &["https"])
            .map_err(|e| Error::Config(format!("identity: ca {:?} {e}", self.ca)))?;
        match (&self.ca_fingerprint, &self.ca_bundle) {
            (Some(_), Some(_)) => bad("ca_fingerprint and ca_bundle exclude each other"),
            (None, None) => bad("one of ca_fingerprint and ca_bundle is required"),
            (Some(fp), None) => fp
                .parse::<ward_pki::Fingerprint>()
                .map(|_| ())
                .map_err(|e| Error::Config(format!("identity: ca_fingerprint: {e}"))),
            (None, Some(_)) => Ok(()),
        }
    }
}

impl RevocationConfig {
    /// Checks the sources parse and the numbers are sane.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(format!("revocation: {m}")));
        for s in &self.crl {
            CrlSource::parse(s).map_err(|e| Error::Config(format!("revocation: {e}")))?;
        }
        if self.crl_refresh.0 < Duration::from_millis(100) {
            return bad("crl_refresh must be at least 100ms".into());
        }
        if self.crl_fetch_timeout.0.is_zero() {
            return bad("crl_fetch_timeout must be positive".into());
        }
        if self.crl_max_bytes < 1024 {
            return bad("crl_max_bytes must be at least 1024".into());
        }
        Ok(())
    }

    /// The parsed sources (valid after `validate`).
    pub fn sources(&self) -> Vec<CrlSource> {
        self.crl
            .iter()
            .filter_map(|s| CrlSource::parse(s).ok())
            .collect()
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
        // The authority becomes the Host header and the TLS name: no
        // control character, space or non-ASCII byte may get that far.
        ward_pki::uri::check_chars(s).map_err(|e| format!("upstream {s:?} {e}"))?;
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
