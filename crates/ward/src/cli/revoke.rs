//! `ward revoke SERIAL`: revokes a certificate this CA issued, on a local CA
//! directory (`--dir`) or through a running CA's admin API (`--ca URL` with
//! the admin client certificate). Idempotent: revoking again keeps the first
//! time and reason.
//!
//! The local form works while `ward ca serve` runs (same database); the
//! server picks the revocation up at its next CRL refresh (`[revocation]
//! crl_refresh`), while the remote form re-signs the CRL at once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use hyper::Method;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use ward_ca::CaDir;
use ward_ca::authority::{Authority, Policy};
use ward_ca::http::crl::{RevokeRequest, RevokeResponse};
use ward_client::{CaClient, Identity};
use ward_pki::Serial;
use ward_pki::crl::{parse_reason, reason_name};
use ward_pki::issue::rfc3339;

use super::Outcome;

/// `ward revoke` arguments.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// Serial of the certificate, hex in any case, colons optional
    /// (`openssl x509 -serial` output works).
    serial: String,
    /// RFC 5280 reason: unspecified, keyCompromise, cACompromise,
    /// affiliationChanged, superseded, cessationOfOperation,
    /// privilegeWithdrawn, aACompromise.
    #[arg(long)]
    reason: Option<String>,
    /// CA directory made by `ward ca init` (local mode).
    #[arg(long, required_unless_present = "ca", conflicts_with = "ca")]
    dir: Option<PathBuf>,
    /// Database URL, if not DIR/ward.db (local mode).
    #[arg(long, env = "WARD_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// URL of a running CA, https://HOST:PORT (remote mode, admin mTLS).
    #[arg(long, requires_all = ["admin_cert", "admin_key"])]
    ca: Option<String>,
    /// Admin client certificate (DIR/admin.crt).
    #[arg(long)]
    admin_cert: Option<PathBuf>,
    /// Admin private key (DIR/admin.key).
    #[arg(long)]
    admin_key: Option<PathBuf>,
    /// Roots to verify the CA with (default: root.crt beside the admin certificate).
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
}

async fn local_authority(
    dir: &std::path::Path,
    database: Option<&str>,
) -> anyhow::Result<Authority> {
    let dir = CaDir::new(dir);
    let config = dir.config()?;
    let url = database
        .map(str::to_owned)
        .unwrap_or_else(|| dir.path().join("ward.db").display().to_string());
    let store = ward_store::connect(&url)
        .await
        .context("opening the CA database")?;
    Ok(Authority::new(
        Policy {
            trust_domain: config.ca.trust_domain.clone(),
            default_ttl: config.issuance.default_ttl()?,
            max_ttl: config.issuance.max_ttl()?,
        },
        dir.intermediate_issuer()?,
        &dir.roots()?,
        Arc::clone(&store),
    ))
}

fn remote_client(args: &RevokeArgs, url: &str) -> anyhow::Result<CaClient> {
    let cert = args
        .admin_cert
        .as_deref()
        .context("--admin-cert is required with --ca")?;
    let key = args
        .admin_key
        .as_deref()
        .context("--admin-key is required with --ca")?;
    let bundle = match &args.ca_bundle {
        Some(b) => b.clone(),
        None => cert.with_file_name("root.crt"),
    };
    let roots = ward_ca::dir::read_certs(&bundle)?;
    let chain = ward_ca::dir::read_certs(cert)?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| anyhow::anyhow!("{} holds no usable private key", key.display()))?;
    Ok(CaClient::new(url, &roots, Some(Identity { chain, key }))?)
}

/// Runs `ward revoke`.
pub(crate) async fn run(args: RevokeArgs) -> anyhow::Result<Outcome> {
    let serial: Serial = args.serial.parse().context("SERIAL")?;
    let reason = args
        .reason
        .as_deref()
        .map(parse_reason)
        .transpose()
        .context("--reason")?;
    let answer = match (&args.dir, &args.ca) {
        (Some(dir), _) => {
            let authority = local_authority(dir, args.database.as_deref()).await?;
            let result = authority
                .revoke_certificate(&serial, reason, OffsetDateTime::now_utc())
                .await
                .with_context(|| format!("cannot revoke {serial}"));
            authority.store().close().await;
            let r = result?;
            RevokeResponse {
                serial: r.serial.to_string(),
                revoked_at: rfc3339(r.revoked_at),
                reason: reason_name(r.reason.unwrap_or(0))
                    .unwrap_or("unspecified")
                    .to_owned(),
                newly_revoked: r.newly_revoked,
            }
        }
        (None, Some(url)) => {
            let client = remote_client(&args, url)?;
            let request = RevokeRequest {
                serial: serial.to_string(),
                reason: reason.and_then(reason_name).map(str::to_owned),
            };
            client
                .json::<RevokeResponse>(Method::POST, "/v1/revoke", Some(&request))
                .await
                .with_context(|| format!("cannot revoke {serial}"))?
        }
        (None, None) => anyhow::bail!("either --dir or --ca is required"),
    };
    if answer.newly_revoked {
        println!(
            "revoked {} ({}) at {}",
            answer.serial, answer.reason, answer.revoked_at
        );
    } else {
        println!(
            "{} was already revoked at {} ({}); the first time and reason are kept",
            answer.serial, answer.revoked_at, answer.reason
        );
    }
    Ok(Outcome::Success)
}
