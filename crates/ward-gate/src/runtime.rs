//! The gate's live state, built from a [`GateConfig`] by reading every file
//! it names. A reload builds a whole new [`Runtime`] and swaps it in; a
//! failed build leaves the old one in force.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use ward_pki::inspect::CertInfo;
use ward_tls::chain_cache::{ChainCache, Limits, Lookup};
use ward_tls::config::{ClientCert, ClientOptions, ServerAuth, client_config, client_config_with};

use crate::Error;
use crate::balance::Balancer;
use crate::config::{GateConfig, IdentityHeaders, Mode, Upstream, UpstreamProtocol};
use crate::policy::{Access, Policy};

/// The pooled HTTP(S) client for upstreams.
pub type UpstreamClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector>, crate::proxy::ClientBody>;

/// What a tenant does with a connection.
#[derive(Debug)]
pub enum TenantKind {
    /// Serve HTTP and route requests.
    Http(Vec<Route>),
    /// Proxy raw bytes to `upstream` for identities `access` admits.
    Tcp {
        /// host:port.
        upstream: String,
        /// Who may connect (allow rules and/or a policy).
        access: Access,
        /// Start the upstream connection with a PROXY protocol v2 header.
        send_proxy_v2: bool,
        /// Several endpoints (`tcp_upstreams`, or `[balance]`): one is
        /// chosen per connection; `upstream` is then the first.
        balancer: Option<Arc<Balancer>>,
    },
}

/// One tenant, ready to serve.
#[derive(Debug)]
pub struct Tenant {
    /// Name.
    pub name: String,
    /// Its TLS configuration.
    pub tls: Arc<ServerConfig>,
    /// HTTP or TCP.
    pub kind: TenantKind,
    /// The gate's own URI SAN for this tenant (XFCC `By=`).
    pub by: Option<String>,
    /// Its server certificate and stapled OCSP response.
    pub staple: Arc<crate::ocsp::Staple>,
    /// When the tenant's server certificate expires.
    pub cert_not_after: OffsetDateTime,
    /// Seconds from the server certificate's notBefore to its notAfter.
    pub cert_lifetime: i64,
    /// `mode = "audit"` for the whole tenant (every HTTP route audit):
    /// the handshake lets certificate failures through and counts them,
    /// once per connection.
    pub audit: bool,
    /// Its HTTP routes differ in mode: the handshake lets certificate
    /// failures through, and each request is refused (strict route, or no
    /// route) or let through and counted (audit route) by its route.
    pub per_route: bool,
}

impl Tenant {
    /// Whether the handshake takes a missing or failing client
    /// certificate (and records why) instead of refusing it.
    pub fn lenient_handshake(&self) -> bool {
        self.audit || self.per_route
    }
}

/// One HTTP route.
#[derive(Debug)]
pub struct Route {
    /// Name.
    pub name: String,
    /// Host to match (lowercase, no port).
    pub host: Option<String>,
    /// Path prefix to match.
    pub prefix: String,
    /// Methods to match; any when empty.
    pub methods: Vec<Method>,
    /// Where to send it.
    pub upstream: Upstream,
    /// Who may use it (allow rules and/or a policy).
    pub access: Access,
    /// Identity headers for the upstream.
    pub headers: IdentityHeaders,
    /// The HTTP version spoken to the upstream.
    pub protocol: UpstreamProtocol,
    /// Bearer JWT-SVIDs the route accepts, if any.
    pub jwt: Option<Arc<crate::jwt_svid::JwtRoute>>,
    /// Several endpoints (`upstreams`, or `[balance]`): each request is
    /// sent to one of them; `upstream` is then the first.
    pub balancer: Option<Arc<Balancer>>,
    /// Audit mode (its own `mode`, or its tenant's): would-be refusals
    /// are let through and counted.
    pub audit: bool,
}

impl Route {
    /// Whether the request matches this route.
    pub fn matches(&self, host: Option<&str>, path: &str, method: &Method) -> bool {
        if let Some(want) = &self.host
            && host != Some(want.as_str())
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        path_has_prefix(path, &self.prefix)
    }
}

