//! Federated trust for a process using `ward-client`: the partner trust
//! domains' bundles, followed from their bundle endpoints
//! ([`crate::federation::Follower`]) and/or taken from our own Ward CA,
//! which follows them for its whole trust domain (`GET /v1/federation`,
//! [`FromCa`]); and peers of those domains verified in the rustls
//! configurations a [`crate::Rotator`] builds
//! ([`crate::Rotator::client_config_federated`],
//! [`crate::Rotator::server_config_federated`]).
//!
//! Trust is bound per trust domain ([`DomainBinding`]): a peer whose SPIFFE
//! ID is in a federated domain must chain to that domain's roots (a domain
//! whose bundle has not arrived yet admits nobody); any other peer must
//! chain to our own roots. A partner's root never vouches for our IDs or
//! for a third domain's.
//!
//! The configurations take the bundles present when they are built: build
//! them again after [`Federation::changed`] (new handshakes then use the
//! new roots; open connections are not affected).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::Method;
use rustls::CertificateError;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::TrustAnchor;
use rustls_pki_types::{ServerName, UnixTime};
use tokio::sync::watch;
use ward_api::{FederatedBundles, paths};
use ward_pki::TrustDomain;
use ward_pki::jwt::JwkSet;
use ward_tls::verifier::{ClientCheck, ServerCheck};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::federation::{
    Endpoint, FederatedBundle, FederationError, Follower, Refresh, parse_bundle,
};
use crate::{CaClient, ClientError, Identity, Svid};

/// Each partner trust domain with its last good bundle (`None`: followed,
/// but no bundle arrived yet: its peers are refused).
pub type BundleSet = Arc<BTreeMap<TrustDomain, Option<Arc<FederatedBundle>>>>;

/// Where the CA's federated bundles come from: the CA's URL and roots, and
/// the identity to ask with (`GET /v1/federation` is mTLS). Made by
/// [`crate::Rotator::federation_from_ca`].
#[derive(Clone)]
pub struct FromCa {
    ca_url: String,
    anchors: Vec<CertificateDer<'static>>,
    svid: watch::Receiver<Arc<Svid>>,
}

impl std::fmt::Debug for FromCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromCa")
            .field("ca_url", &self.ca_url)
            .finish_non_exhaustive()
    }
}

impl FromCa {
    pub(crate) fn new(
        ca_url: String,
        anchors: Vec<CertificateDer<'static>>,
        svid: watch::Receiver<Arc<Svid>>,
    ) -> Self {
        FromCa {
            ca_url,
            anchors,
            svid,
        }
    }

    /// Asks the CA once: each partner's bundle (checked like a bundle
    /// endpoint's answer) and the CA's refresh hint in seconds.
    pub async fn fetch(
        &self,
    ) -> Result<(BTreeMap<TrustDomain, Arc<FederatedBundle>>, u64), ClientError> {
        let svid = self.svid.borrow().clone();
        if svid.is_expired(SystemTime::now()) {
            return Err(ClientError::Expired);
        }
        let identity = Identity {
            chain: svid.chain().to_vec(),
            key: svid.private_key(),
        };
        let client = CaClient::new(&self.ca_url, &self.anchors, Some(identity))?;
        let answer: FederatedBundles<JwkSet> = client
            .json(Method::GET, paths::FEDERATION, None::<&()>)
            .await?;
        let mut out = BTreeMap::new();
        for (name, set) in answer.bundles {
            let td: TrustDomain = name.parse().map_err(|e| {
                ClientError::Protocol(format!("federated trust domain {name:?}: {e}"))
            })?;
            let bundle = parse_bundle(&td, &set.to_json())
                .map_err(|e| ClientError::Protocol(format!("federated bundle of {td}: {e}")))?;
            out.insert(td, Arc::new(bundle));
        }
        Ok((out, answer.refresh_hint))
    }
}

