//! The CA follows partner trust domains (`[federation."partner.example"]`
//! in ca.toml) with ward-client's [`Follower`] and hands their last good
//! bundles to its own agents, gates and clients at `GET /v1/federation`,
//! so that a node needs no per-partner settings.
//!
//! Must never: hand out a bundle that failed the follower's checks, or
//! keep handing out a partner removed from ca.toml (a restart forgets it,
//! and followers see it gone at their next refresh).

use std::path::Path;
use std::time::Duration;

use ward_api::FederatedBundles;
use ward_client::federation::Follower;
use ward_pki::TrustDomain;
use ward_pki::jwt::JwkSet;

use crate::Error;
use crate::config::CaConfig;

/// The partners followed by this CA process.
#[derive(Debug)]
pub struct CaFederation {
    own: TrustDomain,
    followers: Vec<Follower>,
    refresh_hint: u64,
}

impl CaFederation {
    /// Starts following every partner of `config` (paths relative to
    /// `base`, the CA directory); `hint` is what followers of this CA are
    /// told to wait between two asks. Fails on an unusable setting or
    /// file. Needs a Tokio runtime.
    pub fn start(config: &CaConfig, base: &Path, hint: Duration) -> Result<Self, Error> {
        let mut followers = Vec::with_capacity(config.federation.len());
        for (td, partner) in &config.federation {
            let (endpoint, refresh) = partner.endpoint(td, base)?;
            let follower = Follower::spawn(endpoint, refresh)
                .map_err(|e| Error::Config(format!("ca.toml: federation.{td:?}: {e}")))?;
            tracing::info!(
                trust_domain = %td,
                profile = follower.endpoint().profile.name(),
                url = %follower.endpoint().url,
                "following a partner trust domain"
            );
            followers.push(follower);
        }
        Ok(CaFederation {
            own: config.ca.trust_domain.clone(),
            followers,
            refresh_hint: hint.as_secs().max(1),
        })
    }

    /// This CA's trust domain (the callers of `GET /v1/federation`).
    pub fn own_trust_domain(&self) -> &TrustDomain {
        &self.own
    }

    /// The answer of `GET /v1/federation`: every partner whose bundle
    /// arrived.
    pub fn answer(&self) -> FederatedBundles<JwkSet> {
        FederatedBundles {
            refresh_hint: self.refresh_hint,
            bundles: self
                .followers
                .iter()
                .filter_map(|f| {
                    f.current()
                        .map(|b| (b.trust_domain.as_str().to_owned(), b.set.clone()))
                })
                .collect(),
        }
    }
}
