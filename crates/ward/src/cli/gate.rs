//! `ward gate …`: the mTLS-enforcing proxy.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ward_gate::Source;
use ward_gate::config::{
    AllowRules, Dur, GateConfig, IdentityConfig, IdentityHeaders, ListenConfig, RevocationConfig,
    RouteConfig, TenantConfig, TlsConfig, UnknownSni, UpstreamTls,
};

use super::Outcome;

#[derive(Debug, Subcommand)]
pub(crate) enum GateCommand {
    /// Enforce mTLS and identity-based authorization in front of a service.
    Serve(Box<ServeArgs>),
    /// Outbound mode: plaintext TCP in, mTLS out to one target.
    Client(ClientArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration (routes, tenants, policies); see docs/gate.example.toml.
    #[arg(long, conflicts_with_all = ["listen", "cert", "key", "client_ca", "upstream", "ca", "acme_directory"])]
    config: Option<PathBuf>,
    /// Validate the configuration and every file it names, then exit.
    #[arg(long)]
    check_config: bool,
    /// mTLS listen address (flag form).
    #[arg(long, required_unless_present = "config")]
    listen: Option<String>,
    /// Server certificate chain (flag form; or the identity from --ca).
    #[arg(long, required_unless_present_any = ["config", "ca", "acme_directory"], requires = "key")]
    cert: Option<PathBuf>,
    /// Server private key (flag form).
    #[arg(long, required_unless_present_any = ["config", "ca", "acme_directory"], requires = "cert")]
    key: Option<PathBuf>,
    /// Roots client certificates must chain to (flag form; default with
    /// --ca: the CA's roots).
    #[arg(long, required_unless_present_any = ["config", "ca"])]
    client_ca: Option<PathBuf>,
    /// Obtain the gate's identity from this Ward CA (https://HOST:PORT)
    /// with a bootstrap token, renewed automatically (flag form).
    #[arg(long, requires = "token_file")]
    ca: Option<String>,
    /// SHA-256 fingerprint of the CA's root (with --ca).
    #[arg(long, requires = "ca", conflicts_with = "ca_bundle")]
    ca_fingerprint: Option<String>,
    /// PEM file of the CA's roots (with --ca).
    #[arg(long, requires = "ca")]
    ca_bundle: Option<PathBuf>,
    /// File holding the bootstrap token (with --ca).
    #[arg(long, requires = "ca")]
    token_file: Option<PathBuf>,
    /// http://, https:// or tcp:// upstream (flag form).
    #[arg(long, required_unless_present = "config")]
    upstream: Option<String>,
    /// HTTP version to the upstream: http1, h2 (prior knowledge for
    /// http://, ALPN for https://) or auto (ALPN) (flag form).
    #[arg(long, default_value = "http1", conflicts_with = "config")]
    upstream_protocol: ward_gate::config::UpstreamProtocol,
    /// Allowed SPIFFE ID, exact or prefix/* (repeatable; none allows nobody
    /// unless --policy is given).
    #[arg(long)]
    allow_spiffe_id: Vec<String>,
    /// Rego policy (package ward.gate) the upstream's requests must satisfy (flag form).
    #[arg(long, conflicts_with = "config")]
    policy: Option<PathBuf>,
    /// Admin listener for /healthz, /readyz, /metrics.
    #[arg(long)]
    admin: Option<String>,
    /// CA bundle for https:// upstreams.
    #[arg(long)]
    upstream_ca: Option<PathBuf>,
    /// Client certificate the gate presents to https:// upstreams.
    #[arg(long, requires = "upstream_key")]
    upstream_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, requires = "upstream_cert")]
    upstream_key: Option<PathBuf>,
    /// Also accept TLS 1.2 (ECDHE + AEAD only).
    #[arg(long)]
    allow_tls12: bool,
    /// Client chains whose path validation the gate remembers (flag form;
    /// in a config file: [tls] verify_cache_entries). 0 turns it off.
    #[arg(long, default_value_t = TlsConfig::default().verify_cache_entries, conflicts_with = "config")]
    verify_cache_entries: usize,
    /// Load private keys that group or others can read (flag form; in a
    /// config file: [tls] allow_insecure_permissions).
    #[arg(long, conflicts_with = "config")]
    allow_insecure_permissions: bool,
    /// CRL for client certificates: an http:// or https:// URL (e.g. the
    /// CA's /v1/crl) or a file, DER or PEM (repeatable; flag form).
    #[arg(long, value_name = "URL-or-FILE", conflicts_with = "config")]
    crl: Vec<String>,
    /// How often the CRLs are re-fetched (flag form).
    #[arg(long, default_value = "1m", value_parser = super::duration_arg, conflicts_with = "config")]
    crl_refresh: std::time::Duration,
    /// Accept client certificates when their issuer's CRL is past its
    /// nextUpdate and cannot be refreshed (default: refuse them).
    #[arg(long, conflicts_with = "config")]
    crl_fail_open: bool,
    /// Do not staple OCSP responses to the server certificate (flag form).
    #[arg(long, conflicts_with = "config")]
    no_ocsp_stapling: bool,
    /// Trust the forwarding headers (x-forwarded-for, forwarded,
    /// x-real-ip, x-forwarded-host) of clients from this network, e.g. a
    /// load balancer's (repeatable; flag form). Others' are dropped.
    #[arg(long, value_name = "CIDR", conflicts_with = "config")]
    trust_forwarded_from: Vec<ward_gate::forwarding::Cidr>,
    /// Load balancers whose connections start with a PROXY protocol header
    /// (v1 or v2); repeatable.
    #[arg(long, value_name = "CIDR", conflicts_with = "config")]
    proxy_protocol_from: Vec<ward_gate::forwarding::Cidr>,
    /// `strict` (default) or `audit`: in audit mode client certificates are
    /// optional and would-be refusals are let through, logged and counted.
    #[arg(long, default_value = "strict", conflicts_with = "config")]
    mode: ward_gate::config::Mode,
    /// Where audit lines go: stdout, stderr, off, or a file path.
    #[arg(long, default_value = "stdout")]
    audit_log: String,
    /// Log format on stderr.
    #[arg(long, default_value = "text")]
    log_format: ward_telemetry::LogFormat,
    /// The server certificate from an ACME CA (flag form; in a config
    /// file: [tenants.acme]).
    #[command(flatten)]
    acme: super::acme_client::AcmeClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// Plaintext listen address, e.g. 127.0.0.1:7000 (port 0 picks one).
    #[arg(long)]
    listen: String,
    /// The mTLS target, HOST:PORT.
    #[arg(long)]
    target: String,
    /// Client certificate chain presented to the target.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key.
    #[arg(long)]
    key: PathBuf,
    /// Roots the target's certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// Server name to send and verify (default: the target's host).
    #[arg(long)]
    sni: Option<String>,
    /// SPIFFE ID the target must present, exact or prefix/*.
    #[arg(long)]
    verify_spiffe_id: Option<String>,
    /// Close a connection after this long with no bytes either way.
    #[arg(long, default_value = "5m", value_parser = super::duration_arg)]
    idle_timeout: std::time::Duration,
    /// Load a private key that group or others can read.
    #[arg(long)]
    allow_insecure_permissions: bool,
    /// Time allowed to connect to the target and finish the handshake.
    #[arg(long, default_value = "10s", value_parser = super::duration_arg)]
    connect_timeout: std::time::Duration,
    /// Log format on stderr.
    #[arg(long, default_value = "text")]
    log_format: ward_telemetry::LogFormat,
}