/// Partner trust domains followed at once; dropping it stops following.
#[derive(Debug)]
pub struct Federation {
    followers: Vec<Follower>,
    set: watch::Receiver<BundleSet>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Federation {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The set: the CA's partners, then our own endpoints (which win for a
/// trust domain both name).
fn merge(
    followers: &[(TrustDomain, watch::Receiver<Option<Arc<FederatedBundle>>>)],
    from_ca: &BTreeMap<TrustDomain, Arc<FederatedBundle>>,
) -> BundleSet {
    let mut set: BTreeMap<TrustDomain, Option<Arc<FederatedBundle>>> = from_ca
        .iter()
        .map(|(td, b)| (td.clone(), Some(b.clone())))
        .collect();
    for (td, rx) in followers {
        set.insert(td.clone(), rx.borrow().clone());
    }
    Arc::new(set)
}

impl Federation {
    /// Starts following every endpoint (first fetches start at once). Fails
    /// on a configuration error (URL, `ca_bundle` file) or a trust domain
    /// named twice. Must be called inside a Tokio runtime.
    pub fn follow(endpoints: Vec<Endpoint>, refresh: Refresh) -> Result<Self, FederationError> {
        Self::start(endpoints, refresh, None)
    }

    /// [`Federation::follow`], plus the partners our CA follows (asked
    /// again after the CA's hint, clamped to `refresh`; a partner the CA
    /// drops is dropped here at the next answer). An endpoint named here
    /// wins over the CA's bundle of the same trust domain.
    pub fn start(
        endpoints: Vec<Endpoint>,
        refresh: Refresh,
        from_ca: Option<FromCa>,
    ) -> Result<Self, FederationError> {
        let mut followers: Vec<Follower> = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if followers
                .iter()
                .any(|f| f.endpoint().trust_domain == endpoint.trust_domain)
            {
                return Err(FederationError::Config(format!(
                    "trust domain {} is federated twice",
                    endpoint.trust_domain
                )));
            }
            followers.push(Follower::spawn(endpoint, refresh)?);
        }
        let subs: Vec<_> = followers
            .iter()
            .map(|f| (f.endpoint().trust_domain.clone(), f.subscribe()))
            .collect();
        let (ca_tx, ca_rx) = watch::channel(Arc::new(BTreeMap::new()));
        let (tx, mut set) = watch::channel(merge(&subs, &ca_rx.borrow()));
        // A follower may have its first bundle before `subs` subscribed:
        // it is in the first set then, and `changed` still reports it.
        if set.borrow().values().any(Option::is_some) {
            set.mark_changed();
        }
        let tx = Arc::new(tx);
        let publish = {
            let tx = tx.clone();
            let subs = subs.clone();
            let ca_rx = ca_rx.clone();
            move || {
                let next = merge(&subs, &ca_rx.borrow());
                tx.send_if_modified(|cur| {
                    if *cur == next {
                        return false;
                    }
                    *cur = next;
                    true
                });
            }
        };
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = subs
            .iter()
            .map(|(_, rx)| {
                let mut rx = rx.clone();
                let publish = publish.clone();
                tokio::spawn(async move {
                    while rx.changed().await.is_ok() {
                        publish();
                    }
                })
            })
            .collect();
        if let Some(source) = from_ca {
            let mut rx = ca_rx.clone();
            let publish = publish.clone();
            tasks.push(tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    publish();
                }
            }));
            tasks.push(tokio::spawn(poll_ca(source, refresh, ca_tx)));
        }
        Ok(Federation {
            followers,
            set,
            tasks,
        })
    }

    /// Every change of the set of partner bundles.
    pub fn subscribe(&self) -> watch::Receiver<BundleSet> {
        self.set.clone()
    }

    /// The partner trust domains, each with its last good bundle (`None`
    /// until the first one arrived).
    pub fn bundles(&self) -> Vec<(TrustDomain, Option<Arc<FederatedBundle>>)> {
        self.set
            .borrow()
            .iter()
            .map(|(td, b)| (td.clone(), b.clone()))
            .collect()
    }

    /// The X.509 roots of every partner trust domain, as last fetched.
    pub fn roots(&self) -> Vec<(TrustDomain, Vec<CertificateDer<'static>>)> {
        self.bundles()
            .into_iter()
            .map(|(td, b)| (td, b.map(|b| b.roots.clone()).unwrap_or_default()))
            .collect()
    }

    /// Resolves when some partner's bundle changed since the last call
    /// (at once the first time a bundle has arrived since this was made).
    pub async fn changed(&mut self) {
        // The sender lives as long as the tasks, which live as long as
        // `self`: an error cannot happen while `self` exists unless no
        // source can ever change (then this waits forever).
        if self.set.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The local endpoints followed.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.followers.iter().map(Follower::endpoint)
    }

    /// The binding of trust domains to roots for `own` roots plus the
    /// partners' current ones.
    pub fn binding(&self, own: &[CertificateDer<'static>]) -> DomainBinding {
        DomainBinding::new(own, &self.roots())
    }
}

