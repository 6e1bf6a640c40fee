//! `ward quickstart`: everything on one machine in one command.
//!
//! In one process: a CA (SQLite under DIR), a demo upstream, a gate in
//! front of it, and a client identity obtained and kept fresh by the agent
//! (key made here, CSR + one-time token, renewal over mTLS). It prints a
//! curl command that succeeds with that identity and one that fails without
//! it, then runs until Ctrl-C. Run it again on the same DIR and it starts
//! from the CA it made before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::{Method, Request, Response};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use ward_api::{CreateTokenRequest, CreatedTokenView, paths};
use ward_ca::CaDir;
use ward_ca::dir::InitOptions;
use ward_client::{BootstrapConfig, CaClient, CaTrust, Identity, Token};
use ward_pki::{Fingerprint, KeyType, TrustDomain};

use super::Outcome;

/// Trust domain of the quickstart CA.
const TRUST_DOMAIN: &str = "quickstart.ward.test";
/// Lifetime of the quickstart's certificates; the agent renews them at two thirds.
const CERT_TTL: &str = "1h";

#[derive(Debug, Args)]
pub(crate) struct QuickstartArgs {
    /// Directory for the CA, the identities and the gate configuration
    /// (reused when it already holds a quickstart).
    #[arg(long, default_value = "ward-quickstart")]
    dir: PathBuf,
    /// Address the gate listens on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
}

/// Signals every component to stop; each holds a receiver.
struct Stop(watch::Sender<bool>);

impl Stop {
    fn signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

pub(crate) async fn run(args: QuickstartArgs) -> anyhow::Result<Outcome> {
    ward_telemetry::init_tracing(ward_telemetry::LogFormat::Text, "warn")?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let ca_dir = dir.join("ca");
    let fingerprint = ensure_ca(&ca_dir).await?;
    let trust_domain: TrustDomain = TRUST_DOMAIN.parse().context("trust domain")?;

    let (stop_tx, _) = watch::channel(false);
    let stop = Stop(stop_tx);
    let mut tasks = tokio::task::JoinSet::new();

    // 1. The CA, on a free loopback port.
    let (ca_ready_tx, ca_ready) = oneshot::channel();
    let ca_config = ward_ca::serve::ServeConfig {
        acme: None,
        console_listen: None,
        dir: ca_dir.clone(),
        listen: "127.0.0.1:0".into(),
        http_listen: None,
        sans: Vec::new(),
        database: None,
        init_storage: false,
        audit: dir.join("ca-audit.log").display().to_string(),
        tls_cert: None,
        tls_key: None,
        allow_insecure_permissions: false,
        intermediate_warning: ward_ca::expiry::DEFAULT_MARGIN,
        rotation_poll: Duration::from_secs(1),
    };
    let ca_stop = stop.signal();
    tasks.spawn(async move {
        ward_ca::serve::run(
            ca_config,
            move |bound| {
                let _ = ca_ready_tx.send(bound.https);
            },
            ca_stop,
        )
        .await
        .context("the CA stopped")
    });
    let ca_addr = ca_ready.await.context("the CA did not start")?;
    let ca_url = format!("https://127.0.0.1:{}", ca_addr.port());

    // 2. Tokens for the gate and the client, through the admin API.
    let admin = admin_client(&ca_dir, &ca_url)?;
    let gate_id = trust_domain
        .id("/quickstart/gate")
        .context("gate identity")?;
    let client_id = trust_domain
        .id("/quickstart/client")
        .context("client identity")?;
    let gate_token = create_token(&admin, gate_id.as_str(), &["localhost"]).await?;
    let client_token = create_token(&admin, client_id.as_str(), &[]).await?;

    // 3. The client's identity, through the agent: files under DIR/client.
    let trust = CaTrust::Fingerprint(fingerprint);
    let client_files = dir.join("client");
    start_agent(
        &mut tasks,
        &stop,
        &ca_url,
        &trust,
        client_token,
        &client_files,
    )
    .await?;

    // 4. The demo upstream and the gate in front of it; the gate gets its
    //    own identity from the CA with its token (`[identity]`).
    let upstream = start_upstream(&mut tasks, &stop).await?;
    let token_file = dir.join("gate-token");
    ward_agent::files::write_atomic(&dir, "gate-token", gate_token.expose().as_bytes(), 0o600)
        .context("writing the gate's token")?;
    let gate_toml = dir.join("gate.toml");
    let gate = GateSettings {
        listen: &args.listen,
        ca_url: &ca_url,
        fingerprint: &fingerprint,
        token_file: &token_file,
        upstream,
        client_id: &client_id,
    };
    write_gate_config(&gate_toml, &gate)?;
    let (gate_ready_tx, gate_ready) = oneshot::channel();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let gate_stop = stop.signal();
    tasks.spawn(async move {
        ward_gate::run(
            ward_gate::Source::File(gate_toml),
            move |bound| {
                let _ = gate_ready_tx.send(bound.listen);
            },
            reload_rx,
            gate_stop,
        )
        .await
        .context("the gate stopped")
    });
    let gate_addr = tokio::select! {
        ready = gate_ready => ready.context("the gate did not start")?,
        Some(failed) = tasks.join_next() => return Err(failure(failed)),
    };
    // Spent: the gate renews over mTLS from now on.
    let _ = std::fs::remove_file(&token_file);

    print_instructions(
        &ca_url,
        &fingerprint,
        gate_addr,
        upstream,
        &client_id,
        &client_files,
    );

    // 5. Until Ctrl-C (or a component fails).
    let outcome = tokio::select! {
        () = super::shutdown_signal() => Ok(Outcome::Success),
        Some(failed) = tasks.join_next() => Err(failure(failed)),
    };
    let _ = stop.0.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        eprintln!("ward quickstart: some components did not stop within 10s");
    }
    eprintln!("ward quickstart: stopped; run it again to restart with the same CA");
    outcome
}