pub(crate) async fn run(cmd: GateCommand) -> anyhow::Result<Outcome> {
    match cmd {
        GateCommand::Serve(args) => serve(*args).await,
        GateCommand::Client(args) => client(args).await,
    }
}

/// SIGHUP → a message on the returned channel (never fires elsewhere).
fn hangups() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = tx.send(()).await;
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok(rx)
}

async fn client(args: ClientArgs) -> anyhow::Result<Outcome> {
    let mut options = ward_gate::outbound::ClientOptions::new(
        args.listen,
        args.target,
        args.cert,
        args.key,
        args.ca,
    );
    options.sni = args.sni;
    options.verify_spiffe_id = args.verify_spiffe_id;
    options.idle = args.idle_timeout;
    options.connect_timeout = args.connect_timeout;
    options.allow_insecure_permissions = args.allow_insecure_permissions;
    ward_telemetry::init_tracing(args.log_format, "info")?;
    ward_gate::outbound::run(
        options,
        |addr| eprintln!("ward gate client: listening on {addr}"),
        hangups()?,
        super::shutdown_signal(),
    )
    .await
    .context("the gate client failed")?;
    Ok(Outcome::Success)
}

fn flag_config(args: &ServeArgs) -> anyhow::Result<GateConfig> {
    let upstream = args.upstream.clone().context("--upstream is required")?;
    let allow = AllowRules {
        spiffe_ids: args.allow_spiffe_id.clone(),
        ..AllowRules::default()
    };
    let tcp = upstream.starts_with("tcp://");
    let tenant = TenantConfig {
        name: "default".into(),
        sni: Vec::new(),
        default: true,
        cert: args.cert.clone(),
        key: args.key.clone(),
        client_ca: args.client_ca.clone(),
        tcp_upstream: tcp.then(|| upstream.clone()),
        tcp_upstreams: Vec::new(),
        balance: None,
        allow: if tcp {
            allow.clone()
        } else {
            AllowRules::default()
        },
        policy: if tcp { args.policy.clone() } else { None },
        acme: args.acme.settings(),
        routes: if tcp {
            Vec::new()
        } else {
            vec![RouteConfig {
                name: "default".into(),
                host: None,
                path_prefix: "/".into(),
                methods: Vec::new(),
                upstream,
                upstreams: Vec::new(),
                balance: None,
                allow,
                policy: args.policy.clone(),
                identity_headers: IdentityHeaders::Xfcc,
                protocol: args.upstream_protocol,
                jwt_svid: None,
                // The flag form's one route follows --mode.
                mode: None,
            }]
        },
        send_proxy_v2: false,
        mode: args.mode,
        cipher_suites: Vec::new(),
        groups: Vec::new(),
        federation: Vec::new(),
    };
    let config = GateConfig {
        listen: ListenConfig {
            address: args.listen.clone().context("--listen is required")?,
            admin: args.admin.clone(),
            max_connections: 10_000,
            trusted_proxies: args.trust_forwarded_from.clone(),
            proxy_protocol_from: args.proxy_protocol_from.clone(),
        },
        tls: TlsConfig {
            allow_tls12: args.allow_tls12,
            disable_resumption: false,
            allow_insecure_permissions: args.allow_insecure_permissions,
            verify_cache_entries: args.verify_cache_entries,
            ..TlsConfig::default()
        },
        timeouts: Default::default(),
        // With --ca, https:// upstreams are verified against the CA's roots
        // and see the gate's own identity unless told otherwise.
        upstream_tls: (args.upstream_ca.is_some() || args.ca.is_some()).then(|| UpstreamTls {
            ca: args.upstream_ca.clone(),
            cert: args.upstream_cert.clone(),
            key: args.upstream_key.clone(),
        }),
        unknown_sni: UnknownSni::Default,
        tenants: vec![tenant],
        audit_log: args.audit_log.clone(),
        revocation: RevocationConfig {
            crl: args.crl.clone(),
            crl_refresh: Dur(args.crl_refresh),
            crl_fail_open: args.crl_fail_open,
            ocsp_stapling: !args.no_ocsp_stapling,
            ..RevocationConfig::default()
        },
        identity: args.ca.clone().map(|ca| IdentityConfig {
            ca,
            ca_fingerprint: args.ca_fingerprint.clone(),
            ca_bundle: args.ca_bundle.clone(),
            token_file: args.token_file.clone(),
            federation: true,
        }),
        passthrough: Vec::new(),
    };
    config.validate()?;
    Ok(config)
}

