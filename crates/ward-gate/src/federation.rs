//! SPIFFE federation at the gate: a tenant's `[[tenants.federation]]`
//! entries name partner trust domains and their bundle endpoints
//! (`https_web` or `https_spiffe` profile), and with `[identity]` the gate
//! also takes the partners its CA follows (`GET /v1/federation`) for the
//! tenants that trust the `[identity]` bundle. The gate follows them with
//! ward-client ([`ward_client::federation::Follower`],
//! [`ward_client::federated::Federation`]) and, each time a partner bundle
//! changes, rebuilds the tenants' TLS configurations so that client chains
//! may end at the partner's roots.
//!
//! Trust is bound to the trust domain
//! ([`ward_client::federated::DomainBinding`]): a client whose SPIFFE ID is
//! in a federated trust domain must chain to that domain's roots, any
//! other client to the tenant's own `client_ca`. A certificate claiming
//! `partner.example` but issued under our own root is refused, and so is
//! one of ours issued under the partner's root.
//!
//! Must never: accept a chain under roots of a trust domain other than the
//! leaf's, or keep trusting a partner after its relationship is removed
//! (reload drops its follower and its roots at once; a partner the CA
//! drops is dropped at the next ask).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use ward_client::federated::{Federation as Partners, FromCa};
use ward_client::federation::{Endpoint, FederatedBundle, Follower, Refresh};
use ward_pki::{SpiffeId, TrustDomain};

use crate::Error;
use crate::config::{Dur, GateConfig};

/// `[[tenants.federation]]`: one partner trust domain.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The partner's trust domain (`partner.example`).
    pub trust_domain: String,
    /// Its SPIFFE bundle endpoint.
    pub bundle_endpoint_url: String,
    /// `https_web` (default) or `https_spiffe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `https_web`: roots for the endpoint's TLS certificate (PEM); the web
    /// PKI roots when absent.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// `https_spiffe`: the SPIFFE ID of the endpoint's X509-SVID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spiffe_id: Option<String>,
    /// `https_spiffe`: the partner's bundle obtained out of band (PEM roots
    /// or a SPIFFE bundle), authenticating the first fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// Shortest refresh interval (default 5 s); the bundle's
    /// `spiffe_refresh_hint` is clamped to this .. 1 h.
    #[serde(default)]
    pub refresh_floor: Option<Dur>,
}

impl FederationConfig {
    fn endpoint(&self) -> Result<(Endpoint, Refresh), String> {
        let trust_domain = self
            .trust_domain
            .parse::<TrustDomain>()
            .map_err(|e| format!("federation.trust_domain: {e}"))?;
        if !self.bundle_endpoint_url.starts_with("https://") {
            return Err(format!(
                "federation.bundle_endpoint_url {:?}: must be an https:// URL",
                self.bundle_endpoint_url
            ));
        }
        let url = self.bundle_endpoint_url.clone();
        let endpoint = match self.profile.as_deref().unwrap_or("https_web") {
            "https_web" => {
                if self.endpoint_spiffe_id.is_some() || self.bundle.is_some() {
                    return Err(
                        "federation: endpoint_spiffe_id and bundle belong to profile = \"https_spiffe\"".into(),
                    );
                }
                Endpoint::web(trust_domain, url, self.ca_bundle.clone())
            }
            "https_spiffe" => {
                if self.ca_bundle.is_some() {
                    return Err("federation: ca_bundle belongs to profile = \"https_web\" (https_spiffe trusts the partner's bundle)".into());
                }
                let (Some(id), Some(bundle)) = (&self.endpoint_spiffe_id, &self.bundle) else {
                    return Err(
                        "federation: profile = \"https_spiffe\" needs endpoint_spiffe_id and bundle"
                            .into(),
                    );
                };
                let id: SpiffeId = id
                    .parse()
                    .map_err(|e| format!("federation.endpoint_spiffe_id {id:?}: {e}"))?;
                if id.trust_domain() != trust_domain {
                    return Err(format!(
                        "federation.endpoint_spiffe_id {id} is not in trust domain {trust_domain}"
                    ));
                }
                Endpoint::spiffe(trust_domain, url, id, bundle.clone())
            }
            other => {
                return Err(format!(
                    "federation.profile {other:?}: https_web or https_spiffe"
                ));
            }
        };
        let mut refresh = Refresh::default();
        if let Some(floor) = &self.refresh_floor {
            if floor.0 < Duration::from_secs(1) || floor.0 > refresh.ceiling {
                return Err("federation.refresh_floor: between 1s and 1h".into());
            }
            refresh.floor = floor.0;
        }
        Ok((endpoint, refresh))
    }

    /// Checks the settings without contacting the endpoint.
    pub fn validate(&self) -> Result<(), String> {
        self.endpoint().map(|_| ())
    }
}

type Key = (Endpoint, Duration);