/// Makes the CA on the first run; returns the root fingerprint either way.
async fn ensure_ca(ca_dir: &Path) -> anyhow::Result<Fingerprint> {
    let dir = CaDir::new(ca_dir);
    if !ca_dir.join("ca.toml").exists() {
        let opts = InitOptions {
            trust_domain: TRUST_DOMAIN.parse().context("trust domain")?,
            name: "Ward quickstart".into(),
            key_type: KeyType::EcdsaP256,
            root_validity: Duration::from_secs(3650 * 86_400),
            intermediate_validity: Duration::from_secs(365 * 86_400),
            offline_root: None,
            permitted_dns: Vec::new(),
            database: None,
            pkcs11: None,
        };
        dir.init_with_store(&opts, OffsetDateTime::now_utc())
            .await
            .with_context(|| format!("cannot create a CA in {}", ca_dir.display()))?;
        eprintln!("ward quickstart: created a CA in {}", ca_dir.display());
    } else {
        eprintln!("ward quickstart: using the CA in {}", ca_dir.display());
    }
    let roots = dir.roots()?;
    let root = roots.first().context("the CA directory holds no root")?;
    Ok(Fingerprint::of_der(root.as_ref()))
}

fn admin_client(ca_dir: &Path, ca_url: &str) -> anyhow::Result<CaClient> {
    let roots = ward_ca::dir::read_certs(&ca_dir.join("root.crt"))?;
    let chain = ward_ca::dir::read_certs(&ca_dir.join("admin.crt"))?;
    let key_path = ca_dir.join("admin.key");
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?,
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| anyhow::anyhow!("{} holds no usable private key", key_path.display()))?;
    Ok(CaClient::new(
        ca_url,
        &roots,
        Some(Identity { chain, key }),
    )?)
}

async fn create_token(admin: &CaClient, spiffe_id: &str, dns: &[&str]) -> anyhow::Result<Token> {
    let request = CreateTokenRequest {
        spiffe_id: spiffe_id.to_owned(),
        dns: dns.iter().map(|d| (*d).to_owned()).collect(),
        cert_ttl: Some(CERT_TTL.into()),
        expires_in: Some("10m".into()),
        uses: Some(1),
        profile: None,
        allowed_cidrs: vec!["127.0.0.0/8".into()],
        ..CreateTokenRequest::default()
    };
    let created: CreatedTokenView = admin
        .json(Method::POST, paths::ADMIN_TOKENS, Some(&request))
        .await
        .with_context(|| format!("cannot create a token for {spiffe_id}"))?;
    Ok(Token::new(&created.token)?)
}

/// Runs an agent writing `svid.pem`, `svid_key.pem` and `svid_bundle.pem`
/// into `out_dir`; returns once the first identity is written.
async fn start_agent(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    stop: &Stop,
    ca_url: &str,
    trust: &CaTrust,
    token: Token,
    out_dir: &Path,
) -> anyhow::Result<()> {
    let config = ward_agent::AgentConfig {
        bootstrap: BootstrapConfig::new(ca_url, trust.clone(), token),
        out_dir: Some(out_dir.to_owned()),
        socket: None,
        on_rotate: None,
        on_rotate_timeout: Duration::from_secs(10),
        admin: None,
        attestation: None,
        federation: Vec::new(),
        federation_refresh: ward_client::federation::Refresh::default(),
        federation_from_ca: false,
    };
    let (first_tx, first) = oneshot::channel();
    let first_tx = std::sync::Mutex::new(Some(first_tx));
    let agent_stop = stop.signal();
    let what = out_dir.display().to_string();
    tasks.spawn(async move {
        ward_agent::run(
            config,
            move |event| {
                if let ward_agent::Event::Delivered { first: true, .. } = event
                    && let Ok(mut slot) = first_tx.lock()
                    && let Some(tx) = slot.take()
                {
                    let _ = tx.send(());
                }
            },
            agent_stop,
        )
        .await
        .with_context(|| format!("the agent for {what} stopped"))
    });
    tokio::select! {
        delivered = first => delivered.with_context(|| format!("no identity for {}", out_dir.display())),
        Some(failed) = tasks.join_next() => Err(failure(failed)),
    }
}

