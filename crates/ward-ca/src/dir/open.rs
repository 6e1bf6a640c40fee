//! The one way an [`Authority`] is assembled from a CA directory, for
//! `ward ca serve` and for the commands that act on a directory locally
//! (`ward cert create`, `ward token --dir`, `ward revoke --dir`): the policy
//! of `ca.toml`, the intermediate as issuer, the roots, the store, and the
//! CRL and OCSP URLs written into certificates.

use std::sync::Arc;

use time::OffsetDateTime;
use ward_store::Store;

use super::CaDir;
use crate::authority::{Authority, Policy};
use crate::{CaConfig, Error};

/// How [`CaDir::open_authority`] reaches the store.
#[derive(Clone, Copy, Debug)]
pub enum Storage<'a> {
    /// The store as it is, never a new one, and nothing written to it on
    /// opening (the command-line tools).
    Existing {
        /// Database URL overriding ca.toml's (`--database`).
        database: Option<&'a str>,
    },
    /// The store of a serving CA: created when missing only with `init`
    /// (`--init-storage`), and the directory's own certificates recorded.
    Serving {
        /// Database URL overriding ca.toml's (`--database`).
        database: Option<&'a str>,
        /// Create the store when there is none.
        init: bool,
        /// The time the certificates are recorded at.
        now: OffsetDateTime,
    },
}

impl Storage<'_> {
    async fn open(self, dir: &CaDir, config: &CaConfig) -> Result<Arc<dyn Store>, Error> {
        match self {
            Storage::Existing { database } => dir.open_store(config, database).await,
            Storage::Serving {
                database,
                init: true,
                now,
            } => dir.init_store(config, database, now).await,
            Storage::Serving {
                database,
                init: false,
                now,
            } => {
                let store = dir.open_store(config, database).await?;
                dir.record_own_certificates(store.as_ref(), now).await?;
                Ok(store)
            }
        }
    }
}

/// The issuance policy `ca.toml` sets.
pub fn policy(config: &CaConfig) -> Result<Policy, Error> {
    Ok(Policy {
        trust_domain: config.ca.trust_domain.clone(),
        default_ttl: config.issuance.default_ttl()?,
        max_ttl: config.issuance.max_ttl()?,
    })
}

impl CaDir {
    /// The authority of this directory: signing with the intermediate,
    /// recording in its store, writing ca.toml's CRL and OCSP URLs into
    /// certificates. It publishes no CRL until told to
    /// ([`Authority::with_revocation`]).
    ///
    /// Everything that can fail is read before the store is opened, so a
    /// bad directory leaves the store untouched.
    pub async fn open_authority(
        &self,
        config: &CaConfig,
        storage: Storage<'_>,
    ) -> Result<Authority, Error> {
        let policy = policy(config)?;
        let issuer = self.intermediate_issuer()?;
        let roots = self.roots()?;
        let store = storage.open(self, config).await?;
        let authority = Authority::new(policy, issuer, &roots, store.clone())
            .with_certificate_urls(
                config.revocation.crl_url.clone(),
                config.revocation.ocsp_url.clone(),
            );
        // A rotation that has switched signs here too, and a root rotation's
        // bundle and rollover certificates apply (`ward cert create`,
        // a restarted `ward ca serve`).
        let rows = store
            .intermediates()
            .await
            .map_err(|e| Error::Storage(format!("reading the CA intermediates: {e}")))?;
        let roots = store
            .roots()
            .await
            .map_err(|e| Error::Storage(format!("reading the CA roots: {e}")))?;
        super::rotation::apply(
            self,
            &authority,
            &rows,
            &roots,
            &mut Vec::new(),
            OffsetDateTime::now_utc(),
        )?;
        Ok(authority)
    }
}