/// A tenant's (`audit`, `per_route`), see [`Tenant`]: a TCP tenant has
/// its own mode; an HTTP tenant is audit when every route is (by its own
/// `mode` or the tenant's), and per-route when its routes differ.
fn modes_of(t: &crate::config::TenantConfig) -> (bool, bool) {
    if t.routes.is_empty() {
        return (t.mode == Mode::Audit, false);
    }
    let audit_routes = t
        .routes
        .iter()
        .filter(|r| r.mode_in(t.mode) == Mode::Audit)
        .count();
    (
        audit_routes == t.routes.len(),
        audit_routes > 0 && audit_routes < t.routes.len(),
    )
}

/// `/api` matches `/api` and `/api/x`, not `/apix`.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix.trim_end_matches('/')) {
        Some(rest) => {
            rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/') && !rest.is_empty()
        }
        None => false,
    }
}

/// The whole live state.
#[derive(Debug)]
pub struct Runtime {
    /// The configuration it was built from.
    pub config: GateConfig,
    /// Tenants in configuration order.
    pub tenants: Vec<Arc<Tenant>>,
    by_sni: HashMap<String, usize>,
    default: Option<usize>,
    /// The pooled HTTP/1.1 upstream client (`https://` routes).
    pub client: UpstreamClient,
    /// TLS client configurations for `https://` upstreams by ALPN offer.
    pub upstream_tls: UpstreamTlsConfigs,
    /// Every certificate of every tenant's client CA bundle (DER, no
    /// duplicates): the issuers CRLs may be verified against.
    pub client_roots: Vec<Vec<u8>>,
    /// The staples this runtime's tenants use.
    pub staples: std::collections::HashSet<crate::ocsp::StapleId>,
    /// The client chain cache its tenants' verifiers share.
    pub verify_cache: ChainCache,
    /// Idle connections to `http://` upstreams, for every transport (the
    /// previous runtime's, when there was one).
    pub pool: Arc<crate::pool::UpstreamPool>,
    /// This runtime's HTTP/2 upstream connections (with its upstream TLS
    /// credentials): every request uses the current runtime's, so after a
    /// reload new requests open new connections and the old ones drain.
    pub(crate) h2: crate::pool::h2::H2Pool,
    /// SNI passthrough routes (`[[passthrough]]`).
    pub passthrough: crate::passthrough::Routes,
}

/// The long-lived services a runtime is built against (none for
/// `--check-config`).
#[derive(Debug, Default, Clone)]
pub struct Services {
    /// Client certificate revocation.
    pub revocation: Option<Arc<crate::revocation::Revocation>>,
    /// OCSP stapling.
    pub stapler: Option<Arc<crate::ocsp::Stapler>>,
    /// The gate's own identity from the CA (`[identity]`), as it is now.
    pub identity: Option<Arc<ward_client::Svid>>,
    /// The upstream connection pool to keep (a new one when `None`).
    pub pool: Option<Arc<crate::pool::UpstreamPool>>,
    /// The client chain cache to keep if its bounds are unchanged (a new
    /// one otherwise).
    pub verify_cache: Option<ChainCache>,
    /// Metrics the chain cache counts its lookups in.
    pub metrics: Option<crate::metrics::GateMetrics>,
    /// Followed partner bundles (`[[tenants.federation]]`).
    pub federation: Option<Arc<crate::federation::Federation>>,
}

impl Services {
    /// The chain cache for `limits`: the one in use if it has them, else a
    /// new one counting into the metrics.
    fn verify_cache(&self, limits: Limits) -> ChainCache {
        if let Some(cache) = &self.verify_cache
            && cache.limits() == limits
        {
            return cache.clone();
        }
        match &self.metrics {
            Some(m) => {
                let (hit, miss) = (
                    m.verify_cache.with(&["hit"]),
                    m.verify_cache.with(&["miss"]),
                );
                ChainCache::with_observer(limits, move |lookup| match lookup {
                    Lookup::Hit => hit.inc(),
                    Lookup::Miss => miss.inc(),
                })
            }
            None => ChainCache::new(limits),
        }
    }

