//! SPIFFE federation at the gate: a tenant's `[[tenants.federation]]`
//! entries name partner trust domains and their bundle endpoints. The gate
//! follows each endpoint ([`ward_client::federation::Follower`]) and, each
//! time a partner bundle changes, rebuilds the tenants' TLS configurations
//! so that client chains may end at the partner's roots.
//!
//! Trust is bound to the trust domain ([`DomainBinding`]): a client whose
//! SPIFFE ID is in a federated trust domain must chain to that domain's
//! roots, any other client to the tenant's own `client_ca`. A certificate
//! claiming `partner.example` but issued under our own root is refused, and
//! so is one of ours issued under the partner's root.
//!
//! Must never: accept a chain under roots of a trust domain other than the
//! leaf's, or keep trusting a partner after its relationship is removed
//! (reload drops its follower and its roots at once).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::CertificateError;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use ward_client::federation::{Endpoint, FederatedBundle, Follower, Refresh};
use ward_pki::TrustDomain;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::Error;
use crate::config::{Dur, GateConfig};

/// `[[tenants.federation]]`: one partner trust domain.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The partner's trust domain (`partner.example`).
    pub trust_domain: String,
    /// Its SPIFFE bundle endpoint (`https_web` profile).
    pub bundle_endpoint_url: String,
    /// Roots for the endpoint's TLS certificate (PEM); the web PKI roots
    /// when absent.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
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
        let mut refresh = Refresh::default();
        if let Some(floor) = &self.refresh_floor {
            if floor.0 < Duration::from_secs(1) || floor.0 > refresh.ceiling {
                return Err("federation.refresh_floor: between 1s and 1h".into());
            }
            refresh.floor = floor.0;
        }
        Ok((
            Endpoint {
                trust_domain,
                url: self.bundle_endpoint_url.clone(),
                ca_bundle: self.ca_bundle.clone(),
            },
            refresh,
        ))
    }

    /// Checks the settings without contacting the endpoint.
    pub fn validate(&self) -> Result<(), String> {
        self.endpoint().map(|_| ())
    }
}

type Key = (String, String, Option<PathBuf>, Duration);

struct Followed {
    follower: Follower,
    forward: tokio::task::JoinHandle<()>,
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// Every partner endpoint the configuration in force names.
#[derive(Default)]
pub struct Federation {
    followed: Mutex<HashMap<Key, Followed>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").finish_non_exhaustive()
    }
}

fn key_of(c: &FederationConfig, refresh: Refresh) -> Key {
    (
        c.trust_domain.to_ascii_lowercase(),
        c.bundle_endpoint_url.clone(),
        c.ca_bundle.clone(),
        refresh.floor,
    )
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
                wanted.insert(key_of(f, refresh), (endpoint, refresh));
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

    /// The last good bundle of `config`'s endpoint, if it is followed and
    /// one arrived.
    pub fn bundle(&self, config: &FederationConfig) -> Option<Arc<FederatedBundle>> {
        let (_, refresh) = config.endpoint().ok()?;
        let followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        followed
            .get(&key_of(config, refresh))
            .and_then(|f| f.follower.current())
    }

    /// Resolves when a followed bundle changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Which roots a client chain may end at, by the leaf's trust domain.
#[derive(Debug)]
pub struct DomainBinding {
    own: Vec<TrustAnchor<'static>>,
    partners: HashMap<String, Vec<TrustAnchor<'static>>>,
}

fn anchors(certs: &[CertificateDer<'static>]) -> Vec<TrustAnchor<'static>> {
    certs
        .iter()
        .filter_map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .ok()
                .map(|a| a.to_owned())
        })
        .collect()
}

impl DomainBinding {
    /// Own roots, and each federated trust domain's roots (a domain with
    /// no bundle yet has none: its clients are refused).
    pub fn new(
        own: &[CertificateDer<'static>],
        partners: &[(String, Vec<CertificateDer<'static>>)],
    ) -> Self {
        let mut map: HashMap<String, Vec<TrustAnchor<'static>>> = HashMap::new();
        for (td, roots) in partners {
            map.entry(td.to_ascii_lowercase())
                .or_default()
                .extend(anchors(roots));
        }
        DomainBinding {
            own: anchors(own),
            partners: map,
        }
    }

    /// Checks that the chain ends at the roots of the leaf's trust domain.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let unknown = || rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let Ok((_, leaf)) = X509Certificate::from_der(end_entity) else {
            return Err(unknown());
        };
        let domain = leaf
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::URI(u) => u
                        .strip_prefix("spiffe://")
                        .map(|rest| rest.split('/').next().unwrap_or("").to_ascii_lowercase()),
                    _ => None,
                })
            });
        let anchors = match domain.as_deref().and_then(|d| self.partners.get(d)) {
            Some(partner) => partner,
            None => &self.own,
        };
        if anchors.is_empty() {
            return Err(unknown());
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| unknown())?;
        cert.verify_for_usage(
            ward_tls::provider().signature_verification_algorithms.all,
            anchors,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|_| unknown())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose, SanType,
    };

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
                ("partner.example".into(), vec![partner.der().clone()]),
                ("pending.example".into(), Vec::new()),
            ],
        );
        let now = UnixTime::now();
        let check = |c: &CertificateDer<'_>| binding.check(c, &[], now).is_ok();
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
