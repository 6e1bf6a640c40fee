//! `ward ca serve --acme-*`: the CA's HTTPS API presents a certificate
//! from an ACME CA (so clients that trust only public roots reach it),
//! kept in a state directory and renewed by `ward-acme`. tls-alpn-01 is
//! answered on the API listener itself (its resolver hands out the
//! challenge certificate for ALPN `acme-tls/1`; client certificates are
//! optional there), http-01 on an extra plain listener, dns-01 by a hook.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ward_acme::{AcmeSettings, ChallengeKind, Challenges, Issued, Manager, Observer};
use ward_tls::credentials::Credentials;

use crate::serve::ServeError;

/// The API's ACME certificate, before the listeners start.
pub(crate) struct Prepared {
    settings: AcmeSettings,
    /// What the API presents (the stored certificate or a stand-in).
    pub(crate) credentials: Arc<Credentials>,
    /// Pending challenge answers.
    pub(crate) challenges: Challenges,
}

fn err(e: impl std::fmt::Display) -> ServeError {
    ServeError::Server(format!("ACME: {e}"))
}

/// Loads the stored certificate, or a self-signed stand-in until the first
/// order completes.
pub(crate) fn prepare(settings: AcmeSettings) -> Result<Prepared, ServeError> {
    settings.validate().map_err(err)?;
    let state = ward_acme::state::StateDir::open(&settings.state_dir).map_err(err)?;
    let first: Arc<CertifiedKey> = match state.current(&settings.domains) {
        Some(current) => current.certified,
        None => {
            let (cert, key) = ward_acme::state::placeholder(&settings.domains).map_err(err)?;
            ward_acme::state::Current::from_pem(cert.as_bytes(), key.as_bytes())
                .map_err(err)?
                .certified
        }
    };
    Ok(Prepared {
        settings,
        credentials: Arc::new(Credentials::of(first)),
        challenges: Challenges::default(),
    })
}

/// Puts each new certificate into the API's credential store.
struct Publish(Arc<Credentials>);

impl Observer for Publish {
    fn installed(&self, current: &Issued) {
        self.0.publish(current.certified.clone());
        tracing::info!(serial = %current.serial, "the API serves the renewed ACME certificate");
    }
}

impl Prepared {
    /// Starts the http-01 listener (if any) and the manager.
    pub(crate) async fn start(
        self,
        resolver: Arc<Credentials>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, ServeError> {
        let mut tasks = Vec::new();
        if let (ChallengeKind::Http01, Some(addr)) =
            (self.settings.challenge, &self.settings.http01_listen)
        {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| err(format!("binding the http-01 listener {addr}: {e}")))?;
            tasks.push(tokio::spawn(ward_acme::http01::serve(
                listener,
                self.challenges.clone(),
                stop.clone(),
            )));
        }
        let manager = Manager::new(self.settings, self.challenges, Arc::new(Publish(resolver)))
            .map_err(err)?;
        tasks.push(tokio::spawn(manager.run(stop.clone())));
        Ok(tasks)
    }
}