    /// The `[identity]` certificate, for what names no certificate file.
    fn identity(&self, what: &str) -> Result<&ward_client::Svid, Error> {
        self.identity.as_deref().ok_or_else(|| {
            Error::Config(format!(
                "{what}: no certificate file is configured and the [identity] certificate is not available"
            ))
        })
    }
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key, refusing one that group or others can access
/// unless `allow_insecure` (`[tls] allow_insecure_permissions`).
pub(crate) fn read_key(path: &Path, allow_insecure: bool) -> Result<PrivateKeyDer<'static>, Error> {
    if !allow_insecure {
        ward_pki::perms::check_private_key(path).map_err(Error::Config)?;
    }
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::Config(format!("reading the private key {}: {e}", path.display())))
}

pub(crate) fn root_store(path: &Path) -> Result<RootCertStore, Error> {
    root_store_of(read_certs(path)?, path)
}

fn root_store_of(certs: Vec<CertificateDer<'static>>, path: &Path) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| {
            Error::Config(format!("{}: unusable CA certificate: {e}", path.display()))
        })?;
    }
    Ok(store)
}

impl Runtime {
    /// Reads every file and builds the state (no revocation checks, no
    /// stapling: for `--check-config`).
    pub fn build(config: GateConfig) -> Result<Self, Error> {
        Self::build_with(config, &Services::default())
    }