/// Asks the CA for its partners' bundles until dropped; a failed answer
/// keeps the last good set.
async fn poll_ca(
    source: FromCa,
    refresh: Refresh,
    tx: watch::Sender<Arc<BTreeMap<TrustDomain, Arc<FederatedBundle>>>>,
) {
    loop {
        let wait = match source.fetch().await {
            Ok((set, hint)) => {
                tx.send_if_modified(|cur| {
                    if **cur == set {
                        return false;
                    }
                    tracing::info!(
                        ca = %source.ca_url,
                        trust_domains = ?set.keys().map(TrustDomain::as_str).collect::<Vec<_>>(),
                        "federated bundles from the CA updated"
                    );
                    *cur = Arc::new(set);
                    true
                });
                refresh.interval(Some(hint))
            }
            Err(ClientError::Api { status, .. }) if status == 404 => {
                // A CA without the route: ask again rarely.
                tracing::debug!(ca = %source.ca_url, "the CA serves no federated bundles");
                refresh.ceiling
            }
            Err(e) => {
                tracing::warn!(
                    ca = %source.ca_url,
                    error = %e,
                    "federated bundles from the CA refused; the last good ones stay"
                );
                refresh.floor
            }
        };
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
    }
}

/// Which roots vouch for which trust domain.
#[derive(Debug, Clone)]
pub struct DomainBinding {
    own: Vec<TrustAnchor<'static>>,
    partners: HashMap<String, Vec<TrustAnchor<'static>>>,
    all: Vec<CertificateDer<'static>>,
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

/// The trust domain of the leaf's first `spiffe://` URI SAN, lowercased.
fn trust_domain_of(end_entity: &CertificateDer<'_>) -> Option<String> {
    let (_, leaf) = X509Certificate::from_der(end_entity).ok()?;
    let san = leaf.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => u
            .strip_prefix("spiffe://")
            .map(|rest| rest.split('/').next().unwrap_or("").to_ascii_lowercase()),
        _ => None,
    })
}

