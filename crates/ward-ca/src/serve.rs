//! `ward ca serve`: wires the authority, its storage, its own rotating
//! server certificate and the HTTP API onto listeners, and drains them on
//! shutdown.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::PrivateKeyDer;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use ward_pki::pem;
use ward_telemetry::{AuditLog, Registry};
use ward_tls::config::{ClientAuth, server_config};
use ward_tls::credentials::Credentials;
use ward_tls::server::{ServeOptions, serve_http, serve_https, set_http_alpn};
use ward_tls::verifier::ClientVerifier;

use crate::authority::Authority;
use crate::authority::revocation::CrlSettings;
use crate::dir::{ADMIN_PATH, CaDir, Storage};
use crate::expiry::ExpiryWatch;
use crate::http::{AppState, CaMetrics, Limits, app, console_app, public_app};
use crate::ocsp::{OcspSettings, Responder};
use crate::tls_files::TlsFiles;

/// The path of the SPIFFE ID in the CA's own server certificate: the
/// `endpoint_spiffe_id` of its bundle endpoint (`https_spiffe` profile).
pub const ENDPOINT_PATH: &str = "/ward/ca";

/// Lifetime of the CA's own TLS server certificate; renewed at two thirds.
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How `ward ca serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The CA directory.
    pub dir: PathBuf,
    /// HTTPS listen address.
    pub listen: String,
    /// Optional plain-HTTP listener for the public objects.
    pub http_listen: Option<String>,
    /// Optional HTTPS listener serving only the web console (`/console/`),
    /// with the API's TLS configuration.
    pub console_listen: Option<String>,
    /// Extra names (DNS or IP) for the server certificate.
    pub sans: Vec<String>,
    /// Database URL; ca.toml's `[storage] database`, else `DIR/ward.db`, when absent.
    pub database: Option<String>,
    /// Create the store when there is none (`--init-storage`); without it a
    /// missing or empty store is refused.
    pub init_storage: bool,
    /// Where audit lines go: `stdout`, `stderr` or a file path.
    pub audit: String,
    /// Serve the API with this PEM chain (leaf first) instead of a
    /// certificate the CA issues itself; re-read when it changes.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Accept private keys that group or others can read and a CA directory
    /// they can write (refused by default, as ssh's `StrictModes` does).
    pub allow_insecure_permissions: bool,
    /// Warn (log, metric, `/readyz`) when the signing intermediate expires
    /// within this margin.
    pub intermediate_warning: Duration,
    /// How often the rotation state is re-read from the store (the CA also
    /// wakes at each scheduled switch).
    pub rotation_poll: Duration,
    /// Serve the API with a certificate from an ACME CA (renewed by
    /// `ward-acme`) instead of one the CA issues itself.
    pub acme: Option<ward_acme::AcmeSettings>,
}

/// Addresses the listeners are bound to, reported once they accept.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The HTTPS listener.
    pub https: SocketAddr,
    /// The plain-HTTP listener, if any.
    pub http: Option<SocketAddr>,
    /// The console-only HTTPS listener, if any.
    pub console: Option<SocketAddr>,
}

/// Errors starting the CA server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The CA directory, configuration or keys are unusable.
    #[error(transparent)]
    Ca(#[from] crate::Error),
    /// The database is unusable.
    #[error("database: {0}")]
    Store(#[from] ward_store::StoreError),
    /// A listener or the server failed.
    #[error("{0}")]
    Server(String),
}

fn server_err(context: &str) -> impl FnOnce(String) -> ServeError + '_ {
    move |e| ServeError::Server(format!("{context}: {e}"))
}

/// Runs the CA until `shutdown` resolves; `on_ready` is called once the
/// listeners accept connections.
pub async fn run(
    config: ServeConfig,
    on_ready: impl FnOnce(&Bound),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let dir = CaDir::new(&config.dir);
    let ca = dir.config()?;
    if !config.allow_insecure_permissions {
        dir.check_permissions()?;
    }
    dir.check_hierarchy()?;
    let external = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            allow_insecure_permissions: config.allow_insecure_permissions,
        }),
        (None, None) => None,
        _ => {
            return Err(ServeError::Server(
                "--tls-cert and --tls-key go together".into(),
            ));
        }
    };
    let crl_settings = CrlSettings {
        validity: ca.revocation.crl_validity()?,
        refresh: ca.revocation.crl_refresh()?,
    };
    let storage = Storage::Serving {
        database: config.database.as_deref(),
        init: config.init_storage,
        now: OffsetDateTime::now_utc(),
    };
    let jwt_keys = dir.jwt_keys()?;
    let authority = Arc::new(
        dir.open_authority(&ca, storage)
            .await?
            .with_revocation(crl_settings)
            .with_jwt_keys(
                &jwt_keys,
                // The bundle's spiffe_sequence: the start of this process in
                // milliseconds, so that it grows across restarts; a JWT key
                // rotation seen while running sets it to that moment.
                sequence_now(),
            )
            .with_bundle_refresh_hint(ca.bundle.refresh_hint()?),
    );
    let ocsp = Arc::new(Responder::new(
        authority.clone(),
        dir.root_ocsp_signer(OffsetDateTime::now_utc())?,
        &ca.ca.name,
        OcspSettings {
            validity: ca.revocation.ocsp_validity()?,
        },
        OffsetDateTime::now_utc(),
    )?);
    // A rotation recorded in the store: publish the next intermediate (and
    // a root rotation's bundle) and answer OCSP for every intermediate in
    // use before the first request.
    let mut rotation_cache = Vec::new();
    let applied = crate::dir::rotation::apply(
        &dir,
        &authority,
        &authority
            .store()
            .intermediates()
            .await
            .map_err(|e| server_err("reading the CA intermediates")(e.to_string()))?,
        &authority
            .store()
            .roots()
            .await
            .map_err(|e| server_err("reading the CA roots")(e.to_string()))?,
        &mut rotation_cache,
        OffsetDateTime::now_utc(),
    )?;
    let in_use = applied.issuers;
    ocsp.follow(&in_use, OffsetDateTime::now_utc())
        .await
        .map_err(|e| server_err("OCSP responders of the intermediates")(e.to_string()))?;
    follow_root_responders(
        &dir,
        &ocsp,
        &authority
            .store()
            .roots()
            .await
            .map_err(|e| server_err("reading the CA roots")(e.to_string()))?,
        &applied.trust.known,
        OffsetDateTime::now_utc(),
    )
    .map_err(server_err("OCSP responders of the rotated roots"))?;
    ocsp.record_current(OffsetDateTime::now_utc())
        .await
        .map_err(|e| server_err("recording the OCSP responder certificate")(e.to_string()))?;
    // Opened before the first CRL is signed, so no revocation made
    // elsewhere falls between the two.
    let revocations = match authority.store().watch_revocations().await {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for revocations made elsewhere; they reach the CRL every crl_refresh only");
            None
        }
    };
    authority
        .refresh_crl(OffsetDateTime::now_utc())
        .await
        .map_err(|e| server_err("signing the first CRL")(e.to_string()))?;
    let serve_options = ServeOptions {
        idle_timeout: ca.limits.idle_timeout()?,
        max_connection_age: ca.limits.max_age()?,
        ..ServeOptions::default()
    };
    let registry = Registry::new();
    let metrics =
        CaMetrics::register(&registry).map_err(|e| server_err("metrics")(e.to_string()))?;
    let expiry = Arc::new(
        ExpiryWatch::register(&registry, config.intermediate_warning)
            .map_err(|e| server_err("metrics")(e.to_string()))?,
    );
    expiry.update(&authority, &ocsp, OffsetDateTime::now_utc());
    let audit =
        AuditLog::from_spec(&config.audit).map_err(|e| server_err("audit log")(e.to_string()))?;
    let federation = Arc::new(crate::federation::CaFederation::start(
        &ca,
        &config.dir,
        ca.bundle.refresh_hint()?,
    )?);
    let state = AppState {
        admin_id: ca
            .ca
            .trust_domain
            .id(ADMIN_PATH)
            .map_err(|e| server_err("admin identity")(e.to_string()))?,
        limits: Limits::new(&ca.limits),
        metrics: Arc::new(metrics),
        registry,
        audit: Arc::new(audit),
        authority: authority.clone(),
        ocsp: ocsp.clone(),
        acme: match &ca.acme {
            Some(section) => Some(Arc::new(
                crate::acme::Acme::new(section.clone(), authority.clone())
                    .map_err(|e| server_err("ACME")(e.to_string()))?,
            )),
            None => None,
        },
        console: Arc::new(crate::console::Console::new()),
        expiry: expiry.clone(),
        federation,
    };

    // The CA's own server identity, renewed by the CA itself, or the
    // operator's certificate files, followed as they change.
    let (dns, ips) = server_names(&config.sans);
    if config.acme.is_some() && external.is_some() {
        return Err(ServeError::Server(
            "--tls-cert/--tls-key and --acme-directory exclude each other".into(),
        ));
    }
    let acme = match &config.acme {
        Some(settings) => Some(crate::serve_acme::prepare(settings.clone())?),
        None => None,
    };
    let (resolver, renews_at) = match (&external, &acme) {
        (Some(files), _) => (Arc::new(files.load()?), None),
        (None, Some(acme)) => (acme.credentials.clone(), None),
        (None, None) => {
            let (chain, key, renew) = server_identity(&authority, &dns, &ips).await?;
            let resolver = Credentials::new(chain, key)
                .map_err(|e| server_err("server certificate")(e.to_string()))?;
            // The certificate is an X509-SVID: the bundle endpoint serves
            // the https_spiffe profile too.
            tracing::info!(
                endpoint_spiffe_id = %state.admin_id.trust_domain().id(ENDPOINT_PATH).map(|id| id.to_string()).unwrap_or_default(),
                "bundle endpoint GET /v1/bundle: https_web and https_spiffe profiles"
            );
            (Arc::new(resolver), Some(renew))
        }
    };
    // Client certificates are optional (token routes need none) and may
    // carry either TLS EKU: a workload holding a `server`-profile
    // certificate renews with it. The authority decides what each may do.
    // The roots follow root rotations (every root not yet expired).
    let verifier = Arc::new(
        FollowingVerifier::new(&applied.trust.known)
            .map_err(|e| server_err("root certificate")(e.to_string()))?,
    );
    let served: Arc<dyn rustls::server::ResolvesServerCert> = match &acme {
        Some(acme) => Arc::new(ward_tls::acme::TlsAlpnResolver::new(
            resolver.clone(),
            acme.challenges.lookup(),
        )),
        None => resolver.clone(),
    };
    let mut tls = server_config(served, ClientAuth::Custom(verifier.clone()))
        .map_err(|e| server_err("TLS configuration")(e.to_string()))?;
    set_http_alpn(&mut tls);
    if acme.is_some() {
        ward_tls::acme::offer_acme_tls_alpn(&mut tls);
    }
    let tls = Arc::new(tls);

    let https = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| server_err(&format!("binding {}", config.listen))(e.to_string()))?;
    let http = match &config.http_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| server_err(&format!("binding {addr}"))(e.to_string()))?,
        ),
        None => None,
    };
    let console = match &config.console_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| server_err(&format!("binding {addr}"))(e.to_string()))?,
        ),
        None => None,
    };
    let bound = Bound {
        https: https
            .local_addr()
            .map_err(|e| server_err("listener")(e.to_string()))?,
        http: http.as_ref().and_then(|l| l.local_addr().ok()),
        console: console.as_ref().and_then(|l| l.local_addr().ok()),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let follow_files = external.map(|files| {
        tokio::spawn(crate::tls_files::follow(
            files,
            resolver.clone(),
            stop_rx.clone(),
        ))
    });
    let acme_tasks = match acme {
        Some(acme) => acme.start(resolver.clone(), &stop_rx).await?,
        None => Vec::new(),
    };
    // Set when the signing chain changes (a switch, a root published or
    // retired): the CA's own certificate is renewed at once, so that it
    // always chains like the certificates it issues.
    let chain_changed = Arc::new(tokio::sync::Notify::new());
    let background = tokio::spawn(background_tasks(
        authority.clone(),
        resolver,
        (dns, ips),
        renews_at,
        state.limits.clone(),
        chain_changed.clone(),
        stop_rx.clone(),
    ));
    let rotation = tokio::spawn(follow_rotation(
        Following {
            dir: dir.clone(),
            authority: authority.clone(),
            ocsp: ocsp.clone(),
            expiry,
            verifier,
            chain_changed,
        },
        rotation_cache,
        config.rotation_poll,
        stop_rx.clone(),
    ));
    let ocsp_rotation = tokio::spawn(crate::ocsp::rotate_loop(ocsp, stop_rx.clone()));
    let jwt_reload = tokio::spawn(follow_jwt_keys(
        dir.clone(),
        authority.clone(),
        jwt_keys.fingerprint(),
        stop_rx.clone(),
    ));
    let dns_backfill = tokio::spawn(crate::console::backfill_dns(
        authority.store().clone(),
        stop_rx.clone(),
    ));
    let acme_sweeper = state.acme.as_ref().map(|acme| acme.spawn_sweeper());
    let follow = revocations.map(|changes| {
        tokio::spawn(crate::authority::revocation::follow_revocations(
            authority.clone(),
            changes,
            stop_rx.clone(),
        ))
    });
    let https_task = tokio::spawn(serve_https(
        https,
        tls.clone(),
        app(state.clone()),
        serve_options.clone(),
        stopped(stop_rx.clone()),
    ));
    let console_task = console.map(|listener| {
        tokio::spawn(serve_https(
            listener,
            tls.clone(),
            console_app(state.clone()),
            serve_options.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    let http_task = http.map(|listener| {
        tokio::spawn(serve_http(
            listener,
            public_app(state.clone()),
            serve_options,
            stopped(stop_rx.clone()),
        ))
    });
    on_ready(&bound);
    shutdown.await;
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    for task in acme_tasks {
        task.abort();
    }
    let mut result = Ok(());
    if let Ok(Err(e)) = https_task.await {
        result = Err(server_err("https listener")(e.to_string()));
    }
    if let Some(task) = http_task
        && let Ok(Err(e)) = task.await
    {
        result = Err(server_err("http listener")(e.to_string()));
    }
    if let Some(task) = console_task
        && let Ok(Err(e)) = task.await
    {
        result = Err(server_err("console listener")(e.to_string()));
    }
    background.abort();
    ocsp_rotation.abort();
    jwt_reload.abort();
    rotation.abort();
    // The backfill stops at `stop`; an unfinished one resumes at the next start.
    let _ = dns_backfill.await;
    for task in [follow, follow_files, acme_sweeper].into_iter().flatten() {
        task.abort();
    }
    authority.store().close().await;
    result
}

/// DNS names and IPs for the CA's certificate: localhost, the host name,
/// the loopback addresses, and every `--san`.
fn server_names(sans: &[String]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = vec!["localhost".to_owned()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim().to_ascii_lowercase();
        if !host.is_empty()
            && ward_pki::issue::check_dns_name(&host).is_ok()
            && !dns.contains(&host)
        {
            dns.push(host);
        }
    }
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for san in sans {
        match san.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !dns.contains(san) => dns.push(san.to_ascii_lowercase()),
            Err(_) => {}
        }
    }
    (dns, ips)
}

type Identity = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    OffsetDateTime,
);

async fn server_identity(
    authority: &Authority,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<Identity, ServeError> {
    let now = OffsetDateTime::now_utc();
    let (issued, key) = authority
        .issue_server_identity(dns, ips, SERVER_CERT_TTL, now)
        .await
        .map_err(|e| server_err("issuing the CA's server certificate")(e.to_string()))?;
    let chain = pem::parse_certs(issued.chain_pem.as_bytes())
        .map_err(|e| server_err("server certificate")(e.to_string()))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| server_err("server key")(e.to_string()))?;
    let key = PrivateKeyDer::try_from(der.to_vec())
        .map_err(|e| server_err("server key")(e.to_string()))?;
    let lifetime = issued.not_after - now;
    Ok((chain, key, now + lifetime * 2 / 3))
}

/// Renews the server certificate at two thirds of its life (unless it comes
/// from the operator's files: `renews_at` is `None`), refreshes the CRL
/// every `crl_refresh` and prunes rate limiter state, until asked to stop.
async fn background_tasks(
    authority: Arc<Authority>,
    resolver: Arc<Credentials>,
    (dns, ips): (Vec<String>, Vec<IpAddr>),
    mut renews_at: Option<OffsetDateTime>,
    limits: Limits,
    chain_changed: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    let mut crl = tokio::time::interval(authority.crl_settings().refresh);
    crl.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let until_renewal = renews_at
            .and_then(|at| (at - OffsetDateTime::now_utc()).try_into().ok())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            _ = prune.tick() => limits.prune(),
            () = chain_changed.notified(), if renews_at.is_some() => {
                // Renew now: the next loop turn finds the time passed.
                renews_at = Some(OffsetDateTime::now_utc());
            }
            _ = crl.tick() => {
                if let Err(e) = authority.refresh_crl(OffsetDateTime::now_utc()).await {
                    tracing::error!(error = %e, "refreshing the CRL failed; retrying at the next refresh");
                }
            }
            () = tokio::time::sleep(until_renewal), if renews_at.is_some() => {
                match server_identity(&authority, &dns, &ips).await {
                    Ok((chain, key, next)) => match resolver.update(chain, key) {
                        Ok(()) => {
                            tracing::info!("renewed the CA's server certificate");
                            renews_at = Some(next);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "new server certificate refused; retrying in 60s");
                            renews_at = Some(OffsetDateTime::now_utc() + Duration::from_secs(60));
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "renewing the CA's server certificate failed; retrying in 60s");
                        renews_at = Some(OffsetDateTime::now_utc() + Duration::from_secs(60));
                    }
                }
            }
        }
    }
}

/// Follows the rotation state in the store until `stop`: publishes a new
/// intermediate as soon as it is recorded, switches signing at its
/// `signs_from` (waking for it, so replicas sharing the store switch within
/// milliseconds of each other), re-signs the CRL with the new signer, keeps
/// OCSP answering for every intermediate in use, and refreshes the expiry
/// gauges.
/// Milliseconds since the epoch: a `spiffe_sequence` newer than any before.
fn sequence_now() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(1)
}

/// Picks up `ward ca rotate jwt` without a restart: the JWT keys are read
/// again every [`crate::dir::jwt_keys::RELOAD_EVERY`] and replaced when a
/// kid or retire time changed. Unreadable keys are logged and the ones in
/// force stay.
async fn follow_jwt_keys(
    dir: CaDir,
    authority: Arc<Authority>,
    mut seen: (String, Vec<(Option<String>, i64)>),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(crate::dir::jwt_keys::RELOAD_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let read = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || dir.jwt_keys()).await
        };
        match read {
            Ok(Ok(keys)) => {
                let now = keys.fingerprint();
                if now != seen && authority.replace_jwt_keys(&keys, sequence_now()) {
                    tracing::info!(
                        kid = %now.0,
                        previous = keys.previous.len(),
                        "JWT keys changed on disk: signing with the current key, publishing the retired ones"
                    );
                    seen = now;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the JWT keys; keeping the ones in force");
            }
            Err(e) => tracing::error!(error = %e, "reading the JWT keys"),
        }
    }
}

/// Makes `ocsp` answer about the intermediates of every root in `known`
/// (not cancelled, not expired) with that root's own responder, loaded
/// from the directory for the rotated roots of `rows`.
fn follow_root_responders(
    dir: &CaDir,
    ocsp: &Responder,
    rows: &[ward_store::CaRoot],
    known: &[rustls_pki_types::CertificateDer<'static>],
    now: OffsetDateTime,
) -> Result<(), String> {
    ocsp.follow_roots(known, now, |der| {
        match rows.iter().find(|r| r.der == der.as_ref()) {
            Some(row) => dir.rotated_root_ocsp_signer(row, now),
            None => Ok(crate::dir::RootOcspSigner::None),
        }
    })
}

/// What [`follow_rotation`] keeps up to date.
struct Following {
    dir: CaDir,
    authority: Arc<Authority>,
    ocsp: Arc<Responder>,
    expiry: Arc<ExpiryWatch>,
    verifier: Arc<FollowingVerifier>,
    chain_changed: Arc<tokio::sync::Notify>,
}

async fn follow_rotation(
    f: Following,
    mut cache: Vec<Arc<ward_pki::issue::Issuer>>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let Following {
        dir,
        authority,
        ocsp,
        expiry,
        verifier,
        chain_changed,
    } = f;
    let mut signing = authority.intermediate_der();
    let mut chain = authority.signing_chain_pem();
    let mut bundle = authority.roots_pem();
    let mut published = authority.intermediates();
    loop {
        let now = OffsetDateTime::now_utc();
        let mut wait = poll;
        let state = match authority.store().intermediates().await {
            Ok(rows) => match authority.store().roots().await {
                Ok(roots) => Ok((rows, roots)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match state {
            Ok((rows, roots)) => {
                match crate::dir::rotation::apply(&dir, &authority, &rows, &roots, &mut cache, now)
                {
                    Ok(applied) => {
                        if let Err(e) = ocsp.follow(&applied.issuers, now).await {
                            tracing::error!(error = %e, "OCSP responders for the intermediates; retrying");
                        }
                        if let Err(e) =
                            follow_root_responders(&dir, &ocsp, &roots, &applied.trust.known, now)
                        {
                            tracing::error!(error = %e, "OCSP responders for the rotated roots; retrying");
                        }
                        if let Err(e) = verifier.follow(&applied.trust.known) {
                            tracing::error!(error = %e, "client verifier for the rotated roots; retrying");
                        }
                        let current = authority.intermediate_der();
                        if current != signing {
                            tracing::info!(
                                intermediate = %ward_pki::Fingerprint::of_der(&current),
                                "rotation: switched signing to the next intermediate"
                            );
                            signing = current;
                        }
                        let now_bundle = authority.roots_pem();
                        if now_bundle != bundle {
                            tracing::info!(
                                roots = applied.trust.bundle.len(),
                                "rotation: the trust bundle changed"
                            );
                            bundle = now_bundle;
                        }
                        let now_chain = authority.signing_chain_pem();
                        if now_chain != chain {
                            chain = now_chain;
                            chain_changed.notify_one();
                        }
                        let now_published = authority.intermediates();
                        if now_published != published {
                            // Each published intermediate signs its own CRL.
                            published = now_published;
                            if let Err(e) = authority.refresh_crl(now).await {
                                tracing::error!(error = %e, "re-signing the CRLs after a rotation failed; the periodic refresh will retry");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "loading a rotated intermediate failed; retrying");
                    }
                }
                if let Some(next) = rows
                    .iter()
                    .filter(|r| r.cancelled_at.is_none() && r.signs_from > now)
                    .map(|r| r.signs_from)
                    .min()
                {
                    wait = wait.min((next - now).try_into().unwrap_or(Duration::ZERO));
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the rotation state failed; retrying"),
        }
        expiry.update(&authority, &ocsp, now);
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The CA's client-certificate verifier over every root it knows, rebuilt
/// when a root rotation adds one or one expires. Every root of one CA has
/// the same subject (a rollover keeps it), so the hints never change.
#[derive(Debug)]
struct FollowingVerifier {
    current: arc_swap::ArcSwap<ClientVerifier>,
    roots: std::sync::Mutex<Vec<rustls_pki_types::CertificateDer<'static>>>,
    hints: Vec<rustls::DistinguishedName>,
}

impl FollowingVerifier {
    fn new(roots: &[rustls_pki_types::CertificateDer<'static>]) -> Result<Self, ward_tls::Error> {
        let verifier = ClientVerifier::any_tls_eku(roots)?;
        Ok(FollowingVerifier {
            hints: verifier.root_hint_subjects().to_vec(),
            current: arc_swap::ArcSwap::from_pointee(verifier),
            roots: std::sync::Mutex::new(roots.to_vec()),
        })
    }

    /// Verifies under `roots` from now on, if they changed.
    fn follow(
        &self,
        roots: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Result<(), ward_tls::Error> {
        let mut known = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        if known.as_slice() == roots {
            return Ok(());
        }
        self.current
            .store(Arc::new(ClientVerifier::any_tls_eku(roots)?));
        *known = roots.to_vec();
        Ok(())
    }
}

impl ClientCertVerifier for FollowingVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.current.load().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}
