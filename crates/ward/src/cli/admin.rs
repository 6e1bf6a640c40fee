//! The `--dir DIR | --ca URL --admin-cert C --admin-key K` choice shared by
//! every administrative command (`ward token`, `ward revoke`): open the CA
//! directory's database locally, or reach a running CA's admin API with the
//! admin client certificate.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use ward_ca::CaDir;
use ward_ca::authority::Authority;
use ward_ca::dir::Storage;
use ward_client::{CaClient, Identity};

/// Which CA an administrative command acts on.
#[derive(Debug, Args)]
pub(crate) struct AdminTarget {
    /// CA directory made by `ward ca init` (local mode).
    #[arg(long, required_unless_present = "ca", conflicts_with = "ca")]
    dir: Option<PathBuf>,
    /// Database URL, if not ca.toml's (default DIR/ward.db) (local mode).
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

/// Where an administrative operation goes.
pub(crate) enum Backend {
    /// The CA directory's database, opened here.
    Local(Box<Authority>),
    /// A running CA's admin API.
    Remote(CaClient),
}

impl AdminTarget {
    /// Opens the CA this target names.
    pub(crate) async fn open(&self) -> anyhow::Result<Backend> {
        match (&self.dir, &self.ca) {
            (Some(_), _) => Ok(Backend::Local(Box::new(authority(self).await?))),
            (None, Some(url)) => {
                let cert = self
                    .admin_cert
                    .as_deref()
                    .context("--admin-cert is required with --ca")?;
                let key = self
                    .admin_key
                    .as_deref()
                    .context("--admin-key is required with --ca")?;
                let bundle = match &self.ca_bundle {
                    Some(b) => b.clone(),
                    None => cert.with_file_name("root.crt"),
                };
                let roots = ward_ca::dir::read_certs(&bundle)?;
                let chain = ward_ca::dir::read_certs(cert)?;
                let key_pem = zeroize::Zeroizing::new(
                    std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
                );
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    anyhow::anyhow!("{} holds no usable private key", key.display())
                })?;
                Ok(Backend::Remote(CaClient::new(
                    url,
                    &roots,
                    Some(Identity { chain, key }),
                )?))
            }
            (None, None) => anyhow::bail!("either --dir or --ca is required"),
        }
    }
}

/// The authority of the local CA directory, on its existing store (never a
/// new one).
async fn authority(local: &AdminTarget) -> anyhow::Result<Authority> {
    let dir = CaDir::new(local.dir.as_deref().context("--dir is required")?);
    let config = dir.config()?;
    let database = local.database.as_deref();
    Ok(dir
        .open_authority(&config, Storage::Existing { database })
        .await?)
}
