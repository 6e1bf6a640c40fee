//! The `--acme-*` flags shared by `gate serve`, `ca serve` and `agent
//! run`: where a server certificate comes from when it comes from an ACME
//! CA (docs/acme-client.md).

use std::path::PathBuf;

use clap::Args;
use ward_acme::{AcmeSettings, ChallengeKind};

/// ACME client flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct AcmeClientArgs {
    /// Obtain and renew the server certificate from this ACME directory
    /// (https://…/directory).
    #[arg(long, requires = "acme_domain")]
    pub(crate) acme_directory: Option<String>,
    /// A DNS name of the ACME certificate (repeatable; the first is its subject).
    #[arg(long, requires = "acme_directory")]
    pub(crate) acme_domain: Vec<String>,
    /// The challenge to answer: tls-alpn-01 (on the TLS listener),
    /// http-01 (needs --acme-http01-listen) or dns-01 (needs --acme-dns-hook).
    #[arg(long, default_value = "tls-alpn-01", value_parser = |s: &str| s.parse::<ChallengeKind>())]
    pub(crate) acme_challenge: ChallengeKind,
    /// Account contact, e.g. mailto:ops@example.org.
    #[arg(long)]
    pub(crate) acme_contact: Option<String>,
    /// PEM roots of the ACME server's HTTPS certificate (a private ACME
    /// server); default: the system's roots.
    #[arg(long)]
    pub(crate) acme_ca_bundle: Option<PathBuf>,
    /// External account binding key id.
    #[arg(long, requires = "acme_eab_hmac_file")]
    pub(crate) acme_eab_kid: Option<String>,
    /// File holding the EAB HMAC key (base64url).
    #[arg(long, requires = "acme_eab_kid")]
    pub(crate) acme_eab_hmac_file: Option<PathBuf>,
    /// Certificate profile to request (e.g. shortlived).
    #[arg(long)]
    pub(crate) acme_profile: Option<String>,
    /// Where the account key and the certificate are kept.
    #[arg(long, default_value = "acme-state")]
    pub(crate) acme_state_dir: PathBuf,
    /// dns-01: run as HOOK present|cleanup FQDN VALUE.
    #[arg(long)]
    pub(crate) acme_dns_hook: Option<PathBuf>,
    /// http-01: the plain listener for challenges (e.g. 0.0.0.0:80).
    #[arg(long)]
    pub(crate) acme_http01_listen: Option<String>,
}

impl AcmeClientArgs {
    /// The settings, when --acme-directory was given.
    pub(crate) fn settings(&self) -> Option<AcmeSettings> {
        let directory = self.acme_directory.clone()?;
        Some(AcmeSettings {
            directory,
            domains: self.acme_domain.clone(),
            contact: self.acme_contact.clone(),
            challenge: self.acme_challenge,
            ca_bundle: self.acme_ca_bundle.clone(),
            eab_kid: self.acme_eab_kid.clone(),
            eab_hmac_file: self.acme_eab_hmac_file.clone(),
            profile: self.acme_profile.clone(),
            state_dir: self.acme_state_dir.clone(),
            dns_hook: self.acme_dns_hook.clone(),
            http01_listen: self.acme_http01_listen.clone(),
        })
    }
}