    /// Reads every file and builds the state; client verifiers consult the
    /// revocation state and server certificates get their staples.
    pub fn build_with(config: GateConfig, services: &Services) -> Result<Self, Error> {
        config.validate()?;
        let mut client_roots: Vec<Vec<u8>> = Vec::new();
        let verify_cache = services.verify_cache(config.tls.verify_cache_limits());
        let mut staples = std::collections::HashSet::new();
        let mut tenants = Vec::new();
        let mut by_sni = HashMap::new();
        let mut default = None;
        // Each policy file is compiled once per build, however many routes name it.
        let mut policies: HashMap<std::path::PathBuf, Arc<Policy>> = HashMap::new();
        // Routes with several endpoints (or balance settings) get a
        // balancer; its health checks start once the upstream TLS
        // configuration is known (below).
        let mut balancers: Vec<(Arc<Balancer>, UpstreamProtocol)> = Vec::new();
        let balancer_metrics = services.metrics.clone();
        let mut make_balancer = |name: &str,
                                 endpoints: &[String],
                                 settings: Option<&crate::balance::BalanceConfig>,
                                 protocol: UpstreamProtocol|
         -> Result<Option<Arc<Balancer>>, Error> {
            if endpoints.len() < 2 && settings.is_none() {
                return Ok(None);
            }
            let b = Arc::new(
                Balancer::new(
                    name,
                    endpoints,
                    settings.cloned().unwrap_or_default(),
                    balancer_metrics.as_ref(),
                )
                .map_err(|e| Error::Config(format!("{name:?}: {e}")))?,
            );
            balancers.push((b.clone(), protocol));
            Ok(Some(b))
        };
        let mut policy = |path: &Option<std::path::PathBuf>| -> Result<Option<Arc<Policy>>, Error> {
            let Some(path) = path else { return Ok(None) };
            if let Some(p) = policies.get(path) {
                return Ok(Some(p.clone()));
            }
            let p = Arc::new(Policy::load(path)?);
            policies.insert(path.clone(), p.clone());
            Ok(Some(p))
        };
        for (i, t) in config.tenants.iter().enumerate() {
            let ctx = |e: Error| Error::Config(format!("tenant {:?}: {e}", t.name));
            let (chain, key) = match (&t.cert, &t.key, &t.acme) {
                (Some(cert), Some(key), _) => (
                    read_certs(cert).map_err(ctx)?,
                    read_key(key, config.tls.allow_insecure_permissions).map_err(ctx)?,
                ),
                (_, _, Some(acme)) => {
                    crate::acme::tenant_credentials(acme, config.tls.allow_insecure_permissions)
                        .map_err(ctx)?
                }
                _ => {
                    let svid = services.identity("server certificate").map_err(ctx)?;
                    (svid.chain().to_vec(), svid.private_key())
                }
            };
            let leaf = CertInfo::from_der(&chain[0], OffsetDateTime::now_utc())
                .map_err(|e| ctx(Error::Config(e.to_string())))?;
            let cert_not_after = OffsetDateTime::parse(
                &leaf.not_after,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let cert_not_before = OffsetDateTime::parse(
                &leaf.not_before,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap_or(cert_not_after);
            let (client_ca, client_ca_name) = match &t.client_ca {
                Some(path) => (read_certs(path).map_err(ctx)?, path.clone()),
                None => (
                    services
                        .identity("client_ca")
                        .map_err(ctx)?
                        .bundle()
                        .to_vec(),
                    std::path::PathBuf::from("[identity] trust bundle"),
                ),
            };
            for c in &client_ca {
                if !client_roots.iter().any(|r| r.as_slice() == c.as_ref()) {
                    client_roots.push(c.to_vec());
                }
            }
            // Federation: partner roots join the tenant's client roots, and
            // each leaf must chain to the roots of its own trust domain. A
            // tenant trusting the [identity] bundle also takes the partners
            // the CA follows; its own entries win for the same domain.
            let mut verify_roots = client_ca.clone();
            let mut partners: Vec<(ward_pki::TrustDomain, Vec<CertificateDer<'static>>)> =
                Vec::new();
            for f in &t.federation {
                let roots = services
                    .federation
                    .as_ref()
                    .and_then(|fed| fed.bundle(f))
                    .map(|b| b.roots.clone())
                    .unwrap_or_default();
                let td = f
                    .trust_domain
                    .parse()
                    .map_err(|e| ctx(Error::Config(format!("federation.trust_domain: {e}"))))?;
                partners.push((td, roots));
            }
            if t.client_ca.is_none()
                && let Some(fed) = &services.federation
            {
                for (td, roots) in fed.from_ca() {
                    if !partners.iter().any(|(named, _)| *named == td) {
                        partners.push((td, roots));
                    }
                }
            }
            for (_, roots) in &partners {
                for r in roots {
                    if !verify_roots.contains(r) {
                        verify_roots.push(r.clone());
                    }
                }
            }
            let binding = if partners.is_empty() {
                None
            } else {
                Some(Arc::new(ward_client::federated::DomainBinding::new(
                    &client_ca, &partners,
                )))
            };
            let certified = crate::tls::certified_key(chain, key).map_err(ctx)?;
            let staple = match &services.stapler {
                Some(stapler) => {
                    let (id, staple) =
                        stapler.staple(&t.name, certified, config.revocation.ocsp_stapling);
                    staples.insert(id);
                    staple
                }
                None => crate::ocsp::Staple::fixed(certified),
            };
            let (audit, per_route) = modes_of(t);
            let tls = crate::tls::server_config(
                &staple,
                root_store_of(verify_roots, &client_ca_name).map_err(ctx)?,
                &crate::tls::TenantTls {
                    allow_tls12: config.tls.allow_tls12,
                    disable_resumption: config.tls.disable_resumption,
                    audit: audit || per_route,
                    cipher_suites: t.cipher_suites.clone(),
                    groups: t.groups.clone(),
                },
                services.revocation.clone(),
                &verify_cache,
                binding,
            )
            .map_err(ctx)?;
            let tcp_endpoints = t.tcp_endpoints().map_err(|e| ctx(Error::Config(e)))?;
            let kind = match tcp_endpoints.first() {
                Some(up) => match Upstream::parse(up).map_err(Error::Config)? {
                    Upstream::Tcp(addr) => TenantKind::Tcp {
                        upstream: addr,
                        send_proxy_v2: t.send_proxy_v2,
                        access: Access::new(&t.allow, policy(&t.policy).map_err(ctx)?)
                            .map_err(Error::Config)?,
                        balancer: make_balancer(
                            &t.name,
                            &tcp_endpoints,
                            t.balance.as_ref(),
                            UpstreamProtocol::Http1,
                        )
                        .map_err(ctx)?,
                    },
                    _ => return Err(ctx(Error::Config("tcp_upstream must be tcp://".into()))),
                },
                None => TenantKind::Http(
                    t.routes
                        .iter()
                        .map(|r| {
                            let route_policy = policy(&r.policy)
                                .map_err(|e| Error::Config(format!("route {:?}: {e}", r.name)))?;
                            let endpoints = r
                                .endpoints()
                                .map_err(|e| Error::Config(format!("route {:?}: {e}", r.name)))?;
                            Ok(Route {
                                name: r.name.clone(),
                                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                                prefix: r.path_prefix.clone(),
                                methods: r
                                    .methods
                                    .iter()
                                    .map(|m| {
                                        Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                                            .map_err(|_| Error::Config(format!("bad method {m:?}")))
                                    })
                                    .collect::<Result<_, _>>()?,
                                upstream: Upstream::parse(endpoints.first().map_or("", |e| e))
                                    .map_err(Error::Config)?,
                                balancer: make_balancer(
                                    &r.name,
                                    &endpoints,
                                    r.balance.as_ref(),
                                    r.protocol,
                                )?,
                                access: Access::new(&r.allow, route_policy)
                                    .map_err(Error::Config)?,
                                headers: r.identity_headers,
                                protocol: r.protocol,
                                audit: r.mode_in(t.mode) == Mode::Audit,
                                jwt: r
                                    .jwt_svid
                                    .as_ref()
                                    .map(|j| {
                                        crate::jwt_svid::JwtRoute::new(j).map(Arc::new).map_err(
                                            |e| Error::Config(format!("route {:?}: {e}", r.name)),
                                        )
                                    })
                                    .transpose()?,
                            })
                        })
                        .collect::<Result<_, Error>>()
                        .map_err(ctx)?,
                ),
            };
            for name in &t.sni {
                if by_sni.insert(name.to_ascii_lowercase(), i).is_some() {
                    return Err(Error::Config(format!(
                        "server name {name:?} belongs to two tenants"
                    )));
                }
            }
            if t.default || (config.tenants.len() == 1) || (t.sni.is_empty() && default.is_none()) {
                default = default.or(Some(i));
            }
            let by = match leaf.sans.uri.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            };
            tenants.push(Arc::new(Tenant {
                name: t.name.clone(),
                staple,
                tls: Arc::new(tls),
                kind,
                by,
                cert_not_after,
                cert_lifetime: (cert_not_after - cert_not_before).whole_seconds(),
                audit,
                per_route,
            }));
        }
        let (client, upstream_tls) = upstream_client(&config, services)?;
        // Health checks run for a serving gate only (not --check-config),
        // and end with this runtime's balancers.
        if services.metrics.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            for (b, protocol) in &balancers {
                let probe = crate::balance::health::Probe {
                    tls: Some(upstream_tls.for_protocol(*protocol).clone()),
                    h2: *protocol == UpstreamProtocol::H2,
                };
                crate::balance::health::start(b, &probe);
            }
        }
        Ok(Runtime {
            passthrough: crate::passthrough::Routes::new(&config.passthrough),
            config,
            tenants,
            by_sni,
            default,
            client,
            upstream_tls,
            client_roots,
            verify_cache,
            pool: services.pool.clone().unwrap_or_default(),
            h2: crate::pool::h2::H2Pool::default(),
            staples,
        })
    }

    /// Whether a tenant names `sni` (lowercase) exactly.
    pub fn serves_sni(&self, sni: &str) -> bool {
        self.by_sni.contains_key(sni)
    }

    /// The tenant for a ClientHello's server name.
    pub fn tenant_for(&self, sni: Option<&str>) -> Option<Arc<Tenant>> {
        let by_name = sni.and_then(|s| self.by_sni.get(&s.to_ascii_lowercase()).copied());
        let index = match (by_name, self.config.unknown_sni) {
            (Some(i), _) => Some(i),
            (None, crate::config::UnknownSni::Default) => self.default,
            (None, crate::config::UnknownSni::Reject) => None,
        }?;
        self.tenants.get(index).cloned()
    }
}

/// The TLS client configurations for `https://` upstreams, one per ALPN
/// offer, all with the same roots and client certificate.
#[derive(Debug, Clone)]
pub struct UpstreamTlsConfigs {
    /// Offers `http/1.1` (upgrades on `https://` upstreams).
    pub http1: Arc<rustls::ClientConfig>,
    /// Offers `h2` only (`protocol = "h2"`).
    pub h2: Arc<rustls::ClientConfig>,
    /// Offers `h2` then `http/1.1` (`protocol = "auto"`).
    pub auto: Arc<rustls::ClientConfig>,
}

impl UpstreamTlsConfigs {
    /// The configuration for `protocol`.
    pub fn for_protocol(&self, protocol: UpstreamProtocol) -> &Arc<rustls::ClientConfig> {
        match protocol {
            UpstreamProtocol::Http1 => &self.http1,
            UpstreamProtocol::H2 => &self.h2,
            UpstreamProtocol::Auto => &self.auto,
        }
    }
}

fn upstream_client(
    config: &GateConfig,
    services: &Services,
) -> Result<(UpstreamClient, UpstreamTlsConfigs), Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(config.timeouts.upstream_connect.0));
    http.set_nodelay(true);
    let (roots, cert) = match &config.upstream_tls {
        Some(u) => {
            let roots = match &u.ca {
                Some(path) => root_store(path)?,
                None => root_store_of(
                    services.identity("upstream_tls.ca")?.bundle().to_vec(),
                    Path::new("[identity] trust bundle"),
                )?,
            };
            let cert = match (&u.cert, &u.key, &services.identity) {
                (Some(c), Some(k), _) => ClientCert::Fixed(
                    read_certs(c)?,
                    read_key(k, config.tls.allow_insecure_permissions)?,
                ),
                (_, _, Some(svid)) if config.identity.is_some() => {
                    ClientCert::Fixed(svid.chain().to_vec(), svid.private_key())
                }
                _ => ClientCert::None,
            };
            (roots, cert)
        }
        None => (RootCertStore::empty(), ClientCert::None),
    };
    let with_alpn = |alpn: &[&[u8]]| {
        let options = ClientOptions {
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            ..ClientOptions::default()
        };
        client_config_with(ServerAuth::Roots(roots.clone()), same_cert(&cert), &options)
            .map(Arc::new)
            .map_err(|e| Error::Config(format!("upstream_tls: {e}")))
    };
    let configs = UpstreamTlsConfigs {
        http1: with_alpn(&[b"http/1.1"])?,
        h2: with_alpn(&[b"h2"])?,
        auto: with_alpn(&[b"h2", b"http/1.1"])?,
    };
    let tls = client_config(ServerAuth::Roots(roots), cert)
        .map_err(|e| Error::Config(format!("upstream_tls: {e}")))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    Ok((client, configs))
}