/// A component ended before Ctrl-C: that is a failure, whatever it returned.
fn failure(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match joined {
        Ok(Ok(())) => anyhow::anyhow!("a component stopped unexpectedly"),
        Ok(Err(e)) => e,
        Err(e) => anyhow::anyhow!("a component failed: {e}"),
    }
}

/// The demo upstream: greets whoever the gate says is calling.
async fn start_upstream(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    stop: &Stop,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo upstream")?;
    let addr = listener.local_addr().context("demo upstream address")?;
    let service = tower::service_fn(|req: Request<hyper::body::Incoming>| async move {
        let caller = req
            .headers()
            .get("x-ward-spiffe-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(unknown)")
            .to_owned();
        let body = serde_json::json!({
            "message": "hello from the Ward quickstart upstream",
            "caller": caller,
            "path": req.uri().path(),
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!("{body}\n"))))
    });
    let upstream_stop = stop.signal();
    tasks.spawn(async move {
        ward_tls::server::serve_http(
            listener,
            service,
            ward_tls::server::ServeOptions::default(),
            upstream_stop,
        )
        .await
        .context("the demo upstream stopped")
    });
    Ok(addr)
}

/// What the quickstart's gate configuration says.
struct GateSettings<'a> {
    listen: &'a str,
    ca_url: &'a str,
    fingerprint: &'a Fingerprint,
    token_file: &'a Path,
    upstream: SocketAddr,
    client_id: &'a ward_pki::SpiffeId,
}

/// The gate's configuration, written where the user can read it.
fn write_gate_config(path: &Path, gate: &GateSettings<'_>) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `ward quickstart` on every start; see docs/gate.example.toml.\n\
         audit_log = \"off\"\n\n\
         [listen]\n\
         address = {listen}\n\n\
         # The gate's own certificate comes from the CA and is renewed by the gate.\n\
         [identity]\n\
         ca = {ca}\n\
         ca_fingerprint = {fingerprint}\n\
         token_file = {token}\n\n\
         [[tenants]]\n\
         name = \"quickstart\"\n\
         default = true\n\n\
         [[tenants.routes]]\n\
         name = \"demo\"\n\
         path_prefix = \"/\"\n\
         upstream = {upstream}\n\n\
         [tenants.routes.allow]\n\
         spiffe_ids = [{client}]\n",
        listen = toml_string(gate.listen),
        ca = toml_string(gate.ca_url),
        fingerprint = toml_string(&gate.fingerprint.to_string()),
        token = toml_string(&gate.token_file.display().to_string()),
        upstream = toml_string(&format!("http://{}", gate.upstream)),
        client = toml_string(gate.client_id.as_str()),
    );
    ward_agent::files::write_atomic(
        path.parent().context("gate.toml has no directory")?,
        "gate.toml",
        text.as_bytes(),
        0o644,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A TOML basic string (paths may hold quotes or backslashes).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn print_instructions(
    ca_url: &str,
    fingerprint: &Fingerprint,
    gate: SocketAddr,
    upstream: SocketAddr,
    client_id: &ward_pki::SpiffeId,
    client_files: &Path,
) {
    let file = |name: &str| shell_quote(&client_files.join(name).display().to_string());
    let url = format!("https://localhost:{}/", gate.port());
    eprintln!("ward quickstart: ready");
    eprintln!("  CA        {ca_url} (root SHA-256 {fingerprint})");
    eprintln!("  gate      {url} -> demo upstream http://{upstream}");
    eprintln!(
        "  identity  {client_id} in {} (renewed automatically)",
        client_files.display()
    );
    eprintln!();
    eprintln!("With the client identity (succeeds):");
    outln!(
        "curl --cacert {} --cert {} --key {} {url}",
        file("svid_bundle.pem"),
        file("svid.pem"),
        file("svid_key.pem"),
    );
    eprintln!("Without a client certificate (refused by the gate):");
    outln!("curl --cacert {} {url}", file("svid_bundle.pem"));
    eprintln!();
    eprintln!("Ctrl-C stops everything.");
}

/// Quotes for a POSIX shell when needed.
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_paths_alone() {
        assert_eq!(
            shell_quote("/tmp/ward-qs/client/svid.pem"),
            "/tmp/ward-qs/client/svid.pem"
        );
        assert_eq!(shell_quote("/tmp/my dir/a"), "'/tmp/my dir/a'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }

    #[test]
    fn toml_strings_round_trip() {
        for s in [
            r#"a"b\c"#,
            "/tmp/it's here",
            "plain",
            "tab\tand 'both\" quotes",
        ] {
            let doc: toml::Table = toml::from_str(&format!("x = {}", toml_string(s))).unwrap();
            assert_eq!(doc["x"].as_str(), Some(s), "{s:?}");
        }
    }
}