async fn serve(args: ServeArgs) -> anyhow::Result<Outcome> {
    let source = match &args.config {
        Some(path) => Source::File(path.clone()),
        None => Source::Fixed(Box::new(flag_config(&args)?)),
    };
    if args.check_config {
        let config = source.load()?;
        let address = config.listen.address.clone();
        let ca = config.identity.as_ref().map(|i| i.ca.clone());
        let checked = ward_gate::check::check(config).context("the configuration does not load")?;
        match ca {
            // The identity exists only once obtained; everything else is checked.
            Some(ca) => outln!(
                "configuration OK: {} tenant(s), listening on {address}; the gate's certificate comes from {ca} at start",
                checked.tenants,
            ),
            None => outln!(
                "configuration OK: {} tenant(s), listening on {address}",
                checked.tenants
            ),
        }
        return Ok(Outcome::Success);
    }
    ward_telemetry::init_tracing(args.log_format, "info")?;
    let reload_rx = hangups()?;
    ward_gate::run(
        source,
        |bound| {
            eprintln!("ward gate: listening on {}", bound.listen);
            if let Some(admin) = bound.admin {
                eprintln!("ward gate: admin on http://{admin}");
            }
        },
        reload_rx,
        super::shutdown_signal(),
    )
    .await
    .context("the gate failed")?;
    Ok(Outcome::Success)
}
