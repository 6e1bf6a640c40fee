//! Builders for every rustls configuration Ward uses: servers (mTLS with a
//! client verifier, or plain) and clients (roots or a verifier from
//! [`crate::verifier`], with or without a client certificate).
//!
//! Protocol versions, key-exchange groups and cipher suites are chosen
//! here and in [`crate::provider`], nowhere else: TLS 1.3 only unless a
//! gate tenant opts into TLS 1.2 (ECDHE with AEAD suites only), or a probe
//! examines a legacy endpoint.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{cipher_suite as cs, kx_group};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;
use crate::verifier::ClientVerifier;

/// Whether and how a server asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A client certificate is requested and, when sent, must chain to these
    /// roots; clients without one are let through.
    Optional(Arc<RootCertStore>),
    /// A client certificate chaining to these roots is required.
    Required(Arc<RootCertStore>),
    /// A verifier built elsewhere (normally a [`ClientVerifier`] with a
    /// caller's check: SPIFFE-aware, CRL-aware, …).
    Custom(Arc<dyn ClientCertVerifier>),
}

/// The few protocol choices a server may make.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Accept TLS 1.2 too (ECDHE with AEAD suites only).
    pub allow_tls12: bool,
    /// Choose the suite in the server's order, TLS13_AES_128_GCM_SHA256
    /// first: the cheapest suite every TLS 1.3 client offers (clients such
    /// as rustls and OpenSSL list AES-256-GCM first; SHA-256 runs on SHA-NI).
    pub prefer_aes128: bool,
    /// Issue no session tickets and keep no session cache.
    pub disable_resumption: bool,
    /// Cipher suites to accept, in order of preference (IANA names such as
    /// `TLS_AES_256_GCM_SHA384`, or rustls' `TLS13_AES_256_GCM_SHA384`);
    /// empty: the defaults. Only suites the defaults hold can be named.
    pub cipher_suites: Vec<String>,
    /// Key-exchange groups to accept, in order of preference
    /// (`X25519MLKEM768`, `X25519`, `secp256r1`, `secp384r1`); empty: the
    /// defaults ([`crate::provider`]).
    pub groups: Vec<String>,
}

/// Keeps the suites or groups named in `wanted`, in that order: an
/// unknown name is an error, not a silent fallback.
fn select<T: Copy>(
    available: &[T],
    wanted: &[String],
    name: impl Fn(&T) -> Vec<String>,
    what: &str,
) -> Result<Vec<T>, Error> {
    wanted
        .iter()
        .map(|w| {
            available
                .iter()
                .find(|a| name(a).iter().any(|n| n.eq_ignore_ascii_case(w)))
                .copied()
                .ok_or_else(|| Error::Input(format!("unknown or unavailable {what} {w:?}")))
        })
        .collect()
}

/// Ward's server configuration: TLS 1.3 only, [`crate::provider`], the
/// certificate from `resolver`, client certificates as `client_auth` says.
///
/// No ALPN protocols are set; for HTTP use [`crate::server::set_http_alpn`].
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_auth: ClientAuth,
) -> Result<ServerConfig, Error> {
    server_config_with(resolver, client_auth, &ServerOptions::default())
}

/// [`server_config`] with the protocol choices of `options`.
pub fn server_config_with(
    resolver: Arc<dyn ResolvesServerCert>,
    client_auth: ClientAuth,
    options: &ServerOptions,
) -> Result<ServerConfig, Error> {
    let mut provider = Arc::unwrap_or_clone(crate::provider());
    let versions: &[&SupportedProtocolVersion] = if options.allow_tls12 {
        tls12_aead_suites(&mut provider);
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        crate::TLS13_ONLY
    };
    if options.prefer_aes128 && options.cipher_suites.is_empty() {
        prefer_aes128(&mut provider);
    }
    if !options.cipher_suites.is_empty() {
        provider.cipher_suites = select(
            &provider.cipher_suites,
            &options.cipher_suites,
            |s| {
                let own = s.suite().as_str().unwrap_or("").to_owned();
                vec![own.replacen("TLS13_", "TLS_", 1), own]
            },
            "cipher suite",
        )?;
        if !provider
            .cipher_suites
            .iter()
            .any(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)))
        {
            return Err(Error::Input(
                "cipher_suites must include a TLS 1.3 suite".into(),
            ));
        }
    }
    if !options.groups.is_empty() {
        provider.kx_groups = select(
            rustls::crypto::aws_lc_rs::ALL_KX_GROUPS,
            &options.groups,
            |g| vec![g.name().as_str().unwrap_or("").to_owned()],
            "key-exchange group",
        )?;
    }
    let builder =
        ServerConfig::builder_with_provider(Arc::new(provider)).with_protocol_versions(versions)?;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match client_auth {
        ClientAuth::None => None,
        ClientAuth::Optional(roots) => Some(Arc::new(ClientVerifier::optional(roots)?)),
        ClientAuth::Required(roots) => Some(Arc::new(ClientVerifier::required(roots)?)),
        ClientAuth::Custom(verifier) => Some(verifier),
    };
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(v),
    };
    let mut config = builder.with_cert_resolver(resolver);
    if options.prefer_aes128 || !options.cipher_suites.is_empty() {
        config.ignore_client_order = true;
    }
    if options.disable_resumption {
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Ok(config)
}