/// Another handle on the same client certificate.
fn same_cert(cert: &ClientCert) -> ClientCert {
    match cert {
        ClientCert::None => ClientCert::None,
        ClientCert::Fixed(chain, key) => ClientCert::Fixed(chain.clone(), key.clone_key()),
        ClientCert::Resolver(r) => ClientCert::Resolver(r.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_respect_segments() {
        assert!(path_has_prefix("/anything", "/"));
        assert!(path_has_prefix("/api", "/api"));
        assert!(path_has_prefix("/api/x", "/api"));
        assert!(path_has_prefix("/api/x", "/api/"));
        assert!(!path_has_prefix("/apix", "/api"));
        assert!(!path_has_prefix("/ap", "/api"));
    }

    #[test]
    fn a_tenant_is_audit_strict_or_per_route_by_its_routes_modes() {
        let text = include_str!("../../../docs/gate.example.toml");
        let config = GateConfig::from_toml(text, Path::new("/")).unwrap();
        let mut api = config.tenants[0].clone();
        let db = config.tenants[1].clone();
        assert!(api.routes.len() > 1 && db.routes.is_empty());
        // Strict everywhere: refused in the handshake.
        assert_eq!(modes_of(&api), (false, false));
        // One audit route on a strict tenant: per route.
        api.routes[0].mode = Some(Mode::Audit);
        assert_eq!(modes_of(&api), (false, true));
        // An audit tenant with that route: every route audit.
        api.mode = Mode::Audit;
        assert_eq!(modes_of(&api), (true, false));
        // An audit tenant with one strict route: per route.
        api.routes[1].mode = Some(Mode::Strict);
        assert_eq!(modes_of(&api), (false, true));
        // A strict tenant whose every route says audit is an audit tenant.
        api.mode = Mode::Strict;
        for r in &mut api.routes {
            r.mode = Some(Mode::Audit);
        }
        assert_eq!(modes_of(&api), (true, false));
        // A TCP tenant has its own mode.
        let mut db = db;
        assert_eq!(modes_of(&db), (false, false));
        db.mode = Mode::Audit;
        assert_eq!(modes_of(&db), (true, false));
    }
}