struct Followed {
    follower: Follower,
    forward: tokio::task::JoinHandle<()>,
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// The partners the CA follows, asked with the gate's identity.
struct FromIdentity {
    partners: Partners,
    forward: tokio::task::JoinHandle<()>,
}

impl Drop for FromIdentity {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// Every partner endpoint the configuration in force names, and the
/// partners of the CA.
#[derive(Default)]
pub struct Federation {
    followed: Mutex<HashMap<Key, Followed>>,
    from_ca: Mutex<Option<FromIdentity>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").finish_non_exhaustive()
    }
}

impl Federation {
    /// Follows exactly the endpoints `config` names: new ones start,
    /// removed ones stop (their bundles are forgotten). Needs a tokio
    /// runtime.
    pub fn configure(&self, config: &GateConfig) -> Result<(), Error> {
        let mut wanted = HashMap::new();
        for t in &config.tenants {
            for f in &t.federation {
                let (endpoint, refresh) = f
                    .endpoint()
                    .map_err(|e| Error::Config(format!("tenant {:?}: {e}", t.name)))?;
                wanted.insert((endpoint.clone(), refresh.floor), (endpoint, refresh));
            }
        }
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        // Start every new follower first: a bad one (unreadable ca_bundle)
        // fails the whole call and leaves what is followed unchanged.
        let mut started = Vec::new();
        for (key, (endpoint, refresh)) in wanted.iter() {
            if followed.contains_key(key) {
                continue;
            }
            let follower = Follower::spawn(endpoint.clone(), *refresh)
                .map_err(|e| Error::Config(format!("federation: {e}")))?;
            let mut rx = follower.subscribe();
            let changed = self.changed.clone();
            let forward = tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    changed.notify_one();
                }
            });
            started.push((key.clone(), Followed { follower, forward }));
        }
        followed.retain(|k, _| wanted.contains_key(k));
        followed.extend(started);
        Ok(())
    }

    /// Starts taking the partners the CA follows (`[identity] federation`),
    /// asked with the gate's identity after the CA's hint (at least every
    /// second, at most every hour). Needs a tokio runtime.
    pub fn follow_ca(&self, source: FromCa) -> Result<(), Error> {
        let refresh = Refresh {
            floor: Duration::from_secs(1),
            ..Refresh::default()
        };
        let partners = Partners::start(Vec::new(), refresh, Some(source))
            .map_err(|e| Error::Config(format!("identity: federation: {e}")))?;
        let mut rx = partners.subscribe();
        let changed = self.changed.clone();
        let forward = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                changed.notify_one();
            }
        });
        *self.from_ca.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(FromIdentity { partners, forward });
        Ok(())
    }

    /// The last good bundle of `config`'s endpoint, if it is followed and
    /// one arrived.
    pub fn bundle(&self, config: &FederationConfig) -> Option<Arc<FederatedBundle>> {
        let (endpoint, refresh) = config.endpoint().ok()?;
        let followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        followed
            .get(&(endpoint, refresh.floor))
            .and_then(|f| f.follower.current())
    }

    /// The roots of each partner trust domain the CA follows, as last
    /// answered (empty without `[identity] federation`).
    pub fn from_ca(&self) -> Vec<(TrustDomain, Vec<CertificateDer<'static>>)> {
        self.from_ca
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|f| f.partners.roots())
            .unwrap_or_default()
    }

    /// Resolves when a followed bundle changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose, SanType,
    };

    use rustls_pki_types::UnixTime;
    use ward_client::federated::DomainBinding;
    use ward_tls::verifier::ClientCheck;

    use super::*;

    fn root(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, id: &str) -> CertificateDer<'static> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, issuer).unwrap().der().clone()
    }

    #[test]
    fn each_trust_domain_verifies_against_its_own_roots_only() {
        let (ours, partner, third) = (root("Ours"), root("Partner"), root("Third"));
        let own = vec![ours.der().clone()];
        let binding = DomainBinding::new(
            &own,
            &[
                (
                    "partner.example".parse().unwrap(),
                    vec![partner.der().clone()],
                ),
                ("pending.example".parse().unwrap(), Vec::new()),
            ],
        );
        let now = UnixTime::now();
        let check = |c: &CertificateDer<'_>| ClientCheck::check(&binding, c, &[], now).is_ok();
        assert!(check(&leaf(&ours, "spiffe://example.org/app")));
        assert!(check(&leaf(&partner, "spiffe://partner.example/billing")));
        // Each trust domain's IDs under the other's root.
        assert!(!check(&leaf(&ours, "spiffe://partner.example/billing")));
        assert!(!check(&leaf(&partner, "spiffe://example.org/app")));
        // A domain not federated falls back to our roots; the partner's
        // root does not vouch for it.
        assert!(!check(&leaf(&partner, "spiffe://other.example/x")));
        assert!(!check(&leaf(&third, "spiffe://example.org/app")));
        // A federated domain whose bundle has not arrived: nobody passes.
        assert!(!check(&leaf(&ours, "spiffe://pending.example/x")));
    }
}
