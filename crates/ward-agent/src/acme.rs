//! `ward agent run --acme-*`: a DNS-named server certificate from an ACME
//! CA, delivered like an SVID: `cert.pem` (chain) and `key.pem` (0600)
//! written atomically into the output directory, the key first, then the
//! `--on-rotate` hook. What certbot and a deploy hook do, with the agent's
//! rotation semantics. The agent has no TLS listener, so it answers
//! http-01 (its own plain listener) or dns-01 (the exec hook).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use ward_acme::state::{CERT_FILE as STATE_CERT, KEY_FILE as STATE_KEY};
use ward_acme::{AcmeSettings, ChallengeKind, Challenges, Issued, Manager, Observer};

use crate::files::{WriteError, prepare_dir, write_atomic};

/// The chain file written to the output directory.
pub const CERT_FILE: &str = "cert.pem";
/// The key file written to the output directory (0600).
pub const KEY_FILE: &str = "key.pem";

/// What the ACME mode of the agent needs.
#[derive(Debug, Clone)]
pub struct AcmeAgentConfig {
    /// The certificate's ACME settings.
    pub settings: AcmeSettings,
    /// Where `cert.pem` and `key.pem` go.
    pub out_dir: PathBuf,
    /// Shell command run after each delivery.
    pub on_rotate: Option<String>,
    /// Longest the hook may run.
    pub on_rotate_timeout: Duration,
}

/// Why the ACME mode stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeAgentError {
    /// Settings or state directory.
    #[error(transparent)]
    Acme(#[from] ward_acme::Error),
    /// Writing the output directory.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The settings do not fit the agent.
    #[error("{0}")]
    Config(String),
}

struct Notify(mpsc::UnboundedSender<()>);

impl Observer for Notify {
    fn installed(&self, _current: &Issued) {
        let _ = self.0.send(());
    }
}

/// Keeps the certificate in `out_dir` until `shutdown` resolves; `notify`
/// hears each delivery (and whether it was the first).
pub async fn run(
    config: AcmeAgentConfig,
    notify: impl Fn(&Issued, bool),
    shutdown: impl Future<Output = ()>,
) -> Result<(), AcmeAgentError> {
    let settings = config.settings.clone();
    if settings.challenge == ChallengeKind::TlsAlpn01 {
        return Err(AcmeAgentError::Config(
            "the agent has no TLS listener: use --acme-challenge http-01 or dns-01".into(),
        ));
    }
    prepare_dir(&config.out_dir)?;
    let challenges = Challenges::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let (ChallengeKind::Http01, Some(addr)) = (settings.challenge, &settings.http01_listen) {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            AcmeAgentError::Config(format!("binding the http-01 listener {addr}: {e}"))
        })?;
        tasks.push(tokio::spawn(ward_acme::http01::serve(
            listener,
            challenges.clone(),
            stop_rx.clone(),
        )));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let manager = Manager::new(settings, challenges, Arc::new(Notify(tx.clone())))?;
    let state = manager.state().clone();
    let mut first = true;
    if manager.current().is_some() {
        // Delivered from the loop below, once `shutdown` is being watched
        // (a signal handler may only be installed when it is first polled).
        let _ = tx.send(());
    }
    drop(tx);
    tasks.push(tokio::spawn(manager.run(stop_rx)));
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            Some(()) = rx.recv() => {
                let domains = config.settings.domains.clone();
                let Some(current) = state.current(&domains) else { continue };
                if let Err(e) = deliver(&config, &state, &current, &notify, first).await {
                    // Logged and kept going: the next renewal writes again.
                    tracing::error!(error = %e, "cannot write the renewed certificate");
                    continue;
                }
                first = false;
            }
        }
    };
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    result
}

/// Copies the stored key, then the chain, into the output directory and
/// runs the hook.
async fn deliver(
    config: &AcmeAgentConfig,
    state: &ward_acme::state::StateDir,
    current: &Issued,
    notify: &impl Fn(&Issued, bool),
    first: bool,
) -> Result<(), AcmeAgentError> {
    let key = zeroize::Zeroizing::new(state.read(STATE_KEY)?.unwrap_or_default());
    let chain = state.read(STATE_CERT)?.unwrap_or_default();
    write_atomic(&config.out_dir, KEY_FILE, &key, 0o600)?;
    write_atomic(&config.out_dir, CERT_FILE, &chain, 0o644)?;
    notify(current, first);
    if let Some(cmd) = &config.on_rotate {
        let outcome = crate::hook::run(cmd, config.on_rotate_timeout).await;
        tracing::info!(result = outcome.as_str(), "--on-rotate ran");
    }
    Ok(())
}