/// TLS 1.2 suites allowed when TLS 1.2 is opted into: ECDHE with AEAD only.
fn tls12_aead_suites(provider: &mut CryptoProvider) {
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
}

/// Puts TLS13_AES_128_GCM_SHA256 first, keeping the rest in their order.
fn prefer_aes128(provider: &mut CryptoProvider) {
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}

/// How a client judges the server.
#[derive(Debug, Clone)]
pub enum ServerAuth {
    /// The standard WebPKI check against these roots.
    Roots(RootCertStore),
    /// A verifier from [`crate::verifier`] or [`crate::danger`].
    Verifier(Arc<dyn ServerCertVerifier>),
}

impl ServerAuth {
    /// The standard check against `roots`, refusing a root rustls cannot use.
    pub fn roots(roots: &[CertificateDer<'static>]) -> Result<Self, rustls::Error> {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root.clone())?;
        }
        Ok(ServerAuth::Roots(store))
    }
}

/// What a client presents when the server asks for a certificate.
#[derive(Debug)]
pub enum ClientCert {
    /// Nothing.
    None,
    /// A fixed chain (leaf first) and its key.
    Fixed(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// Whatever the store holds at each handshake (normally
    /// [`crate::credentials::Credentials`]).
    Resolver(Arc<dyn ResolvesClientCert>),
}

/// A key-exchange group a client may be restricted to (benchmarks measure
/// one group at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KxGroup {
    /// X25519 alone.
    X25519,
    /// The hybrid X25519MLKEM768 alone.
    X25519Mlkem768,
    /// NIST P-256 alone.
    P256,
}

/// The few protocol choices a client may make.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Offer only this group instead of Ward's list.
    pub kx_group: Option<KxGroup>,
    /// Accept every version rustls knows (TLS 1.2 too), to examine what a
    /// legacy endpoint presents. Never for authenticated connections.
    pub examine_legacy: bool,
    /// ALPN protocols to offer, most preferred first (none when empty).
    pub alpn: Vec<Vec<u8>>,
}

/// Ward's client configuration: TLS 1.3 only, [`crate::provider`], the
/// server judged as `server` says, `cert` presented when asked.
pub fn client_config(server: ServerAuth, cert: ClientCert) -> Result<ClientConfig, rustls::Error> {
    client_config_with(server, cert, &ClientOptions::default())
}

/// [`client_config`] with the protocol choices of `options`.
pub fn client_config_with(
    server: ServerAuth,
    cert: ClientCert,
    options: &ClientOptions,
) -> Result<ClientConfig, rustls::Error> {
    let mut provider = Arc::unwrap_or_clone(crate::provider());
    if let Some(group) = options.kx_group {
        provider.kx_groups = vec![match group {
            KxGroup::X25519 => kx_group::X25519,
            KxGroup::X25519Mlkem768 => kx_group::X25519MLKEM768,
            KxGroup::P256 => kx_group::SECP256R1,
        }];
    }
    let versions = if options.examine_legacy {
        rustls::ALL_VERSIONS
    } else {
        crate::TLS13_ONLY
    };
    let builder =
        ClientConfig::builder_with_provider(Arc::new(provider)).with_protocol_versions(versions)?;
    let builder = match server {
        ServerAuth::Roots(roots) => builder.with_root_certificates(roots),
        ServerAuth::Verifier(verifier) => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier),
    };
    let mut config = match cert {
        ClientCert::None => builder.with_no_client_auth(),
        ClientCert::Fixed(chain, key) => builder.with_client_auth_cert(chain, key)?,
        ClientCert::Resolver(resolver) => builder.with_client_cert_resolver(resolver),
    };
    config.alpn_protocols.clone_from(&options.alpn);
    Ok(config)
}