impl DomainBinding {
    /// Our roots, and each partner trust domain's (an empty list: that
    /// domain's peers are refused).
    pub fn new(
        own: &[CertificateDer<'static>],
        partners: &[(TrustDomain, Vec<CertificateDer<'static>>)],
    ) -> Self {
        let mut map: HashMap<String, Vec<TrustAnchor<'static>>> = HashMap::new();
        let mut all = own.to_vec();
        for (td, roots) in partners {
            map.entry(td.as_str().to_ascii_lowercase())
                .or_default()
                .extend(anchors(roots));
            all.extend(roots.iter().cloned());
        }
        DomainBinding {
            own: anchors(own),
            partners: map,
            all,
        }
    }

    /// Every root (ours and the partners'), for the path check that runs
    /// before this binding.
    pub fn all_roots(&self) -> &[CertificateDer<'static>] {
        &self.all
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), rustls::Error> {
        let unknown = || rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let domain = trust_domain_of(end_entity);
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
            usage,
            None,
            None,
        )
        .map(|_| ())
        .map_err(|_| unknown())
    }
}

impl ClientCheck for DomainBinding {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
    }
}

impl ServerCheck for DomainBinding {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, SystemTime};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose, SanType,
    };
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::{Rotator, Svid};

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

    /// A leaf for `id` (and 127.0.0.1), both TLS purposes.
    fn leaf(
        issuer: &CertifiedIssuer<'static, KeyPair>,
        id: &str,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![
            SanType::URI(id.try_into().unwrap()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap().der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert, key)
    }

    fn plain_server(
        (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
        client_roots: Option<&CertifiedIssuer<'static, KeyPair>>,
    ) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(ward_tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap();
        let config = match client_roots {
            None => builder.with_no_client_auth(),
            Some(r) => {
                let mut roots = RootCertStore::empty();
                roots.add(r.der().clone()).unwrap();
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    ward_tls::provider(),
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(v)
            }
        };
        Arc::new(config.with_single_cert(vec![cert], key).unwrap())
    }

    fn plain_client(
        server_root: &CertifiedIssuer<'static, KeyPair>,
        identity: (CertificateDer<'static>, PrivateKeyDer<'static>),
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(server_root.der().clone()).unwrap();
        Arc::new(
            ClientConfig::builder_with_provider(ward_tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![identity.0], identity.1)
                .unwrap(),
        )
    }

    /// One TLS handshake over loopback: (client result, server result).
    async fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> (bool, bool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = TlsAcceptor::from(server).accept(tcp).await.ok()?;
            let mut byte = [0_u8; 1];
            tls.read_exact(&mut byte).await.ok()?;
            tls.write_all(&byte).await.ok()?;
            Some(())
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let client_ok = match TlsConnector::from(client).connect(name, tcp).await {
            Ok(mut tls) => {
                let mut byte = [7_u8; 1];
                tls.write_all(&byte).await.is_ok() && tls.read_exact(&mut byte).await.is_ok()
            }
            Err(_) => false,
        };
        let server_ok = tokio::time::timeout(Duration::from_secs(10), accept)
            .await
            .unwrap()
            .unwrap()
            .is_some();
        (client_ok, server_ok)
    }

    /// Serves `body` as the bundle endpoint at https://127.0.0.1:PORT/bundle.
    async fn bundle_endpoint(
        issuer: &CertifiedIssuer<'static, KeyPair>,
        body: String,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let config = plain_server(leaf(issuer, "spiffe://partner.example/bundle"), None);
        crate::federation::tests::serve_bundle(Arc::new(std::sync::Mutex::new((
            config,
            body.into_bytes(),
        ))))
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partner_peers_verify_against_their_own_roots_only() {
        let (ours, partner) = (root("Ours"), root("Partner"));
        // Our identity, as a Rotator that does not renew.
        let (cert, key) = leaf(&ours, "spiffe://example.org/app");
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            unreachable!()
        };
        let svid = Svid::new(
            vec![cert],
            zeroize::Zeroizing::new(pkcs8.secret_pkcs8_der().to_vec()),
            vec![ours.der().clone()],
            SystemTime::now(),
        )
        .unwrap();
        let rotator = Rotator::spawn(svid, None, |p| async move {
            std::future::pending::<()>().await;
            drop(p);
        });

        // The partner's bundle endpoint, trusted through ca_bundle.
        let set = JwkSet {
            keys: vec![ward_pki::jwt::x509_jwk(partner.der()).unwrap()],
            spiffe_sequence: Some(1),
            spiffe_refresh_hint: Some(60),
        };
        let (url, server) =
            bundle_endpoint(&partner, String::from_utf8(set.to_json()).unwrap()).await;
        let dir = tempfile::tempdir().unwrap();
        let ca_bundle = dir.path().join("partner.pem");
        std::fs::write(&ca_bundle, partner.pem()).unwrap();
        let td: TrustDomain = "partner.example".parse().unwrap();
        let endpoint = Endpoint::web(td.clone(), url, Some(ca_bundle));
        assert!(
            Federation::follow(vec![endpoint.clone(), endpoint.clone()], Refresh::default())
                .is_err(),
            "a trust domain federated twice is a configuration error"
        );
        let mut federation = Federation::follow(vec![endpoint], Refresh::default()).unwrap();
        // A partner whose bundle has not arrived admits nobody.
        let pending = DomainBinding::new(&[ours.der().clone()], &[(td.clone(), Vec::new())]);
        let (p_leaf, _) = leaf(&partner, "spiffe://partner.example/api");
        assert!(ClientCheck::check(&pending, &p_leaf, &[], UnixTime::now()).is_err());
        tokio::time::timeout(Duration::from_secs(20), federation.changed())
            .await
            .expect("the partner bundle arrives");
        let roots = federation.roots();
        assert_eq!(roots, vec![(td, vec![partner.der().clone()])]);

        // As a client: a partner server is verified against the partner's
        // roots; plain client_config (no federation) refuses it; a partner
        // root vouching for our trust domain is refused.
        let fed_client = rotator.client_config_federated(&federation).unwrap();
        let partner_server = plain_server(leaf(&partner, "spiffe://partner.example/api"), None);
        assert!(
            handshake(fed_client.clone(), partner_server.clone())
                .await
                .0
        );
        let own_client = rotator.client_config().unwrap();
        assert!(!handshake(own_client, partner_server).await.0);
        let impostor = plain_server(leaf(&partner, "spiffe://example.org/app"), None);
        assert!(!handshake(fed_client.clone(), impostor).await.0);
        let own_server = plain_server(leaf(&ours, "spiffe://example.org/db"), None);
        assert!(handshake(fed_client.clone(), own_server).await.0);
        let stray = plain_server(leaf(&partner, "spiffe://third.example/x"), None);
        assert!(!handshake(fed_client, stray).await.0);

        // As a server: partner clients pass, a partner-signed ID of our
        // domain does not, our own clients still do.
        let fed_server = rotator.server_config_federated(&federation).unwrap();
        let partner_client = plain_client(&ours, leaf(&partner, "spiffe://partner.example/c"));
        assert!(
            handshake(partner_client.clone(), fed_server.clone())
                .await
                .1
        );
        assert!(
            !handshake(partner_client, rotator.server_config().unwrap())
                .await
                .1
        );
        let impostor = plain_client(&ours, leaf(&partner, "spiffe://example.org/c"));
        assert!(!handshake(impostor, fed_server.clone()).await.1);
        let own_client = plain_client(&ours, leaf(&ours, "spiffe://example.org/c"));
        assert!(handshake(own_client, fed_server).await.1);
        server.abort();
        // The control: a plain server requiring our roots refuses the
        // partner client that the federated server accepted.
        let strict = plain_server(leaf(&ours, "spiffe://example.org/s"), Some(&ours));
        let partner_client = plain_client(&ours, leaf(&partner, "spiffe://partner.example/c"));
        assert!(!handshake(partner_client, strict).await.1);
    }
}
